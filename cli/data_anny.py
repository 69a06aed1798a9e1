"""``hipnet-data anny`` and ``hipnet-data preview``: generate the embedded Anny dataset and look at it."""

from __future__ import annotations

import time
from pathlib import Path

import click

from hipnet.pipeline.embedded.body import TOPOLOGIES


@click.command("anny")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Folder to write the raw dataset to.")
@click.option(
    "--manifest",
    default="anny",
    show_default=True,
    help="Manifest name in data_manifests/ or a YAML path: subjects, phenotypes, sequences and the split.",
)
@click.option(
    "--topology",
    type=click.Choice(sorted(TOPOLOGIES)),
    default=None,
    help="Override the manifest's mesh: 'full' (closed 13k-vertex body) or a low-poly retopology for fast tests.",
)
@click.option("--motions", type=click.Choice(["procedural", "deepmimic"]), default="procedural", show_default=True,
              help="procedural: random key poses within joint limits (redistributable). deepmimic: the 15 mocap "
                   "clips of the pybullet 3.2.7 wheel, research use only.")
@click.option("--families", "with_families", is_flag=True,
              help="Add to every subject one sequence of each pose family (sit, squat, kneel, lie, bend, cross_arms, "
                   "touch; pipeline/embedded/families.py); the manifest's own sequences stay as they are.")
@click.option("--hold-out-family", default=None, help="With --families: the held-out motion-family experiment "
              "(train without this family; test: only this family; heldout: the other families' test sequences).")
@click.option("--add-deepmimic", "deepmimic_every", type=click.IntRange(min=1), default=None,
              help="Add to every subject the 15 DeepMimic clips, every Nth frame (8: 211 frames a subject), next to "
                   "the manifest's own sequences: procedural motions mixed with real motion capture (research use "
                   "only; bench/motion_mix.py measures what the mix buys).")
@click.option("--png", type=click.Path(path_type=Path), default=None, help="Also write a subjects x poses picture.")
def anny_cmd(out: Path, manifest: str, topology: str | None, motions: str, with_families: bool,
             hold_out_family: str | None, deepmimic_every: int | None, png: Path | None) -> None:
    """Generate the embedded dataset: many Anny subjects in many poses, one watertight mesh per frame, with the
    22 SMPL joint transforms, rest joints and skinning weights (Y up, metres). Deterministic; resumable (files
    already written are kept); the first run builds Anny's model cache (about a minute)."""
    from tqdm import tqdm

    from hipnet.pipeline.embedded.generate import generate_dataset
    from hipnet.pipeline.sources.manifest import load_manifest

    if hold_out_family is not None and not with_families:
        raise click.UsageError("--hold-out-family needs --families")
    if with_families and motions != "procedural":
        raise click.UsageError("--families adds procedural pose families; use it with --motions procedural")
    if deepmimic_every is not None and (motions != "procedural" or hold_out_family is not None):
        raise click.UsageError("--add-deepmimic mixes the clips into the procedural motions; it takes neither "
                               "--motions deepmimic nor --hold-out-family")
    m = load_manifest(manifest)
    source = None
    if motions == "deepmimic":
        from hipnet.pipeline.embedded.deepmimic import deepmimic_manifest, deepmimic_motion_source

        m = deepmimic_manifest(m)
        source = deepmimic_motion_source()
    if with_families:
        from hipnet.pipeline.embedded.generate import add_families
        from hipnet.pipeline.embedded.generate import hold_out_family as held_out

        m = add_families(m)
        m = m if hold_out_family is None else held_out(m, hold_out_family)
    if deepmimic_every is not None:
        from hipnet.pipeline.embedded.deepmimic import add_deepmimic, deepmimic_motion_source

        m = add_deepmimic(m, deepmimic_every)
        source = deepmimic_motion_source()
    t0 = time.time()
    click.echo(f"building Anny body ({topology or m['generator']['topology']}); first run caches it ...", err=True)
    with tqdm(total=len(m["sequences"]), desc="sequences", unit="seq") as bar:
        summary = generate_dataset(m, out, topology=topology, motion_source=source, progress=bar.update)
    click.echo(
        f"wrote {summary['frames']} frames of {len(summary['subjects'])} subjects "
        f"({summary['num_vertices']} vertices each) to {out} in {time.time() - t0:.0f} s"
    )
    if png is not None:
        _preview(out, png)


@click.command("preview")
@click.option("--root", type=click.Path(path_type=Path, exists=True), required=True, help="A generated Anny dataset.")
@click.option("--png", type=click.Path(path_type=Path), required=True, help="Picture to write.")
@click.option("--subjects", "n_subjects", default=6, show_default=True, help="Rows: subjects.")
@click.option("--poses", "n_poses", default=6, show_default=True, help="Columns: poses (one per sequence).")
def preview_cmd(root: Path, png: Path, n_subjects: int, n_poses: int) -> None:
    """A picture grid of subjects x poses of a generated Anny dataset, each body turned to face the viewer."""
    _preview(root, png, n_subjects, n_poses)


def _preview(root: Path, png: Path, n_subjects: int = 6, n_poses: int = 6) -> None:
    from hipnet.pipeline.readers.anny import AnnyReader
    from hipnet.viz.render import heading_free_view, mesh_grid_png

    reader = AnnyReader(root)
    info = reader.info
    names = list(info.subjects)
    # Spread the rows over the subject list so the extremes at its end show up too.
    picks = sorted({names[round(i * (len(names) - 1) / max(1, n_subjects - 1))] for i in range(n_subjects)},
                   key=names.index)
    rows = []
    for name in picks:
        subj = reader.subject(name)
        seqs = [s.name for s in info.sequences if s.subject == name][:n_poses]
        row = []
        for seq in seqs:
            data = reader.read_sequence(name, seq)
            t = len(data["vertices"]) // 2
            jt = data["joint_transforms"][t]
            v = heading_free_view(data["vertices"][t] - jt[0, :3, 3], jt[0, :3, :3])
            row.append((v, subj.faces))
        rows.append(row)
    png.parent.mkdir(parents=True, exist_ok=True)
    mesh_grid_png(png, rows, row_labels=picks, col_labels=[f"pose {i}" for i in range(n_poses)],
                  title=f"Anny dataset: {len(names)} subjects, {info.frames} frames")
    click.echo(f"wrote {png}")
