"""The store contract (DESIGN.md section 4): array names, dtypes, shapes, chunking, SCHEMA_VERSION, validate().

This is the only place the layout of a store is written down in code. The writer (``pipeline.store``), the
streaming loader and the evaluation all import it, so a change here is a change everywhere (and a new
``SCHEMA_VERSION``).

Frame-major arrays have one chunk per frame and ``shard_frames`` frames per shard (Zarr v3 sharding): a shard is
the unit of writing (one task, one slice assignment) and of coarse shuffling in the loader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

SCHEMA_VERSION = 1

#: Sections of a store. ``train`` is always written; ``eval`` and ``mesh`` for evaluation splits (or on request);
#: ``snarf`` only when the SNARF evaluation variant is asked for.
SECTIONS = ("train", "eval", "mesh", "snarf")


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store. ``dims`` are symbols resolved per store (see ``Dims``); a leading ``F`` makes the
    array frame-major (chunk = one frame, shard = ``shard_frames`` frames)."""

    name: str
    dtype: str
    dims: tuple[str, ...]
    section: str
    doc: str

    @property
    def per_frame(self) -> bool:
        return self.dims[:1] == ("F",)


ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("surface/points", "float32", ("F", "S", 3), "train", "area-weighted surface samples, canonical frame"),
    ArraySpec("surface/normals", "float16", ("F", "S", 3), "train",
              "unit outward normals: interpolated area-weighted vertex normals"),
    ArraySpec("surface/labels", "uint8", ("F", "S"), "train", "index of the geodesically nearest joint"),
    ArraySpec("pose/joint_transforms", "float32", ("F", "J", 4, 4), "train", "[G_j | J_j], canonical frame"),
    ArraySpec("pose/world_from_canonical", "float32", ("F", 4, 4), "train", "x_world = R x_canonical + t"),
    ArraySpec("frame/subject", "int32", ("F",), "train", "subject id; names in attrs['subjects']"),
    ArraySpec("frame/sequence", "int32", ("F",), "train", "sequence id; names in attrs['sequences']"),
    ArraySpec("frame/index", "int32", ("F",), "train", "frame index within its sequence"),
    ArraySpec("subject/rest_joints", "float32", ("P", "J", 3), "train", "rest-pose joint positions per subject"),
    ArraySpec("done", "bool", ("F",), "train", "frame finished; a rerun skips shards whose frames are all done"),
    ArraySpec("eval/uniform_points", "float32", ("F", "U", 3), "eval", "uniform in the bbox stretched 10% (diagonal)"),
    ArraySpec("eval/uniform_occupancy", "bool", ("F", "U"), "eval", "inside: generalised winding number > 0.5"),
    ArraySpec("eval/uniform_disagreements", "int32", ("F",), "eval", "points where ray parity disagrees"),
    ArraySpec("eval/near_points", "float32", ("F", "N", 3), "eval", "surface samples + N(0, near_sigma^2 I)"),
    ArraySpec("eval/near_occupancy", "bool", ("F", "N"), "eval", "inside: generalised winding number > 0.5"),
    ArraySpec("eval/near_labels", "uint8", ("F", "N"), "eval", "joint label of the nearest surface sample"),
    ArraySpec("eval/near_disagreements", "int32", ("F",), "eval", "points where ray parity disagrees"),
    ArraySpec("mesh/vertices", "float32", ("F", "V", 3), "mesh", "ground-truth mesh, canonical frame"),
    ArraySpec("mesh/faces", "int32", ("Fc", 3), "mesh", "faces, once per store (one topology)"),
    ArraySpec("snarf/uniform_points", "float32", ("F", "U", 3), "snarf", "uniform in a cube 1.1x the largest extent"),
    ArraySpec("snarf/uniform_occupancy", "bool", ("F", "U"), "snarf", "inside: generalised winding number > 0.5"),
    ArraySpec("snarf/near_points", "float32", ("F", "N", 3), "snarf", "surface samples + N(0, 0.01^2 I)"),
    ArraySpec("snarf/near_occupancy", "bool", ("F", "N"), "snarf", "inside: generalised winding number > 0.5"),
)

SPECS = {a.name: a for a in ARRAYS}


@dataclass(frozen=True)
class Dims:
    """Sizes of the symbolic dimensions of one store."""

    F: int  # frames
    S: int  # surface samples per frame
    J: int  # joints
    P: int  # subjects
    U: int = 0  # uniform evaluation points per frame
    N: int = 0  # near-surface evaluation points per frame
    V: int = 0  # mesh vertices
    Fc: int = 0  # mesh faces

    def shape(self, spec: ArraySpec) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else getattr(self, d) for d in spec.dims)


def specs_for(sections: Iterable[str]) -> list[ArraySpec]:
    chosen = set(sections)
    unknown = chosen - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown store sections {sorted(unknown)}; choose from {SECTIONS}")
    return [a for a in ARRAYS if a.section in chosen]


def compressors(dtype: str):
    """Zstd behind a byte shuffle for numbers (floats compress poorly without it); plain zstd for bool/uint8."""
    from zarr.codecs import BloscCodec

    itemsize = np.dtype(dtype).itemsize
    shuffle = "shuffle" if itemsize > 1 else "noshuffle"
    return (BloscCodec(cname="zstd", clevel=3, shuffle=shuffle, typesize=itemsize),)


def layout(spec: ArraySpec, dims: Dims, shard_frames: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(chunks, shards) of an array: one frame per chunk and ``shard_frames`` per shard for frame-major arrays,
    a single chunk otherwise."""
    shape = dims.shape(spec)
    if not spec.per_frame:
        return tuple(max(1, s) for s in shape), None
    chunks = (1, *shape[1:])
    shards = (max(1, min(shard_frames, shape[0])), *shape[1:])
    return chunks, shards


def n_shards(n_frames: int, shard_frames: int) -> int:
    return -(-n_frames // shard_frames)


def shard_slice(i: int, n_frames: int, shard_frames: int) -> slice:
    return slice(i * shard_frames, min((i + 1) * shard_frames, n_frames))


# --------------------------------------------------------------------------------------------------- validation


@dataclass
class Problem:
    array: str
    frame: int | None
    message: str

    def __str__(self) -> str:
        where = self.array if self.frame is None else f"{self.array} frame {self.frame}"
        return f"{where}: {self.message}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, array: str, frame: int | None, message: str) -> None:
        self.problems.append(Problem(array, frame, message))


NORMAL_TOLERANCE = 1e-2  # float16 normals: |n| within 1% of 1
# fraction of a frame's evaluation points where winding number and ray parity may disagree: self-intersections
# (a hand through the torso in deep flexion) are doubly covered, winding number 2 (inside, right) where ray parity
# says outside; the embedded data reaches 1.03% on one near-surface frame. A broken (open) mesh goes far beyond.
MAX_DISAGREEMENT = 0.05


def validate(group, progress: Callable[[int], None] | None = None, max_disagreement: float = MAX_DISAGREEMENT) -> Report:
    """Check an open store (a ``zarr.Group``) against the schema, shard by shard.

    Checks: schema version and required attrs; every array of the written sections present with the right dtype and
    shape; no NaN/inf; normal lengths; labels below the joint count; subject/sequence ids inside their tables; the
    done mask and the completion marker; the occupancy cross-check disagreement rate. ``progress(k)`` is called
    with the number of frames checked after each shard.
    """
    rep = Report()
    attrs = dict(group.attrs)
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        rep.add("attrs", None, f"schema_version is {version!r}, this code reads {SCHEMA_VERSION}")
        return rep
    for key in ("dataset", "split", "skeleton", "subjects", "sequences", "sections", "shard_frames", "config"):
        if key not in attrs:
            rep.add("attrs", None, f"missing attribute {key!r}")
    if not rep.ok:
        return rep
    n_joints = len(attrs["skeleton"]["names"])
    sections = attrs["sections"]
    specs = specs_for(sections)
    arrays = {}
    for spec in specs:
        try:
            arr = group[spec.name]
        except KeyError:
            rep.add(spec.name, None, "missing")
            continue
        if str(arr.dtype) != spec.dtype:
            rep.add(spec.name, None, f"dtype {arr.dtype}, schema says {spec.dtype}")
            continue
        arrays[spec.name] = arr
    if not rep.ok:
        return rep
    n = arrays["done"].shape[0]
    for name, arr in arrays.items():
        if SPECS[name].per_frame and arr.shape[0] != n:
            rep.add(name, None, f"{arr.shape[0]} frames, done mask has {n}")
    if arrays["subject/rest_joints"].shape != (len(attrs["subjects"]), n_joints, 3):
        rep.add("subject/rest_joints", None,
                f"shape {arrays['subject/rest_joints'].shape}, expected ({len(attrs['subjects'])}, {n_joints}, 3)")
    if not rep.ok:
        return rep

    done = np.asarray(arrays["done"][:])
    missing = np.flatnonzero(~done)
    if len(missing):
        rep.add("done", int(missing[0]), f"{len(missing)} of {n} frames not done (first shown)")
    if attrs.get("complete") and len(missing):
        rep.add("attrs", None, "store is marked complete but frames are missing")
    if not attrs.get("complete"):
        rep.add("attrs", None, "store is not marked complete (an interrupted or failed run: rerun the same command)")

    _check_finite(rep, "subject/rest_joints", np.asarray(arrays["subject/rest_joints"][:]), 0)
    if "mesh/faces" in arrays:
        faces = np.asarray(arrays["mesh/faces"][:])
        n_vertices = arrays["mesh/vertices"].shape[1]
        if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
            rep.add("mesh/faces", None, f"indices outside [0, {n_vertices})")

    dis = {"uniform": [], "near": []}
    n_points = {"uniform": arrays["eval/uniform_points"].shape[1] if "eval/uniform_points" in arrays else 0,
                "near": arrays["eval/near_points"].shape[1] if "eval/near_points" in arrays else 0}
    shard_frames = int(attrs["shard_frames"])
    for s in range(n_shards(n, shard_frames)):
        sl = shard_slice(s, n, shard_frames)
        ok = done[sl]
        for name, arr in arrays.items():
            if not SPECS[name].per_frame:
                continue
            block = np.asarray(arr[sl])[ok]
            frames = np.arange(sl.start, sl.stop)[ok]
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
                _first(rep, name, frames, (block < 0) | (block >= len(attrs["subjects"])), "subject id outside table")
            if name == "frame/sequence":
                _first(rep, name, frames, (block < 0) | (block >= len(attrs["sequences"])), "sequence id outside table")
            if name in ("eval/uniform_disagreements", "eval/near_disagreements"):
                dis[name.split("/")[1].split("_")[0]].append(block)
        if progress is not None:
            progress(sl.stop - sl.start)

    for kind, blocks in dis.items():
        if not blocks or not n_points[kind]:
            continue
        counts = np.concatenate(blocks)
        if not len(counts):
            continue
        frac = counts / n_points[kind]
        rep.stats[f"{kind}_disagreement"] = {
            "mean": float(frac.mean()), "max": float(frac.max()), "frames_with_any": int(np.count_nonzero(counts))
        }
        worst = int(np.argmax(frac))
        if frac[worst] > max_disagreement:
            frame = int(np.flatnonzero(done)[worst])
            rep.add(f"eval/{kind}_disagreements", frame,
                    f"winding number and ray parity disagree on {frac[worst]:.2%} of points (limit {max_disagreement:.0%})")
    rep.stats["frames"] = n
    rep.stats["done"] = int(done.sum())
    return rep


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
