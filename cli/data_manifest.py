"""``hipnet-data manifest check`` and what the dataset commands share: opening a reader by dataset name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from hipnet.pipeline.readers.base import Reader

DATASET_HELP = ("anny, generic (folders that carry their own split), or a manifest: amass_transitions, amass_cmu, "
                 "dfaust, dfaust_snarf, dfaust_poseprior, cape (data_manifests/), or a manifest YAML path.")
BODY_MODELS_HELP = ("Folder with your SMPL/SMPL+H/SMPL-X model files (AMASS smplh/<gender>/model.npz, smplx-style "
                     "smplh/SMPLH_MALE.pkl, SMPL basicModel_*_v1.0.0.pkl, ...); needed by AMASS, DFAUST and CAPE.")


# What checking raw files may raise (numpy, h5py, trimesh, zipfile on damaged input); reported, never a traceback.
CHECK_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, ArithmeticError, RuntimeError)


def open_dataset(dataset: str, root: Path, splits: tuple[str, ...], body_models: Path | None = None,
                 strict: bool = True) -> Reader:
    from hipnet.pipeline.readers import open_reader

    try:
        return open_reader(dataset, root, splits, body_models=body_models, strict=strict)
    except FileNotFoundError as e:
        if "no manifest" in str(e):
            raise click.BadParameter(f"unknown dataset {dataset!r}: {DATASET_HELP}") from None
        raise


@click.group("manifest")
def manifest_group() -> None:
    """Dataset manifests (data_manifests/*.yaml): subjects, sequences, splits, selection rules, expected counts."""


@manifest_group.command("check")
@click.option("--dataset", required=True, help=DATASET_HELP)
@click.option("--root", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="The raw dataset folder.")
@click.option("--body-models", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help=BODY_MODELS_HELP + " Checked when given.")
@click.option("--no-read", is_flag=True, help="Only look for the files; do not open them to find corrupt ones.")
def manifest_check_cmd(dataset, root, body_models, no_read) -> None:
    """Before a long run: list the files the manifest needs that are missing, files present that it does not use,
    and files that cannot be read, and compare the counts with the manifest's expected ones. Exit code 1 when
    anything is missing or unreadable or a count differs."""
    from hipnet.pipeline.readers.base import CheckReport

    reader = open_dataset(dataset, root, ("train", "test", "heldout"), body_models, strict=False)
    try:
        rep = reader.check(read_files=not no_read)
    except CHECK_ERRORS as e:  # a check must report, never stop: what it could not look at is a finding
        rep = CheckReport(corrupt=[f"check stopped: {type(e).__name__}: {e}"])
    info = reader.info
    if reader.needs_body_models and body_models is not None:
        for name in info.subjects:
            try:
                reader.subject(name)
            except CHECK_ERRORS as e:
                rep.missing.append(f"subject {name}: {e}")
    elif reader.needs_body_models:
        rep.notes.append("body models not checked (pass --body-models DIR)")
    rep.notes += [d for d in reader.dropped if d not in rep.notes]
    n_frames = None
    try:
        listing = reader.list_frames()
        n_frames = len(listing.refs)
        known = rep.corrupt + rep.missing
        rep.corrupt += [str(f) for f in listing.failures
                        if not any(f.reason.split(" (run")[0] in item for item in known)]
    except CHECK_ERRORS as e:
        rep.corrupt.append(str(e))
    if not info.sequences:
        rep.missing.append(f"{root}: no sequences selected: {reader.why_empty('train').split('; ', 1)[-1]}"
                           if reader.dropped else f"{root}: no sequences selected")
    click.echo(f"{dataset} in {root}: {len(info.sequences)} sequences"
               + (f", {n_frames} frames selected" if n_frames is not None else ""))
    for kind, items in (("missing", rep.missing), ("corrupt", rep.corrupt), ("extra", rep.extra),
                        ("counts", rep.counts), ("notes", rep.notes)):
        if items:
            click.echo(f"{kind}: {len(items)}", err=kind != "notes")
            for item in items[:50]:
                click.echo(f"  {item}", err=kind != "notes")
            if len(items) > 50:
                click.echo(f"  ... and {len(items) - 50} more", err=kind != "notes")
    if not rep.ok:
        raise click.ClickException("the raw data does not match the manifest (listed above)")
    click.echo("ok")
