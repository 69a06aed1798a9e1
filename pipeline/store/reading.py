"""The read side of a store: ``Store`` (opened through ``Store.open``, which checks the store before anyone
reads it) and ``read_array``, which reads a stored array's frames straight from its shard files (a remote
store's through its cache) and decodes a quantised store's codes. The write side is ``zarrstore``."""


from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from hipnet.pipeline.core.location import as_path, is_url, sizes_under
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.store.cache import ShardCache
from hipnet.pipeline.store.integrity import (
    check_files,
    hashed_arrays,
)
from hipnet.pipeline.store.quantise import decode_normals, decode_points
from hipnet.pipeline.store.schema import (
    ATTR,
    DONE,
    SCHEMA_VERSION,
    SPECS,
    VERSION_HELP,
    Dims,
    array_problem,
    frames_text,
    n_shards,
    shard_slice,
    specs_for,
    stored_names,
)
from hipnet.pipeline.store.shardread import read_frames
from hipnet.pipeline.store.zarrstore import open_group, store_dims


def incomplete_text(store: Store) -> str:
    """What an incomplete store lacks, and whether a run is writing it now (its folder's writer lock)."""
    from hipnet.pipeline.store.lock import holder

    done = np.asarray(store.read(DONE), dtype=bool)
    if done.all():
        what = "every frame is done, but the store was never marked complete"
    else:
        first = int(np.flatnonzero(~done)[0])
        what = (f"{int((~done).sum())} of {len(done)} frames not done (first: frame {first}, shard "
                f"{first // store.shard_frames})")
    writing = holder(store.path.parent)
    return f"{what}; " + (f"a run is writing it now: {writing}" if writing else "an interrupted or failed run")


ReadFrames = Callable[[str, slice, slice], np.ndarray | None]  # (array, frames, points) -> values, or None: zarr


def read_array(group: zarr.Group, name: str, frames: slice | int | np.ndarray = slice(None),
               points: slice = slice(None), reader: ReadFrames | None = None) -> np.ndarray:
    """Array ``name`` of ``frames`` (and of the surface ``points`` along S, for the surface arrays) as a reader
    wants it: decoded to float32 where the store holds it as 16-bit codes (``schema.DECODED_FROM``). ``reader``:
    reads frames of a stored array from shard files (a remote store's cache); a local store's own files by
    default."""
    names = stored_names(name, group.attrs[ATTR.sections])
    if names == (name,):
        return _stored(group, name, frames, points, reader)
    if name == "surface/normals":
        return decode_normals(_stored(group, names[0], frames, points, reader))
    return decode_points(_stored(group, names[0], frames, points, reader),
                         _stored(group, names[1], frames, reader=reader))


def _stored(group: zarr.Group, name: str, frames: slice | int | np.ndarray, points: slice = slice(None),
            reader: ReadFrames | None = None) -> np.ndarray:
    """Stored array ``name`` of ``frames`` (and ``points``): straight from the shard files where
    ``shardread.read_frames`` handles the layout and selection (several times faster for many small chunks),
    through zarr otherwise."""
    one = isinstance(frames, int | np.integer) and not isinstance(frames, bool) and frames >= 0
    if reader is None and isinstance(group.store, LocalStore):
        def reader(name: str, frames: slice, points: slice) -> np.ndarray | None:
            return read_frames(Path(group.store.root) / group.path / name, frames, points)
    if reader is not None and (one or isinstance(frames, slice)):
        out = reader(name, slice(frames, frames + 1) if one else frames, points)
        if out is not None and (not one or len(out)):
            return np.asarray(out[0]) if one else out
    return np.asarray(group[name][(frames, points) if points != slice(None) else frames])


@dataclass
class Store:
    """Read side of a store: attrs, name tables and whole-shard reads, opened through ``Store.open``, which checks
    the store before anyone reads it."""

    path: Path  # a local folder, or a URL (``upath.UPath``) of a store on object storage
    _group: zarr.Group
    cache: ShardCache | None = None  # a remote store's local mirror of its shard files (``pipeline.store.cache``)
    _pid: int = field(default_factory=os.getpid)
    _arrays: dict = field(default_factory=dict)

    @property
    def group(self) -> zarr.Group:
        """The store's root group; a remote store's is reopened in a forked process (a DataLoader worker): fsspec
        filesystems and their connections do not survive a fork."""
        if self._pid != os.getpid() and is_url(self.path):
            self.path = as_path(str(self.path))  # a filesystem object of this process
            self._group, self._pid, self._arrays = open_group(self.path), os.getpid(), {}
        return self._group

    def array(self, name: str) -> zarr.Array:
        """The zarr array ``name``, opened once (its metadata is a request each time on object storage)."""
        group = self.group
        if name not in self._arrays:
            self._arrays[name] = group[name]
        return self._arrays[name]

    @classmethod
    def open(cls, path: Path, arrays: Sequence[str] | None = None, allow_incomplete: bool = False) -> Store:
        """Open a store, refusing with a one-line ValueError that names the store, the array and, for a shard
        file, the shard and its frames.

        Checks: the schema version; that ``arrays`` (default: every array of the store's sections) exist with the
        schema's dtype and the shape the store's dims give. Unless ``allow_incomplete``: the ``complete`` marker,
        the ``done`` mask (all true), and, when the store has a shard index, that every shard file of those arrays
        is present with its recorded size (a ``stat`` per file, or one listing of a remote store; a shard
        rewritten to the same size is found only by ``hipnet-data validate``, which hashes the content).
        """
        path = as_path(path)
        group = open_group(path)
        version = group.attrs.get(ATTR.schema_version)
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: store schema version {version!r}; this code reads version {SCHEMA_VERSION}: "
                             f"{VERSION_HELP}")
        store = cls(path, group)
        names = [s.name for s in specs_for(store.sections)] if arrays is None else list(arrays)
        store._check_arrays(names)
        names = [n for asked in names for n in stored_names(asked, store.sections)]
        if allow_incomplete:
            return store
        if not group.attrs.get(ATTR.complete):
            raise ValueError(f"{path}: store is not complete ({incomplete_text(store)}); rerun `hipnet-data "
                             "preprocess` with the same arguments to finish it")
        done = store.read(DONE)
        if not done.all():
            first = int(np.flatnonzero(~done)[0])
            shard = first // store.shard_frames
            raise ValueError(
                f"{path}: marked complete but {int((~done).sum())} frames are not done (first: frame {first}, shard "
                f"{shard}, {frames_text(shard, store.n_frames, store.shard_frames)}); rerun `hipnet-data "
                "preprocess` with the same arguments to redo them"
            )
        index = store.shard_index
        if index is None:
            raise ValueError(f"{path}: marked complete but has no shard index (damaged); rerun `hipnet-data "
                             "preprocess` with the same arguments to write it")
        per_shard, static = hashed_arrays(store.sections)
        problems = check_files(path, index, [n for n in names if n in per_shard or n in static],
                               store.n_frames, store.shard_frames)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(f"{path}: {problems[0]}{more}; the store is damaged: `hipnet-data validate` "
                             "lists every problem, rebuilding the store repairs it")
        if is_url(path):
            store.cache = ShardCache(str(path), index, store.n_frames, store.shard_frames)
        return store

    def _check_arrays(self, names: Sequence[str]) -> None:
        dims = self.dims
        for asked in names:
            if asked not in SPECS:
                raise ValueError(f"{self.path}: {asked!r} is not an array of the store schema")
            self._check_stored(stored_names(asked, self.sections), dims)

    def _check_stored(self, names: Sequence[str], dims: Dims) -> None:
        for name in names:
            spec = SPECS[name]
            if spec.section not in self.sections:
                raise ValueError(f"{self.path}: no array {name} (section {spec.section}; the store has sections "
                                 f"{', '.join(self.sections)})")
            try:
                arr = self.array(name)
            except KeyError:
                raise ValueError(f"{self.path}: array {name} is missing") from None
            problem = array_problem(spec, arr.dtype, arr.shape, dims)
            if problem:
                raise ValueError(f"{self.path}: {name} has {problem}")

    @property
    def dims(self) -> Dims:
        return store_dims(self.group)

    @property
    def shard_index(self) -> dict | None:
        """The ``shard_index`` attr (``pipeline.store.integrity``); None until the store is complete."""
        return self.group.attrs.get(ATTR.shard_index)

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def n_frames(self) -> int:
        return self.array(DONE).shape[0]

    @property
    def shard_frames(self) -> int:
        return int(self.group.attrs[ATTR.shard_frames])

    @property
    def n_shards(self) -> int:
        return n_shards(self.n_frames, self.shard_frames)

    @property
    def skeleton(self) -> Skeleton:
        return Skeleton.from_attrs(self.group.attrs[ATTR.skeleton])

    @property
    def subjects(self) -> list[str]:
        return list(self.group.attrs[ATTR.subjects])

    @property
    def sequences(self) -> list[str]:
        return list(self.group.attrs[ATTR.sequences])

    @property
    def sections(self) -> list[str]:
        return list(self.group.attrs[ATTR.sections])

    def shard_slice(self, i: int) -> slice:
        return shard_slice(i, self.n_frames, self.shard_frames)

    @property
    def quantised(self) -> bool:
        return "quantised" in self.sections

    def read(self, name: str, frames: slice | int | np.ndarray = slice(None)) -> np.ndarray:
        """Array ``name`` of ``frames``; a quantised store's surface points and normals decoded to float32."""
        return read_array(self.group, name, frames, reader=self._read_frames)

    def _read_frames(self, name: str, frames: slice, points: slice) -> np.ndarray | None:
        """How ``read_array`` reads ``name``: from the store's own shard files, through a remote store's cache (the
        arrays of its shard index), or None (through zarr)."""
        if self.cache is not None:
            return self.cache.read(name, frames, points) if name in self.cache.index["arrays"] else None
        return read_frames(self.path / name, frames, points) if not is_url(self.path) else None

    def prefetch(self, shards: Sequence[int], names: Sequence[str]) -> None:
        """Start fetching the shard files of ``shards`` of the arrays ``names`` into a remote store's cache, in the
        background (nothing to do for a local store)."""
        if self.cache is None:
            return
        stored = [n for asked in names for n in stored_names(asked, self.sections) if n in self.cache.index["arrays"]]
        self.cache.prefetch([(n, i) for i in shards for n in stored])

    def read_shard(self, i: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        sl = self.shard_slice(i)
        return {name: self.read(name, sl) for name in names}

    def read_window(self, frames: slice, start: int, count: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Surface points ``start, start + 1, ... start + count - 1`` (modulo S, wrapping to the first points) of
        ``frames``, of the surface arrays ``names`` (each (frames, count, ...)). Reads only the chunks the window
        touches where the store chunks along S (a quantised store); a whole frame per chunk otherwise."""
        n = self.dims.S
        if not 0 < count <= n:
            raise ValueError(f"{self.path}: a window of {count} of {n} surface points")
        start %= n
        parts = [slice(start, min(start + count, n))]
        if start + count > n:
            parts.append(slice(0, start + count - n))
        out = {}
        for name in names:
            blocks = [read_array(self.group, name, frames, p, self._read_frames) for p in parts]
            out[name] = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        return out

    def frame_keys(self) -> list[str]:
        """Every frame's ``subject/sequence/index``, reading the three id arrays once."""
        s, q, k = (self.read(n) for n in ("frame/subject", "frame/sequence", "frame/index"))
        subjects, sequences = self.subjects, self.sequences
        return [f"{subjects[a]}/{sequences[b]}/{c}" for a, b, c in zip(s.tolist(), q.tolist(), k.tolist(), strict=True)]

    def frame_key(self, i: int) -> str:
        s, q, k = (int(self.read(n, i)) for n in ("frame/subject", "frame/sequence", "frame/index"))
        return f"{self.subjects[s]}/{self.sequences[q]}/{k}"

    def bytes_on_disk(self) -> int:
        return sum(sizes_under(self.path).values())
