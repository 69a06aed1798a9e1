"""Manifest -> frames -> stages -> store, in parallel with dask (docs/architecture.md section 6).

The driver side: plan a split's store (``pipeline/runner/plan.py``: create it, or reconcile a rerun with what is
there), hand one task per shard (``pipeline/runner/tasks.py``: load the shard's frames, run the stages, write the shard
with one slice assignment per array) to worker processes, collect what they report, and finish the store. The
heavy libraries hold the GIL, so tasks run in processes: the dask ``processes`` scheduler locally, or a
``dask.distributed`` cluster given by its address. A frame that cannot be read or processed is reported with its
source file and reason; the other frames of its shard are written, the shard stays not-done, and the store is
never marked complete while a frame is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.core.location import as_path, is_url
from hipnet.pipeline.readers.base import Reader
from hipnet.pipeline.runner.failures import write_report
from hipnet.pipeline.runner.plan import (
    Plan,
    create_split_store,
    prepare_store,
    readable_subjects,
    sequence_of,
    swap_paths,
)
from hipnet.pipeline.runner.tasks import FrameFailure, ShardResult, preprocess_shard, relabel_shard
from hipnet.pipeline.store.integrity import damaged_shards, remove_partial_writes, store_root
from hipnet.pipeline.store.lock import writer_lock
from hipnet.pipeline.store.observations import observation_notes
from hipnet.pipeline.store.schema import (
    ATTR,
    DONE,
    GEODESICS_DONE,
    shard_slice,
)
from hipnet.pipeline.store.zarrstore import done_mask, frames_digest, mark_complete, mark_incomplete, open_group, shards_todo


@dataclass
class SplitSummary:
    store: Path
    frames: int
    shards: int
    written: int = 0
    skipped: int = 0  # frames already done before this run
    failures: list[FrameFailure] = field(default_factory=list)
    complete: bool = False
    notes: list[str] = field(default_factory=list)  # repairs, worth saying
    excluded: list[dict] = field(default_factory=list)  # the store's ``excluded`` attr after this run
    left_out: list[FrameFailure] = field(default_factory=list)  # what this run excluded (--exclude-failed)
    report: Path | None = None  # every failure (or exclusion) of this run, one per line (``pipeline.runner.failures``)

    def __str__(self) -> str:
        state = "complete" if self.complete else "NOT complete"
        excluded = f", excluded {len(self.excluded)}" if self.excluded else ""
        return (f"{self.store}: {self.frames} frames in {self.shards} shards; written {self.written}, "
                f"skipped as already done {self.skipped}, failed {len(self.failures)}{excluded}; {state}")


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

    # the schedulers as functions, not names: a name makes dask import dask.distributed (half a second) to look
    # for a running client
    with _Progress():
        if workers <= 1:
            import dask.local

            dask.compute(*tasks, scheduler=dask.local.get_sync)
        else:
            import dask.multiprocessing

            # chunksize 1: a shard is already a big task; dask's default batches 6 per round trip
            dask.compute(*tasks, scheduler=dask.multiprocessing.get, num_workers=workers, chunksize=1)


def _repair(group, summary: SplitSummary) -> None:
    """Before resuming: a shard whose file no longer matches its hash record is marked not done (and recomputed),
    and a store marked complete with frames not done is unmarked, so ``complete`` never covers a redo."""
    n, k = group[DONE].shape[0], int(group.attrs[ATTR.shard_frames])
    stray = remove_partial_writes(store_root(group))
    if stray:
        summary.notes.append(f"{store_root(group)}: removed {len(stray)} unfinished chunk write(s) of an interrupted run")
    for i, problem in damaged_shards(group).items():
        group[DONE][shard_slice(i, n, k)] = False
        summary.notes.append(f"{problem}: recomputing its frames")
    if group.attrs.get(ATTR.complete) and not done_mask(group).all():
        mark_incomplete(group)


def _run_plan(reader: Reader, plan: Plan, target: Path, donor: Path, donor_rows: np.ndarray,
              cfg: PreprocessConfig, workers: int, scheduler: str | None, progress, on_start) -> SplitSummary:
    from dask import delayed

    group = open_group(target, mode="r+")
    n, k = len(plan.refs), cfg.shard_frames
    summary = SplitSummary(target, n, -(-n // k))
    if target == donor:
        _repair(group, summary)
    todo = shards_todo(group)
    summary.skipped = n - sum(shard_slice(i, n, k).stop - i * k for i in todo)
    if on_start:
        on_start(len(todo))
    task = delayed(preprocess_shard, pure=False)

    def task_of(i: int):
        sl = shard_slice(i, n, k)
        unlistable = {row - sl.start: why for row, why in plan.unlistable.items() if sl.start <= row < sl.stop}
        return task(reader, str(target), i, plan.refs[sl], cfg, plan.sections, str(donor), donor_rows[sl], unlistable)

    def collect(result: ShardResult) -> None:
        summary.written += result.written
        summary.skipped += result.kept
        summary.failures += result.failures
        if progress:
            progress(1)

    run_tasks([task_of(i) for i in todo], workers, scheduler, collect)
    summary.failures += plan.failures
    return summary


def preprocess_split(reader: Reader, out: Path, cfg: PreprocessConfig, split: str, workers: int = 1,
                     scheduler: str | None = None, progress: Callable[[int], None] | None = None,
                     on_start: Callable[[int], None] | None = None, exclude_failed: bool = False) -> SplitSummary:
    """Preprocess the frames of ``reader`` (built for this one split) into ``out/<split>.zarr``.

    Every frame that can be done is done; what cannot (a frame that fails, a sequence that cannot be listed) is
    reported and the store is not complete. ``exclude_failed``: then leave those out, record them with their
    reasons in the store's ``excluded`` attr, rebuild the store without their rows (finished frames are copied,
    not recomputed) and mark it complete.

    The run holds ``out``'s writer lock (``pipeline.store.lock``): a second run on the same folder is refused. ``out`` may
    be a URL (``s3://bucket/prefix``): the store is then written in place on object storage (``pipeline.store.zarrstore``),
    where ``exclude_failed`` is refused (it swaps a rebuilt store in by renaming, which object storage lacks)."""
    out = as_path(out)
    if exclude_failed and is_url(out):
        raise ValueError(f"{out}: --exclude-failed rebuilds the store and renames it into place, which object "
                         "storage cannot do; run it with a local --out and upload the finished store")
    with writer_lock(out):
        return _preprocess_split(reader, out, cfg, split, workers, scheduler, progress, on_start, exclude_failed)


def _preprocess_split(reader: Reader, out: Path, cfg: PreprocessConfig, split: str, workers: int,
                      scheduler: str | None, progress, on_start, exclude_failed: bool) -> SplitSummary:
    plan = prepare_store(reader, out, cfg, split)
    if not plan.refs:
        summary = SplitSummary(plan.path, 0, 0, failures=plan.failures)
        summary.notes.append(f"{plan.path}: not written: no sequence of split {split!r} could be listed")
        summary.report = write_report(plan.path, summary.failures)
        return summary
    rows = np.arange(len(plan.refs))
    summary = _run_plan(reader, plan, plan.path, plan.path, rows, cfg, workers, scheduler, progress, on_start)
    summary.excluded = plan.excluded
    group = open_group(plan.path, mode="r+")
    if exclude_failed and (summary.failures or group.attrs.get(ATTR.unlisted)):
        result = _exclude(reader, plan, summary, cfg, split, workers, scheduler)
        result.report = write_report(plan.path, result.failures or result.left_out,
                                     "failed" if result.failures else "excluded")
        return result
    summary.complete = not summary.failures and mark_complete(group)
    summary.notes += observation_notes(group)
    summary.report = write_report(plan.path, summary.failures)
    return summary


def _exclude(reader: Reader, plan: Plan, summary: SplitSummary, cfg: PreprocessConfig, split: str, workers: int,
             scheduler: str | None) -> SplitSummary:
    """Leave out what failed: record it in ``excluded``, rebuild the store without its rows by copying the
    finished frames, swap the rebuilt store in, mark it complete."""
    group = open_group(plan.path, mode="r+")
    left_out = {f.key: f for f in summary.failures}
    for u in group.attrs.get(ATTR.unlisted, []):
        if u["key"] not in left_out:
            left_out[u["key"]] = FrameFailure(u["key"], "", u["reason"])
    rest, bad = readable_subjects(reader)
    for r in plan.refs:  # a subject unreadable now: its sequences go too, the store's subject table cannot hold it
        seq = sequence_of(r.key)
        if r.subject in bad and seq not in left_out:
            left_out[seq] = FrameFailure(seq, "", bad[r.subject])
    failed = {k: f.reason for k, f in left_out.items()}
    excluded = plan.excluded + [{"key": k, "reason": why} for k, why in failed.items()]
    keep = np.array([k for k, r in enumerate(plan.refs) if r.key not in failed and sequence_of(r.key) not in failed],
                    dtype=np.int64)
    notes = list(summary.notes)
    if not len(keep):
        raise ValueError(f"{plan.path}: every frame failed; nothing is left to finish the store with")
    if len(keep) == len(plan.refs):  # only sequences without rows: the frame list stays, the records change
        group.attrs[ATTR.excluded] = excluded
        if ATTR.unlisted in group.attrs:
            del group.attrs[ATTR.unlisted]
        result = SplitSummary(plan.path, len(keep), summary.shards, summary.written, summary.skipped,
                              notes=notes, excluded=excluded, left_out=list(left_out.values()))
        result.complete = mark_complete(group)
        return result
    new, _ = swap_paths(plan.path)
    if new.exists():
        shutil.rmtree(new)
    refs = [plan.refs[k] for k in keep]
    create_split_store(reader, new, refs, cfg, split, plan.sections, {ATTR.excluded: excluded}, rest)
    kept = Plan(new, refs, plan.sections)
    result = _run_plan(reader, kept, new, plan.path, keep, cfg, workers, scheduler, None, None)
    result.notes = notes
    result.excluded = excluded
    result.left_out = list(left_out.values())
    result.complete = not result.failures and mark_complete(open_group(new, mode="r+"))
    if result.complete:
        _, old = swap_paths(plan.path)
        plan.path.rename(old)
        new.rename(plan.path)
        shutil.rmtree(old)
        result.store = plan.path
    return result


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


def relabel_store(reader: Reader, path: Path, mode: str, workers: int = 1, scheduler: str | None = None,
                  progress: Callable[[int], None] | None = None,
                  on_start: Callable[[int], None] | None = None) -> SplitSummary:
    """Recompute the geodesic labels of an existing store in ``mode``, in place and resumably.

    While relabelling, the store is not complete and its ``relabel`` attr names the mode; a ``geodesics_done``
    mask records finished shards. At the end the config's mode is updated and the store marked complete again.
    The run holds the writer lock of the store's folder (``pipeline.store.lock``).
    """
    path = as_path(path)
    with writer_lock(path.parent):
        return _relabel_store(reader, path, mode, workers, scheduler, progress, on_start)


def _relabel_store(reader: Reader, path: Path, mode: str, workers: int, scheduler: str | None, progress,
                   on_start) -> SplitSummary:
    from dask import delayed

    group = open_group(path, mode="r+")
    remove_partial_writes(path)
    attrs = dict(group.attrs)
    if attrs.get(ATTR.depth_sensor):
        raise ValueError(f"{path}: a store of rendered depth frames is relabelled by building it again "
                         "(`hipnet-data depth` into a new --out)")
    if not np.asarray(group[DONE][:]).all():
        raise ValueError(f"{path}: frames are missing; finish `hipnet-data preprocess` first")
    gone = {e["key"] for e in attrs.get(ATTR.excluded, [])}
    cfg = replace(PreprocessConfig.from_attrs(attrs[ATTR.config]), geodesics=mode)
    refs = [r for r in cfg.select(reader.listed_refs()) if r.key not in gone and sequence_of(r.key) not in gone]
    if frames_digest([r.key for r in refs]) != attrs[ATTR.frames_sha]:
        raise ValueError(f"{path}: the frames of {reader.root} ({attrs[ATTR.split]}) are not the frames of this store")
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

