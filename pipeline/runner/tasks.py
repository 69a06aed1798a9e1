"""One shard task, run in a worker process (docs/architecture.md section 6): load the shard's frames through the reader, run
``process_frame`` (or ``relabel_frame``) on each and write the shard with one slice assignment per array. A frame
that cannot be read or processed becomes a ``FrameFailure`` naming its source file and reason; the other frames of
the shard are written and the shard stays not-done. ``pipeline/runner/driver.py`` plans the tasks and drives them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hipnet.pipeline.core.frames import FrameRef
from hipnet.pipeline.readers.base import Reader
from hipnet.pipeline.runner.frame import (
    ObservedGeometry,
    PreprocessConfig,
    SubjectGeometry,
    nearest_labels,
    process_frame,
    relabel_frame,
)
from hipnet.pipeline.store.reading import read_array
from hipnet.pipeline.store.schema import (
    ATTR,
    DONE,
    GEODESICS_DONE,
    SPECS,
    shard_slice,
    specs_for,
)
from hipnet.pipeline.store.zarrstore import open_group, store_dims, write_shard

# What a frame's stages may raise on bad geometry; it becomes that frame's failure and the other frames go on.
STAGE_ERRORS = (ValueError, RuntimeError, OSError, ArithmeticError, IndexError)
@dataclass
class FrameFailure:
    key: str
    source: str
    reason: str

    def __str__(self) -> str:
        if not self.source or self.source in self.reason:
            return f"{self.key}: {self.reason}"
        return f"{self.key} ({self.source}): {self.reason}"


@dataclass
class ShardResult:
    shard: int
    written: int
    failures: list[FrameFailure] = field(default_factory=list)
    kept: int = 0  # frames done before, copied unchanged


# ------------------------------------------------------------------------------------------------ worker side

_GEOMETRY: OrderedDict = OrderedDict()  # per worker process: (reader identity, subject, mode) -> SubjectGeometry
_GEOMETRY_CACHE_SIZE = 16


def subject_geometry(reader: Reader, subject: str, mode: str) -> SubjectGeometry | ObservedGeometry:
    """The subject's geometry, built once per worker process for all the shard tasks of one reader; for a subject
    without a rest mesh (its frames are observations), what the point-cloud path needs."""
    key = (reader.cache_key, subject, mode)
    if key not in _GEOMETRY:
        where = f"subject {subject}"
        subj = reader.subject(subject)
        _GEOMETRY[key] = (ObservedGeometry.build(reader.skeleton.parents, mode, where) if subj.rest_vertices is None
                          else SubjectGeometry.build(subj, mode, where))
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
        except STAGE_ERRORS as e:
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
        except STAGE_ERRORS as e:  # a bad mesh or a non-finite result: report it, keep the other frames
            failures.append(FrameFailure(ref.key, ref.source, f"{type(e).__name__}: {e}"))
            continue
        done[k] = True
    if k + 1 != len(refs):
        raise RuntimeError(f"reader {type(reader).__name__} ({reader.dataset}) returned {k + 1} results for "
                           f"{len(refs)} refs; the first without one is {refs[k + 1].key!r} (a reader must yield one "
                           "result per ref, pipeline/readers/base.py)")
    return done, failures


def preprocess_shard(reader: Reader, store_path: str, shard: int, refs: Sequence[FrameRef], cfg: PreprocessConfig,
                     sections: tuple[str, ...], donor: str | None = None, donor_rows: np.ndarray | None = None,
                     unlistable: dict[int, str] | None = None) -> ShardResult:
    """Compute and write one shard (runs in a worker process).

    Frames already finished are kept, never recomputed or lost: row ``k`` is copied from row ``donor_rows[k]`` of
    the store ``donor`` (default: this store and the shard's own rows; the old store on a rebuild) where that row is
    done. Rows in ``unlistable`` (their sequence cannot be listed now) fail with that reason; the others are
    computed."""
    group = open_group(store_path, mode="r+")
    if donor is None:
        donor = store_path
        start = shard * int(group.attrs[ATTR.shard_frames])
        donor_rows = np.arange(start, start + len(refs))
    unlistable = unlistable or {}
    dims = store_dims(group)
    names = [s.name for s in specs_for(sections) if s.per_frame and not s.name.startswith("frame/") and s.name != "done"]
    blocks = {name: np.zeros((len(refs), *dims.shape(SPECS[name])[1:]), dtype=SPECS[name].dtype) for name in names}
    source = group if donor == store_path else open_group(donor)
    rows = np.asarray(donor_rows, dtype=np.int64)
    have = rows >= 0
    done = np.zeros(len(refs), dtype=bool)
    if have.any():
        done[have] = np.asarray(source[DONE].oindex[rows[have]], dtype=bool)
    if done.any():
        for name in names:
            blocks[name][done] = source[name].oindex[rows[done]]
    failures = [FrameFailure(refs[k].key, refs[k].source, reason) for k, reason in unlistable.items() if not done[k]]
    todo = [k for k in range(len(refs)) if not done[k] and k not in unlistable]

    def store_frame(j, frame, geom):
        arrays = process_frame(frame, geom, cfg, sections, reader.dataset)
        for name in names:
            blocks[name][todo[j]] = arrays[name]

    computed, more = _each_frame(reader, [refs[k] for k in todo], cfg.geodesics, store_frame)
    done[np.asarray(todo, dtype=np.int64)] = computed
    write_shard(group, shard, blocks, done)
    return ShardResult(shard, int(computed.sum()), failures + more, int(done.sum() - computed.sum()))


def relabel_shard(reader: Reader, store_path: str, shard: int, refs: Sequence[FrameRef],
                  cfg: PreprocessConfig) -> ShardResult:
    """Recompute ``surface/labels`` (and ``eval/near_labels``) of one shard in mode ``cfg.geodesics``."""
    group = open_group(store_path, mode="r+")
    n = group[DONE].shape[0]
    sl = shard_slice(shard, n, int(group.attrs[ATTR.shard_frames]))
    points = read_array(group, "surface/points", sl)  # as a reader sees them (decoded, in a quantised store)
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


