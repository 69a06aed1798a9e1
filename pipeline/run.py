"""Manifest -> frames -> stages -> store, in parallel with dask (DESIGN.md section 6).

One task is one whole shard: it loads the shard's frames through the reader, runs ``process_frame`` on each and
writes the shard with one slice assignment per array. The heavy libraries hold the GIL, so tasks run in processes:
the dask ``processes`` scheduler locally, or a ``dask.distributed`` cluster given by its address. A frame that cannot
be read or processed is reported with its source file and reason; the other frames of its shard are written, the
shard stays not-done, and the store is never marked complete while a frame is missing.
"""

from __future__ import annotations

import importlib.metadata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hipnet.pipeline.frames import FrameRef
from hipnet.pipeline.process import PreprocessConfig, SubjectGeometry, nearest_labels, process_frame, relabel_frame
from hipnet.pipeline.readers.base import Reader
from hipnet.pipeline.schema import ATTR, CONVENTIONS, DONE, GEODESICS_DONE, SPECS, Dims, shard_slice, specs_for
from hipnet.pipeline.store import (
    create_store,
    frames_digest,
    mark_complete,
    mark_incomplete,
    open_group,
    shards_todo,
    store_dims,
    write_shard,
)

PROVENANCE_PACKAGES = ("numpy", "scipy", "zarr", "numcodecs", "dask", "potpourri3d", "libigl", "open3d-cpu", "trimesh")

@dataclass
class FrameFailure:
    key: str
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key} ({self.source}): {self.reason}"


@dataclass
class ShardResult:
    shard: int
    written: int
    failures: list[FrameFailure] = field(default_factory=list)


@dataclass
class SplitSummary:
    store: Path
    frames: int
    shards: int
    written: int = 0
    skipped: int = 0  # frames already done before this run
    failures: list[FrameFailure] = field(default_factory=list)
    complete: bool = False

    def __str__(self) -> str:
        state = "complete" if self.complete else "NOT complete"
        return (f"{self.store}: {self.frames} frames in {self.shards} shards; written {self.written}, "
                f"skipped as already done {self.skipped}, failed {len(self.failures)}; {state}")


# ------------------------------------------------------------------------------------------------ worker side

_GEOMETRY: OrderedDict = OrderedDict()  # per worker process: (reader identity, subject, mode) -> SubjectGeometry
_GEOMETRY_CACHE_SIZE = 16


def subject_geometry(reader: Reader, subject: str, mode: str) -> SubjectGeometry:
    """The subject's geometry, built once per worker process for all the shard tasks of one reader."""
    key = (reader.cache_key, subject, mode)
    if key not in _GEOMETRY:
        _GEOMETRY[key] = SubjectGeometry.build(reader.subject(subject), mode, where=f"subject {subject}")
        while len(_GEOMETRY) > _GEOMETRY_CACHE_SIZE:
            _GEOMETRY.popitem(last=False)
    _GEOMETRY.move_to_end(key)
    return _GEOMETRY[key]


def _frames(reader: Reader, refs: Sequence[FrameRef], mode: str):
    """(ref, frame, geometry) or (ref, exception, None) for each ref, in order."""
    for ref, frame in reader.load(refs):
        if isinstance(frame, Exception):
            yield ref, frame, None
            continue
        try:
            yield ref, frame, subject_geometry(reader, ref.subject, mode)
        except (ValueError, OSError) as e:
            yield ref, e, None


def _each_frame(reader: Reader, refs: Sequence[FrameRef], mode: str, fn) -> tuple[np.ndarray, list[FrameFailure]]:
    """Call ``fn(k, frame, geometry)`` for each readable frame; a frame that cannot be read or processed becomes a
    FrameFailure naming its file and reason, and the others go on. Returns (done mask, failures).

    Results are placed by position, so each one's key is checked against ``refs[k]``: a reader that yields out of
    order or drops a ref stops the run with a RuntimeError naming the reader and both keys."""
    done = np.zeros(len(refs), dtype=bool)
    failures = []
    k = -1
    for k, (ref, frame, geom) in enumerate(_frames(reader, refs, mode)):
        if k >= len(refs) or ref.key != refs[k].key:
            raise RuntimeError(
                f"reader {type(reader).__name__} ({reader.dataset}) returned {ref.key!r} at position {k}, where "
                f"{refs[k].key if k < len(refs) else 'nothing'!r} was expected: a reader must yield one result per "
                "ref in the order given (pipeline/readers/base.py), or frames land in the wrong rows")
        if isinstance(frame, Exception):
            failures.append(FrameFailure(ref.key, ref.source, str(frame)))
            continue
        try:
            fn(k, frame, geom)
        except (ValueError, RuntimeError, OSError) as e:  # a bad mesh: report it, keep the other frames
            failures.append(FrameFailure(ref.key, ref.source, f"{type(e).__name__}: {e}"))
            continue
        done[k] = True
    if k + 1 != len(refs):
        raise RuntimeError(f"reader {type(reader).__name__} ({reader.dataset}) returned {k + 1} results for "
                           f"{len(refs)} refs; the first without one is {refs[k + 1].key!r} (a reader must yield one "
                           "result per ref, pipeline/readers/base.py)")
    return done, failures


def preprocess_shard(reader: Reader, store_path: str, shard: int, refs: Sequence[FrameRef], cfg: PreprocessConfig,
                     sections: tuple[str, ...]) -> ShardResult:
    """Compute and write one shard (runs in a worker process)."""
    group = open_group(Path(store_path), mode="r+")
    dims = store_dims(group)
    names = [s.name for s in specs_for(sections) if s.per_frame and not s.name.startswith("frame/") and s.name != "done"]
    blocks = {name: np.zeros((len(refs), *dims.shape(SPECS[name])[1:]), dtype=SPECS[name].dtype) for name in names}

    def store_frame(k, frame, geom):
        arrays = process_frame(frame, geom, cfg, sections, reader.dataset)
        for name in names:
            blocks[name][k] = arrays[name]

    done, failures = _each_frame(reader, refs, cfg.geodesics, store_frame)
    write_shard(group, shard, blocks, done)
    return ShardResult(shard, int(done.sum()), failures)


def relabel_shard(reader: Reader, store_path: str, shard: int, refs: Sequence[FrameRef],
                  cfg: PreprocessConfig) -> ShardResult:
    """Recompute ``surface/labels`` (and ``eval/near_labels``) of one shard in mode ``cfg.geodesics``."""
    group = open_group(Path(store_path), mode="r+")
    n = group[DONE].shape[0]
    sl = shard_slice(shard, n, int(group.attrs[ATTR.shard_frames]))
    points = np.asarray(group["surface/points"][sl])
    blocks = {"surface/labels": np.asarray(group["surface/labels"][sl])}
    has_eval = "eval" in group.attrs[ATTR.sections]
    if has_eval:
        near = np.asarray(group["eval/near_points"][sl])
        blocks["eval/near_labels"] = np.asarray(group["eval/near_labels"][sl])

    def relabel(k, frame, geom):
        labels = relabel_frame(frame, geom, cfg, reader.dataset, points[k])
        blocks["surface/labels"][k] = labels
        if has_eval:
            blocks["eval/near_labels"][k] = nearest_labels(points[k], labels, near[k])

    done, failures = _each_frame(reader, refs, cfg.geodesics, relabel)
    write_shard(group, shard, blocks, done, done_name=GEODESICS_DONE.name)
    return ShardResult(shard, int(done.sum()), failures)


# ------------------------------------------------------------------------------------------------ driver side


def run_tasks(tasks: list, workers: int, scheduler: str | None, on_result: Callable[[ShardResult], None]) -> None:
    """Run dask delayed tasks (one per shard) and call ``on_result`` as each finishes.

    ``scheduler``: None for local processes (``workers`` of them; 1 runs in this process), or a
    ``tcp://host:port`` address of a dask.distributed scheduler.
    """
    import dask

    if not tasks:
        return
    if scheduler:
        from dask.distributed import Client, as_completed

        with Client(scheduler) as client:
            for future in as_completed(client.compute(tasks)):
                on_result(future.result())
        return
    from dask.callbacks import Callback

    keys = {t.key for t in tasks}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, id):
            if key in keys:
                on_result(result)

    with _Progress():
        if workers <= 1:
            dask.compute(*tasks, scheduler="synchronous")
        else:
            # chunksize 1: a shard is already a big task; dask's default batches 6 per round trip
            dask.compute(*tasks, scheduler="processes", num_workers=workers, chunksize=1)


def versions() -> dict[str, str]:
    out = {}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def prepare_store(reader: Reader, out: Path, cfg: PreprocessConfig, split: str):
    """Create (or reopen) the store of one split; returns (group path, frame refs, sections)."""
    refs = reader.frame_refs()
    if not refs:
        raise ValueError(f"{reader.root}: no frames in split {split!r}")
    sections = cfg.sections(split)
    subjects = reader.subject_names()
    sequences = list(dict.fromkeys(r.sequence for r in refs))
    rest = {name: reader.subject(name) for name in subjects}
    first = rest[subjects[0]]
    faces = first.faces
    if "mesh" in sections:
        for s in rest.values():
            if s.faces is None or not np.array_equal(s.faces, faces):
                raise ValueError(f"{reader.root}: subject {s.name} has another mesh topology; a store holds one")
    n_vertices = len(first.rest_vertices) if first.rest_vertices is not None else 0
    dims = Dims(
        F=len(refs), S=cfg.surface_points, J=reader.skeleton.num_joints, P=len(subjects),
        U=cfg.eval_points, N=cfg.eval_points, V=n_vertices, Fc=0 if faces is None else len(faces),
    )
    subject_id, sequence_id = {n: i for i, n in enumerate(subjects)}, {n: i for i, n in enumerate(sequences)}
    ids = {
        "frame/subject": np.array([subject_id[r.subject] for r in refs]),
        "frame/sequence": np.array([sequence_id[r.sequence] for r in refs]),
        "frame/index": np.array([r.index for r in refs]),
    }
    attrs = {
        ATTR.dataset: reader.dataset,
        ATTR.split: split,
        ATTR.config: cfg.to_attrs(),
        ATTR.skeleton: reader.skeleton.to_attrs(),
        ATTR.subjects: subjects,
        ATTR.sequences: sequences,
        ATTR.frames_sha: frames_digest([r.key for r in refs]),
        ATTR.source: {"reader": reader.name, "root": str(Path(reader.root).resolve())},
        ATTR.manifest_hash: reader.info.manifest_hash,
        ATTR.versions: versions(),
        **CONVENTIONS,
    }
    path = Path(out) / f"{split}.zarr"
    create_store(path, dims=dims, sections=sections, shard_frames=cfg.shard_frames, attrs=attrs, ids=ids,
                 rest_joints=np.stack([rest[n].rest_joints for n in subjects]), faces=faces)
    return path, refs, sections


def _run_shards(path: Path, todo: list[int], n: int, k: int, task_of: Callable[[int, slice], object], workers: int,
                scheduler: str | None, progress, on_start) -> SplitSummary:
    """Run one task per shard in ``todo`` (``task_of(shard, frame slice)`` builds it) and sum up the results."""
    summary = SplitSummary(path, n, -(-n // k))
    summary.skipped = n - sum(shard_slice(i, n, k).stop - i * k for i in todo)
    if on_start:
        on_start(len(todo))

    def collect(result: ShardResult) -> None:
        summary.written += result.written
        summary.failures += result.failures
        if progress:
            progress(1)

    run_tasks([task_of(i, shard_slice(i, n, k)) for i in todo], workers, scheduler, collect)
    return summary


def preprocess_split(reader: Reader, out: Path, cfg: PreprocessConfig, split: str, workers: int = 1,
                     scheduler: str | None = None, progress: Callable[[int], None] | None = None,
                     on_start: Callable[[int], None] | None = None) -> SplitSummary:
    """Preprocess the frames of ``reader`` (built for this one split) into ``out/<split>.zarr``."""
    from dask import delayed

    path, refs, sections = prepare_store(reader, out, cfg, split)
    group = open_group(path, mode="r+")
    task = delayed(preprocess_shard, pure=False)
    summary = _run_shards(path, shards_todo(group), len(refs), cfg.shard_frames,
                          lambda i, sl: task(reader, str(path), i, refs[sl], cfg, sections), workers, scheduler,
                          progress, on_start)
    summary.complete = mark_complete(group)
    return summary


def relabel_store(reader: Reader, path: Path, mode: str, workers: int = 1, scheduler: str | None = None,
                  progress: Callable[[int], None] | None = None,
                  on_start: Callable[[int], None] | None = None) -> SplitSummary:
    """Recompute the geodesic labels of an existing store in ``mode``, in place and resumably.

    While relabelling, the store is not complete and its ``relabel`` attr names the mode; a ``geodesics_done``
    mask records finished shards. At the end the config's mode is updated and the store marked complete again.
    """
    from dask import delayed

    group = open_group(path, mode="r+")
    attrs = dict(group.attrs)
    if not np.asarray(group[DONE][:]).all():
        raise ValueError(f"{path}: frames are missing; finish `hipnet-data preprocess` first")
    refs = reader.frame_refs()
    if frames_digest([r.key for r in refs]) != attrs[ATTR.frames_sha]:
        raise ValueError(f"{path}: the frames of {reader.root} ({attrs[ATTR.split]}) are not the frames of this store")
    cfg = replace(PreprocessConfig.from_attrs(attrs[ATTR.config]), geodesics=mode)
    n, k = len(refs), cfg.shard_frames
    if attrs.get(ATTR.relabel) != mode or GEODESICS_DONE.name not in group:
        mark_incomplete(group)
        group.create_array(GEODESICS_DONE.name, shape=(n,), dtype=GEODESICS_DONE.dtype, chunks=(1,),
                           shards=(min(k, n),), fill_value=False, overwrite=True)
        group.attrs[ATTR.relabel] = mode
    task = delayed(relabel_shard, pure=False)
    summary = _run_shards(path, shards_todo(group, GEODESICS_DONE.name), n, k,
                          lambda i, sl: task(reader, str(path), i, refs[sl], cfg), workers, scheduler, progress,
                          on_start)
    if np.asarray(group[GEODESICS_DONE.name][:]).all():
        group.attrs[ATTR.config] = cfg.to_attrs()
        del group.attrs[ATTR.relabel]
        del group[GEODESICS_DONE.name]
        summary.complete = mark_complete(group)
    return summary

