"""``hipnet-data validate``: a store checked against the contract of ``pipeline.store.schema``, shard by shard.

Full validation reads every shard once: it hashes it against the store's shard index (``pipeline.store.integrity``) and
checks its values (NaN/inf, normal lengths, label and id ranges, the occupancy cross-check). ``quick`` reads no
array content: attributes, dtypes and shapes, the ``done`` mask, and every shard file's presence and size. A shard
rewritten with other values of the same compressed size therefore passes ``quick``; only the full check finds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hipnet.pipeline.store.integrity import FileProblem, check_files, content_problem, hashed_arrays, store_root
from hipnet.pipeline.store.schema import (
    ATTR,
    DONE,
    MAX_DISAGREEMENT,
    NORMAL_TOLERANCE,
    REQUIRED_ATTRS,
    SCHEMA_VERSION,
    SPECS,
    VERSION_HELP,
    array_problem,
    frames_text,
    n_shards,
    shard_key,
    shard_slice,
    specs_for,
)
from hipnet.pipeline.store.zarrstore import store_dims


@dataclass
class Problem:
    """One finding: an array, and a frame or a shard (with the frames it holds) where it is known."""

    array: str
    frame: int | None
    message: str
    shard: int | None = None
    frames: str = ""

    def __str__(self) -> str:
        if self.shard is not None:
            return f"{self.array} shard {self.shard} ({self.frames}) {self.message}"
        where = self.array if self.frame is None else f"{self.array} frame {self.frame}"
        return f"{where}: {self.message}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth saying, not a failure
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, array: str, frame: int | None, message: str) -> None:
        self.problems.append(Problem(array, frame, message))

    def add_file(self, p: FileProblem) -> None:
        self.problems.append(Problem(p.array, None, p.message + (f" ({p.file})" if p.file else ""), p.shard,
                                     p.frames))


_PER_SHARD = re.compile(r" \(\d+ frames in this shard\)$")


def problem_lines(problems: list[Problem], shown: int = 20) -> list[str]:
    """The problems as a person reads them: one line per array and kind of problem, the first place it was found,
    with how many more shards or frames have it (a store with NaN in every shard says so once, not per shard); at
    most ``shown`` lines, then how many kinds are left."""
    groups: dict[tuple[str, str], list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.array, _PER_SHARD.sub("", p.message)), []).append(p)
    lines = []
    for same in groups.values():
        more = len(same) - 1
        where = "shards" if same[0].shard is not None or _PER_SHARD.search(same[0].message) else "places"
        lines.append(str(same[0]) + (f" (and {more} more {where} like it)" if more else ""))
    if len(lines) > shown:
        lines = lines[:shown] + [f"... and {len(lines) - shown} more kinds of problem"]
    return lines


def validate_store(group, progress: Callable[[int], None] | None = None, max_disagreement: float = MAX_DISAGREEMENT,
                   quick: bool = False) -> Report:
    """Check an open store (a ``zarr.Group``) against the schema, shard by shard.

    Checks: schema version and required attrs; every array of the written sections present with the schema's dtype
    and the shape of the store's dims; the done mask and the completion marker; every shard file against the shard
    index (presence and size; unless ``quick``, the content hash); unless ``quick``, no NaN/inf, normal lengths,
    labels below the joint count, subject/sequence ids inside their tables and the occupancy cross-check
    disagreement rate. ``progress(k)`` is called with the number of frames checked after each shard.
    """
    rep = Report()
    attrs = dict(group.attrs)
    arrays = _structure(rep, group, attrs)
    if arrays is None:
        return rep
    n, shard_frames = arrays[DONE].shape[0], int(attrs[ATTR.shard_frames])
    done = _done_and_complete(rep, attrs, np.asarray(arrays[DONE][:]))
    index = attrs.get(ATTR.shard_index)
    damaged: set[tuple[str, int | None]] = set()
    if index is None and attrs.get(ATTR.complete):
        rep.add("attrs", None, "store is marked complete but has no shard index (damaged): rebuild it")
    if index is not None:
        per_shard, static = hashed_arrays(attrs[ATTR.sections])
        for p in check_files(store_root(group), index, per_shard + static, n, shard_frames):
            rep.add_file(p)
            damaged.add((p.array, p.shard))
    rep.stats["frames"] = n
    rep.stats["done"] = int(done.sum())
    if quick:
        if progress is not None:
            progress(n)
        return rep
    _static_arrays(rep, arrays, index, damaged, n, shard_frames)
    dis = _shards(rep, arrays, attrs, index, damaged, done, progress)
    _disagreement(rep, arrays, dis, done, max_disagreement)
    return rep


def _structure(rep: Report, group, attrs: dict) -> dict | None:
    """The arrays of the store's sections, or None (with the problems in ``rep``) when the version, the required
    attributes or an array's presence, dtype or shape is wrong: nothing further can be checked then."""
    version = attrs.get(ATTR.schema_version)
    if version != SCHEMA_VERSION:
        rep.add("attrs", None, f"schema_version is {version!r}, this code reads {SCHEMA_VERSION}: {VERSION_HELP}")
        return None
    for key in REQUIRED_ATTRS:
        if key not in attrs:
            rep.add("attrs", None, f"missing attribute {key!r}")
    if not rep.ok:
        return None
    arrays = {}
    for spec in specs_for(attrs[ATTR.sections]):
        try:
            arrays[spec.name] = group[spec.name]
        except KeyError:
            rep.add(spec.name, None, "missing")
    if not rep.ok:
        return None
    dims = store_dims(group)
    for name, arr in arrays.items():
        problem = array_problem(SPECS[name], arr.dtype, arr.shape, dims)
        if problem:
            rep.add(name, None, problem)
    return arrays if rep.ok else None


def _done_and_complete(rep: Report, attrs: dict, done: np.ndarray) -> np.ndarray:
    missing = np.flatnonzero(~done)
    if len(missing):
        rep.add(DONE, int(missing[0]), f"{len(missing)} of {len(done)} frames not done (first shown)")
    if attrs.get(ATTR.complete) and len(missing):
        rep.add("attrs", None, "store is marked complete but frames are missing")
    if not attrs.get(ATTR.complete):
        rep.add("attrs", None, "store is not marked complete (an interrupted or failed run: rerun the same command)")
    return done


def _static_arrays(rep: Report, arrays: dict, index, damaged: set, n: int, shard_frames: int) -> None:
    """The arrays written once at creation: their hashes, finite rest joints, face indices in range."""
    for name in ("subject/rest_joints", "mesh/faces"):
        if name in arrays and index is not None and (name, None) not in damaged:
            p = content_problem(index, name, 0, np.asarray(arrays[name][...]), n, shard_frames)
            if p:
                rep.add_file(p)
    _check_finite(rep, "subject/rest_joints", np.asarray(arrays["subject/rest_joints"][:]), 0)
    if "mesh/faces" in arrays:
        faces = np.asarray(arrays["mesh/faces"][:])
        n_vertices = arrays["mesh/vertices"].shape[1]
        if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
            rep.add("mesh/faces", None, f"indices outside [0, {n_vertices})")


def _shards(rep: Report, arrays: dict, attrs: dict, index, damaged: set, done: np.ndarray,
            progress: Callable[[int], None] | None) -> dict[str, list]:
    """Each shard of each per-frame array: its content hash and the values of its done frames. Returns the
    occupancy cross-check's per-frame disagreement counts, by kind."""
    n, shard_frames = len(done), int(attrs[ATTR.shard_frames])
    n_joints = len(attrs[ATTR.skeleton]["names"])
    dis: dict[str, list] = {"uniform": [], "near": []}
    for s in range(n_shards(n, shard_frames)):
        sl = shard_slice(s, n, shard_frames)
        ok = done[sl]
        for name, arr in arrays.items():
            if not SPECS[name].per_frame or (name, s) in damaged:
                continue
            try:
                whole = np.asarray(arr[sl])
            except (RuntimeError, ValueError) as e:  # a codec that cannot decode the shard's bytes
                rep.add_file(FileProblem(name, s, frames_text(s, n, shard_frames), f"does not decode ({e})",
                                         shard_key(SPECS[name], s)))
                continue
            p = content_problem(index, name, s, whole, n, shard_frames) if index is not None else None
            if p:
                rep.add_file(p)
            _check_values(rep, name, whole[ok], np.arange(sl.start, sl.stop)[ok], attrs, n_joints, dis)
        if progress is not None:
            progress(sl.stop - sl.start)
    return dis


def _disagreement(rep: Report, arrays: dict, dis: dict[str, list], done: np.ndarray, max_disagreement: float) -> None:
    """Statistics of the occupancy cross-check and the frame whose rate is over the limit."""
    for kind, blocks in dis.items():
        n_points = arrays[f"eval/{kind}_points"].shape[1] if f"eval/{kind}_points" in arrays else 0
        if not blocks or not n_points:
            continue
        counts = np.concatenate(blocks)
        if not len(counts):
            continue
        frac = counts / n_points
        rep.stats[f"{kind}_disagreement"] = {
            "mean": float(frac.mean()), "max": float(frac.max()), "frames_with_any": int(np.count_nonzero(counts))
        }
        worst = int(np.argmax(frac))
        if frac[worst] > max_disagreement:
            frame = int(np.flatnonzero(done)[worst])
            rep.add(f"eval/{kind}_disagreements", frame,
                    f"winding number and ray parity disagree on {frac[worst]:.2%} of points (limit {max_disagreement:.0%})")


def _check_values(rep: Report, name: str, block: np.ndarray, frames: np.ndarray, attrs: dict, n_joints: int,
                  dis: dict[str, list]) -> None:
    """The value checks of one shard's done frames of one array."""
    if block.dtype.kind == "f":
        _check_finite(rep, name, block, frames)
    if name == "surface/normals":
        length = np.linalg.norm(block.astype(np.float32), axis=-1)
        bad = np.abs(length - 1).max(axis=1) > NORMAL_TOLERANCE if block.size else np.zeros(0, bool)
        _first(rep, name, frames, bad, "normal length differs from 1 by more than 1%")
    if name in ("surface/labels", "eval/near_labels") and block.size:
        bad = block.max(axis=1) >= n_joints
        _first(rep, name, frames, bad, f"label >= {n_joints} joints")
    if name == "frame/subject":
        _first(rep, name, frames, (block < 0) | (block >= len(attrs[ATTR.subjects])), "subject id outside table")
    if name == "frame/sequence":
        _first(rep, name, frames, (block < 0) | (block >= len(attrs[ATTR.sequences])), "sequence id outside table")
    if name in ("eval/uniform_disagreements", "eval/near_disagreements"):
        dis[name.split("/")[1].split("_")[0]].append(block)


def _check_finite(rep: Report, name: str, block: np.ndarray, frames) -> None:
    finite = np.isfinite(block.astype(np.float32))
    if finite.all():
        return
    if np.ndim(frames) == 0:
        rep.add(name, None, "contains NaN or inf")
        return
    bad = ~finite.reshape(len(block), -1).all(axis=1)
    _first(rep, name, frames, bad, "contains NaN or inf")


def _first(rep: Report, name: str, frames: np.ndarray, bad: np.ndarray, message: str) -> None:
    idx = np.flatnonzero(bad)
    if len(idx):
        more = f" ({len(idx)} frames in this shard)" if len(idx) > 1 else ""
        rep.add(name, int(frames[idx[0]]), message + more)
