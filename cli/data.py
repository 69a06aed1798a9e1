"""``hipnet-data``: build and look at datasets (the offline half of the toolkit)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hipnet.cli.data_anny import anny_cmd, preview_cmd
from hipnet.cli.data_manifest import BODY_MODELS_HELP, DATASET_HELP, manifest_group, open_dataset
from hipnet.cli.families import families_cmd
from hipnet.cli.params import OUTPUT, STORE, config_options, pick
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.stages.depth import DepthSensor

POINTS = {"surface_points": "--points"}  # PreprocessConfig's fields whose option has another name

if TYPE_CHECKING:
    from hipnet.pipeline.readers.base import Reader


class _Group(click.Group):
    """Bad input (a missing file, a wrong shape, a refused overwrite) ends with one clear line and exit code 1,
    not a traceback; the message names the file and the problem."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ValueError, OSError) as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Datasets for HIPNet: generate the embedded Anny data, and (later stages) preprocess raw datasets into
    sharded Zarr stores of oriented surface points, joint transforms and geodesic joint labels."""


# ------------------------------------------------------------------------------------------------ stores

_SPLITS_HELP = "Comma-separated splits to process (default: every split the dataset has)."


def _run_with_progress(fn, desc: str, **kwargs):
    """Run a shard runner with a tqdm bar over shards; a dead worker, another run writing to the same folder and a
    full disk each become one clear line."""
    import errno
    from concurrent.futures import BrokenExecutor

    from tqdm import tqdm

    from hipnet.pipeline.store.lock import LockedError
    from hipnet.pipeline.store.zarrstore import StoreWriteError

    bars = []

    def start(n):
        bars.append(tqdm(total=n, desc=desc, unit="shard"))

    try:
        return fn(progress=lambda k: bars[0].update(k), on_start=start, **kwargs)
    except BrokenExecutor as e:
        raise click.ClickException(
            f"a worker process died ({e}); finished shards are kept: rerun the same command to resume"
        ) from e
    except (LockedError, StoreWriteError) as e:  # another run writes there; a shard could not be written
        raise click.ClickException(str(e)) from None
    except OSError as e:  # the disk filled (or a folder went away) outside a shard write: stores, attributes
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        raise click.ClickException(f"{e.filename or kwargs.get('out') or kwargs.get('path')}: {e.strerror}; "
                                   "the shards finished before are kept: fix that and rerun the same command") from None
    finally:
        for bar in bars:
            bar.close()


def _report(summary) -> bool:
    """The run's summary line, its notes, and what failed or was left out: each bad file once, then one line."""
    from hipnet.pipeline.runner.failures import summary_lines

    click.echo(str(summary))
    for note in summary.notes:
        click.echo(f"  {note}", err=True)
    for line in summary_lines(summary.failures, "failed", summary.report):
        click.echo(line, err=True)
    if not summary.failures:
        for line in summary_lines(summary.left_out, "excluded", summary.report):
            click.echo(line, err=True)
    return not summary.failures and summary.complete


def _warn_counts(reader: Reader, root: Path) -> None:
    """A warning naming the manifest when the raw data holds other counts than the manifest expects."""
    mismatches = [m for _, m in reader.count_mismatches()]
    if mismatches:
        click.echo(f"warning: manifest {reader.name}: {root} does not hold the expected counts: "
                   + "; ".join(mismatches) + " (`hipnet-data manifest check` lists what is missing or extra)", err=True)


@main.command("preprocess")
@click.option("--dataset", required=True, help=DATASET_HELP)
@click.option("--root", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="The raw dataset folder.")
@click.option("--body-models", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help=BODY_MODELS_HELP)
@click.option("--out", type=OUTPUT, required=True,
              help="Folder for the stores (<split>.zarr): a path, or a URL on object storage (s3://bucket/prefix).")
@click.option("--splits", default=None, help=_SPLITS_HELP)
@config_options(PreprocessConfig, flags=POINTS)
@click.option("--workers", default=2, show_default=True, help="Local worker processes (1: run in this process).")
@click.option("--scheduler", default=None, help="Address of a dask.distributed scheduler (tcp://host:port) to use "
                                                "instead of local processes.")
@click.option("--exclude-failed", is_flag=True,
              help="Finish the stores without what fails (frames, and sequences whose files cannot be listed): each "
                   "is recorded with its reason in the store's `excluded` attribute; finished frames are kept.")
def preprocess_cmd(dataset, root, body_models, out, splits, workers, scheduler, exclude_failed, **options) -> None:
    """Turn a raw dataset into one sharded Zarr store per split: canonical-frame joint transforms, oriented surface
    points with geodesic joint labels, and (for evaluation splits) evaluation points with occupancy and meshes.

    Resumable: rerunning the same command skips finished shards and gives the same bytes as an uninterrupted run.
    Frames that cannot be read or give non-finite values, and sequences whose files cannot be listed, are listed
    with their file, frame and reason; the run finishes the others, the store is not marked complete and the exit
    code is 1. Rerun after fixing the files, or with --exclude-failed to finish without them.
    """
    from hipnet.pipeline.sources.manifest import SPLITS

    cfg = _config(PreprocessConfig, options, flags=POINTS)
    chosen = tuple(splits.split(",")) if splits else SPLITS
    with _writing(out):
        ok, attempted, empty, t0 = _preprocess_splits(dataset, root, body_models, out, splits, chosen, cfg, workers,
                                                      scheduler, exclude_failed)
    click.echo(f"done in {time.time() - t0:.0f} s")
    if not attempted:
        raise click.ClickException(f"{dataset} in {root}: nothing to do, no split has frames: " + " | ".join(empty))
    if not ok:
        raise click.ClickException(
            "some frames or sequences failed (listed above); the stores are kept and resumable: fix the files and "
            "rerun the same command, or add --exclude-failed to finish without them (recorded in each store's "
            "`excluded` attribute)"
        )


@contextlib.contextmanager
def _writing(out: Path):
    """Hold ``out``'s writer lock for a whole command (every split), refusing in one line when another run does."""
    from hipnet.pipeline.store.lock import LockedError, writer_lock

    try:
        with writer_lock(out):
            yield
    except LockedError as e:
        raise click.ClickException(str(e)) from None


def _preprocess_splits(dataset, root, body_models, out, splits, chosen, cfg, workers, scheduler, exclude_failed):
    """Each chosen split into its store; (all complete, splits attempted, why the others were empty, start)."""
    from hipnet.pipeline.runner.driver import preprocess_split

    ok, attempted, empty = True, 0, []
    t0 = time.time()
    for k, split in enumerate(chosen):
        reader = open_dataset(dataset, root, (split,), body_models)
        if k == 0:
            _warn_counts(reader, root)
        excluded = reader.excluded_refs()
        if excluded:
            click.echo(f"{split}: {len(excluded)} frames left out as the manifest lists them unreadable:", err=True)
            for path in excluded:
                click.echo(f"  excluded: {path}", err=True)
        if not reader.sequences():
            empty.append(f"{split}: {reader.why_empty(split)}")
            if splits:
                raise click.ClickException(f"{root}: split {split!r} has nothing to do: {reader.why_empty(split)}")
            continue
        attempted += 1
        summary = _run_with_progress(preprocess_split, f"{split} shards", reader=reader, out=out, cfg=cfg,
                                     split=split, workers=workers, scheduler=scheduler, exclude_failed=exclude_failed)
        ok &= _report(summary)
    return ok, attempted, empty, t0


def _config(cls, options: dict, prefix: str = "", flags: dict[str, str] | None = None):
    """``cls`` from a command's parameters (``params.pick``); a value it refuses is a usage error naming the
    option (``flags``: the options not named ``--field-name``)."""
    import re
    from dataclasses import fields

    try:
        return cls(**pick(cls, options, prefix))
    except ValueError as e:
        text = str(e)
        for f in fields(cls):
            text = re.sub(rf"\b{f.name}\b", (flags or {}).get(f.name) or "--" + f.name.replace("_", "-"), text)
        raise click.UsageError(text) from None


@main.command("depth")
@click.option("--store", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A finished store holding meshes (an evaluation split, or one written with --eval-on-train).")
@click.option("--dataset", default=None, help="Instead of --store: " + DATASET_HELP)
@click.option("--root", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="With --dataset: the raw dataset folder.")
@click.option("--body-models", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help=BODY_MODELS_HELP)
@click.option("--splits", default="train", show_default=True, help="With --dataset: comma-separated splits.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the stores (<split>.zarr).")
@click.option("--front-only", is_flag=True, help="One camera, in front of the body (the same as --views 1).")
@config_options(DepthSensor, flags={"seed": "--sensor-seed"}, prefix="sensor_",
                with_defaults=False)
@config_options(PreprocessConfig, ("surface_points", "shard_frames", "seed"), flags=POINTS)
@click.option("--workers", default=2, show_default=True, help="Local worker processes (1: run in this process).")
@click.option("--scheduler", default=None, help="dask.distributed scheduler address (tcp://host:port).")
@click.option("--exclude-failed", is_flag=True, help="Finish the stores without the frames that fail (recorded in "
                                                     "their `excluded` attribute).")
def depth_cmd(store, dataset, root, body_models, splits, out, front_only, workers, scheduler, exclude_failed,
              **options) -> None:
    """Training stores from simulated depth sensors: render each mesh frame with K virtual depth cameras (open3d
    ray casting; the sensor model of pipeline/stages/depth.py: depth-dependent noise, dropouts at grazing angles
    and depth discontinuities, quantisation), back-project to points with normals from the depth image, and label
    them by point-cloud heat geodesics. Evaluate models trained on these stores with the mesh evaluation stores of
    the same dataset (`hipnet-data preprocess`), which keep the full ground truth.

    Resumable like preprocess; a frame that fails is named with its file and reason, and the exit code is 1.
    """
    from hipnet.pipeline.runner.depthstores import build_depth_store

    if (store is None) == (dataset is None):
        raise click.UsageError("give either --store or --dataset with --root")
    if dataset is not None and root is None:
        raise click.UsageError("--dataset needs --root")
    chosen = pick(DepthSensor, options, "sensor_", given_only=True)
    if front_only:
        if chosen.get("views", 1) != 1:
            raise click.UsageError("--front-only is one view; drop --views")
        chosen["views"] = 1
    sensor = _config(DepthSensor, {f"sensor_{k}": v for k, v in chosen.items()}, "sensor_")
    cfg = _config(PreprocessConfig, options, flags=POINTS)
    sources = [store] if store is not None else [open_dataset(dataset, root, (split,), body_models)
                                                 for split in splits.split(",")]
    ok = True
    for source in sources:
        summary = _run_with_progress(build_depth_store, "depth shards", source=source, out=out, sensor=sensor,
                                     cfg=cfg, workers=workers, scheduler=scheduler, exclude_failed=exclude_failed)
        ok &= _report(summary)
    if not ok:
        raise click.ClickException("some frames failed (listed above); the stores are kept and resumable: fix the "
                                   "files and rerun the same command, or add --exclude-failed")


@main.command("geodesics")
@click.option("--store", "stores", type=STORE, required=True,
              multiple=True, help="Store(s) to relabel (repeat the option for several).")
@click.option("--mode", type=click.Choice(["per-frame", "per-template"]), default="per-frame", show_default=True)
@click.option("--root", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="The raw dataset, if it moved since the store was written (default: the path in the store).")
@click.option("--body-models", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help=BODY_MODELS_HELP)
@click.option("--workers", default=2, show_default=True)
@click.option("--scheduler", default=None, help="dask.distributed scheduler address (tcp://host:port).")
def geodesics_cmd(stores, mode, root, body_models, workers, scheduler) -> None:
    """(Re)compute the geodesic joint labels of existing stores in place (surface/labels and eval/near_labels).

    The surface samples are redrawn from each frame's seed and checked against the stored points, so labels always
    belong to the stored points. Resumable: an interrupted run continues where it stopped.
    """
    from hipnet.pipeline.runner.driver import relabel_store
    from hipnet.pipeline.store.zarrstore import open_group

    ok = True
    for path in stores:
        attrs = dict(open_group(path).attrs)
        source = attrs.get("source", {})
        reader = open_dataset(source.get("reader", attrs.get("dataset")), root or Path(source["root"]),
                              (attrs["split"],), body_models)
        summary = _run_with_progress(relabel_store, f"{path.name} shards", reader=reader, path=path, mode=mode,
                                     workers=workers, scheduler=scheduler)
        ok &= _report(summary)
    if not ok:
        raise click.ClickException("some frames failed (listed above); rerun to finish")


@main.command("validate")
@click.argument("stores", nargs=-1, required=True, type=STORE)
@click.option("--max-disagreement", default=0.05, show_default=True,
              help="Largest fraction of a frame's evaluation points where winding number and ray parity may differ.")
@click.option("--quick", is_flag=True,
              help="Read no array content: attrs, dtypes, shapes, done mask, and each shard file's presence and size "
                   "against the shard index (a shard rewritten to the same size passes; the full check hashes it).")
def validate_cmd(stores, max_disagreement, quick) -> None:
    """Check stores against the schema: arrays, dtypes, shapes, done mask, completion marker, every shard file
    against the store's shard index (present, size, content hash), NaN/inf, normal lengths, label range and
    occupancy cross-check statistics. Exit code 1 naming the array and frame (or shard and its frames) on a
    problem."""
    from tqdm import tqdm

    from hipnet.pipeline.store.schema import validate
    from hipnet.pipeline.store.validate import problem_lines
    from hipnet.pipeline.store.zarrstore import open_group

    bad = 0
    for path in stores:
        group = open_group(path)
        n = group["done"].shape[0] if "done" in group else 0
        with tqdm(total=n, desc=f"validate {path.name}", unit="frame", leave=False) as bar:
            rep = validate(group, progress=bar.update, max_disagreement=max_disagreement, quick=quick)
        for note in rep.notes:
            click.echo(f"{path}: {note}")
        for kind in ("uniform", "near"):
            st = rep.stats.get(f"{kind}_disagreement")
            if st:
                click.echo(f"{path}: {kind} occupancy cross-check: mean {st['mean']:.4%}, max {st['max']:.4%} of "
                           f"points disagree; {st['frames_with_any']} frames with any")
        if rep.ok:
            click.echo(f"{path}: ok ({rep.stats.get('frames', 0)} frames{', quick check' if quick else ''})")
        for line in problem_lines(rep.problems):
            click.echo(f"{path}: {line}", err=True)
        bad += not rep.ok
    if bad:
        raise click.ClickException(f"{bad} of {len(stores)} stores failed validation")


@main.command("inspect")
@click.argument("store", type=STORE)
@click.option("--frame", "frame", default=0, show_default=True, help="Frame for the picture.")
@click.option("--png", type=click.Path(path_type=Path), default=None,
              help="Write the frame's surface points coloured by geodesic joint label (front and back).")
def inspect_cmd(store, frame, png) -> None:
    """Summary of a store (frames, subjects, sequences, shards, arrays, bytes per frame) and a picture of a frame."""
    from hipnet.pipeline.store.reading import Store

    s = Store.open(store, allow_incomplete=True)
    a = s.attrs
    done = int(s.read("done").sum())
    size = s.bytes_on_disk()
    click.echo(f"{store}: dataset {a['dataset']}, split {a['split']}, schema {a['schema_version']}, "
               f"{'complete' if a.get('complete') else 'NOT complete'}")
    click.echo(f"  frames {s.n_frames} ({done} done) in {s.n_shards} shards of {s.shard_frames}; "
               f"{len(s.subjects)} subjects, {len(s.sequences)} sequences")
    click.echo(f"  {size / 1e6:.1f} MB on disk, {size / max(1, s.n_frames) / 1e3:.0f} KB per frame; "
               f"sections {', '.join(s.sections)}; geodesics {a['config']['geodesics']}")
    for name, arr in sorted(_arrays(s.group)):
        click.echo(f"  {name:28s} {str(arr.dtype):8s} {arr.shape}")
    if png is not None:
        if not 0 <= frame < s.n_frames:
            raise click.BadParameter(f"frame {frame} outside [0, {s.n_frames})", param_hint="--frame")
        from hipnet.viz.render import labelled_points_png

        jt = s.read("pose/joint_transforms", frame)
        png.parent.mkdir(parents=True, exist_ok=True)
        labelled_points_png(png, s.read("surface/points", frame), s.read("surface/labels", frame),
                            s.skeleton.names, joints=jt[:, :3, 3],
                            title=f"{s.frame_key(frame)}: geodesic joint labels ({a['config']['geodesics']})")
        click.echo(f"wrote {png}")


# ------------------------------------------------------------------------------------------------ raw datasets


@main.command("convert-body-model")
@click.argument("src", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(path_type=Path, dir_okay=False))
def convert_body_model_cmd(src: Path, dst: Path) -> None:
    """Write the arrays of a SMPL/SMPL+H/SMPL-X model file SRC (an official .pkl with chumpy objects, or an .npz)
    to a clean .npz DST, once. The .pkl is read by a restricted unpickler: chumpy arrays and scipy sparse matrices
    become numpy arrays, anything else in the file is refused; chumpy need not be installed."""
    from hipnet.pipeline.sources.bodymodels import BodyModel, convert_body_model

    if dst.suffix != ".npz":
        raise click.BadParameter("DST must end in .npz", param_hint="DST")
    shapes = convert_body_model(src, dst)
    kind = BodyModel.load(dst).kind
    click.echo(f"wrote {dst}: {kind} model, " + ", ".join(f"{k} {v}" for k, v in shapes.items()))


def _arrays(group, prefix=""):
    import zarr

    for name, item in group.members():
        if isinstance(item, zarr.Array):
            yield prefix + name, item
        else:
            yield from _arrays(item, prefix + name + "/")


main.add_command(anny_cmd)
main.add_command(preview_cmd)
main.add_command(manifest_group)
main.add_command(families_cmd)

if __name__ == "__main__":
    sys.exit(main())
