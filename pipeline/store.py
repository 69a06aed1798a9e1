"""Zarr v3 stores of DESIGN.md section 4: creation, shard-aligned writes, completion, and reading.

Write protocol (what makes a run resumable and a killed run harmless):

1. ``create_store`` builds the group with every array pre-sized in a temporary folder and renames it into place,
   so a store folder either does not exist or has all its arrays. Reopening an existing store checks that it was
   made by the same schema, dataset, split, config and frame list, and refuses otherwise.
2. ``write_shard`` writes one shard with one slice assignment per array (zarr writes each shard file atomically),
   then the shard's slice of ``done``: a shard is done only after its data is on disk.
3. ``mark_complete`` sets the ``complete`` attr, last, and only when every frame is done.

Every frame's content is a pure function of its seed, so rewriting a shard gives the same bytes.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from hipnet.pipeline.schema import (
    SCHEMA_VERSION,
    SPECS,
    Dims,
    compressors,
    layout,
    n_shards,
    shard_slice,
    specs_for,
)
from hipnet.pipeline.skeleton import Skeleton

# attrs that must match for a rerun to continue an existing store
_IDENTITY = ("schema_version", "dataset", "split", "sections", "shard_frames", "config", "frames_sha", "skeleton")


def frames_digest(keys: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def create_store(
    path: Path,
    *,
    dims: Dims,
    sections: Sequence[str],
    shard_frames: int,
    attrs: Mapping,
    ids: Mapping[str, np.ndarray],
    rest_joints: np.ndarray,
    faces: np.ndarray | None = None,
) -> zarr.Group:
    """Create a store (or reopen a matching unfinished one) with all arrays allocated.

    ``attrs`` must hold the identity keys (``dataset``, ``split``, ``config``, ``skeleton``, ``frames_sha`` ...);
    ``ids`` the ``frame/subject``, ``frame/sequence``, ``frame/index`` columns, written at creation.
    """
    path = Path(path)
    attrs = {"schema_version": SCHEMA_VERSION, "sections": list(sections), "shard_frames": shard_frames, **attrs}
    if path.exists():
        group = open_group(path, mode="r+")
        old = dict(group.attrs)
        diff = [k for k in _IDENTITY if old.get(k) != attrs.get(k)]
        if diff:
            raise FileExistsError(
                f"{path} exists and was written with a different {', '.join(diff)}; "
                "choose another --out or delete it to start over"
            )
        return group
    tmp = path.with_name(f".{path.name}.creating")
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(tmp, mode="w", zarr_format=3)
    for spec in specs_for(sections):
        chunks, shards = layout(spec, dims, shard_frames)
        group.create_array(
            spec.name, shape=dims.shape(spec), dtype=spec.dtype, chunks=chunks, shards=shards,
            compressors=compressors(spec.dtype), fill_value=0, attributes={"doc": spec.doc},
        )
    for name, column in ids.items():
        group[name][:] = np.asarray(column, dtype=np.int32)
    group["subject/rest_joints"][:] = np.asarray(rest_joints, dtype=np.float32)
    if "mesh" in sections:
        group["mesh/faces"][:] = np.asarray(faces, dtype=np.int32)
    group.attrs.update(attrs)
    tmp.rename(path)
    return open_group(path, mode="r+")


def open_group(path: Path, mode: str = "r") -> zarr.Group:
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"{path} is not a Zarr store (no zarr.json)")
    return zarr.open_group(path, mode=mode, zarr_format=3)


def done_mask(group: zarr.Group, name: str = "done") -> np.ndarray:
    return np.asarray(group[name][:], dtype=bool)


def shards_todo(group: zarr.Group, name: str = "done") -> list[int]:
    """Shards with at least one frame not done (they are recomputed whole)."""
    done = done_mask(group, name)
    k = int(group.attrs["shard_frames"])
    return [i for i in range(n_shards(len(done), k)) if not done[shard_slice(i, len(done), k)].all()]


def write_shard(group: zarr.Group, shard: int, arrays: Mapping[str, np.ndarray], done: np.ndarray,
                done_name: str = "done") -> None:
    """Write shard ``shard`` of the frame-major ``arrays`` (each holding exactly that shard's frames), then its
    ``done`` slice. One slice assignment per array: shard-aligned, never shared with another task."""
    n = group[done_name].shape[0]
    sl = shard_slice(shard, n, int(group.attrs["shard_frames"]))
    for name, block in arrays.items():
        if not SPECS[name].per_frame:
            raise ValueError(f"{name} is not frame-major; it is written once at creation")
        if len(block) != sl.stop - sl.start:
            raise ValueError(f"{name}: {len(block)} frames for shard {shard} of {sl.stop - sl.start}")
        group[name][sl] = block
    group[done_name][sl] = np.asarray(done, dtype=bool)


def mark_complete(group: zarr.Group) -> bool:
    """Set the completion marker when every frame is done; returns whether the store is complete."""
    if not done_mask(group).all():
        return False
    group.attrs["complete"] = True
    return True


@dataclass
class Store:
    """Read side of a store: attrs, name tables and whole-shard reads. ``open`` refuses unfinished stores unless
    ``allow_incomplete``."""

    path: Path
    group: zarr.Group

    @classmethod
    def open(cls, path: Path, allow_incomplete: bool = False) -> Store:
        group = open_group(path)
        version = group.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: schema_version {version!r}; this code reads version {SCHEMA_VERSION}")
        if not allow_incomplete and not group.attrs.get("complete"):
            raise ValueError(
                f"{path}: store is not complete (interrupted or failed run); rerun `hipnet-data preprocess` with the "
                "same arguments to finish it"
            )
        return cls(Path(path), group)

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def n_frames(self) -> int:
        return self.group["done"].shape[0]

    @property
    def shard_frames(self) -> int:
        return int(self.group.attrs["shard_frames"])

    @property
    def n_shards(self) -> int:
        return n_shards(self.n_frames, self.shard_frames)

    @property
    def skeleton(self) -> Skeleton:
        return Skeleton.from_attrs(self.group.attrs["skeleton"])

    @property
    def subjects(self) -> list[str]:
        return list(self.group.attrs["subjects"])

    @property
    def sequences(self) -> list[str]:
        return list(self.group.attrs["sequences"])

    @property
    def sections(self) -> list[str]:
        return list(self.group.attrs["sections"])

    def shard_slice(self, i: int) -> slice:
        return shard_slice(i, self.n_frames, self.shard_frames)

    def read(self, name: str, frames: slice | int | np.ndarray = slice(None)) -> np.ndarray:
        return np.asarray(self.group[name][frames])

    def read_shard(self, i: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        sl = self.shard_slice(i)
        return {name: self.read(name, sl) for name in names}

    def frame_keys(self) -> list[str]:
        """Every frame's ``subject/sequence/index``, reading the three id arrays once."""
        s, q, k = (self.read(n) for n in ("frame/subject", "frame/sequence", "frame/index"))
        subjects, sequences = self.subjects, self.sequences
        return [f"{subjects[a]}/{sequences[b]}/{c}" for a, b, c in zip(s.tolist(), q.tolist(), k.tolist(), strict=True)]

    def frame_key(self, i: int) -> str:
        s, q, k = (int(self.group[n][i]) for n in ("frame/subject", "frame/sequence", "frame/index"))
        return f"{self.subjects[s]}/{self.sequences[q]}/{k}"

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
