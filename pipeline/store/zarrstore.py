"""Zarr v3 stores of docs/architecture.md section 4: creation, shard-aligned writes, completion, and reading.

Write protocol (what makes a run resumable and a killed run harmless):

1. ``create_store`` builds the group with every array pre-sized in a temporary folder and renames it into place,
   so a store folder either does not exist or has all its arrays. Reopening an existing store checks that it was
   made by the same schema, dataset, split, config and frame list (``schema.IDENTITY_ATTRS``), and refuses
   otherwise.
2. ``write_shard`` writes one shard with one slice assignment per array (zarr writes each shard file atomically),
   then the shard's hash record (``pipeline.store.integrity``), then the shard's slice of ``done``: a shard is done only
   after its data and its hashes are on disk.
3. ``mark_complete`` collects the hash records into the ``shard_index`` attr, then sets ``complete``, last, and
   only when every frame is done.

Every frame's content is a pure function of its seed, so rewriting a shard gives the same bytes (and hashes).
``Store.open`` checks what it reads against the schema and the shard index before anyone trains on it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from hipnet.pipeline.core.location import as_path, is_url, remove_tree, sizes_under
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.store.cache import ShardCache
from hipnet.pipeline.store.integrity import (
    check_files,
    collect_index,
    hashed_arrays,
    record_shard,
    record_static,
    store_root,
)
from hipnet.pipeline.store.quantise import decode_normals, decode_points, point_error_bound
from hipnet.pipeline.store.schema import (
    ATTR,
    DONE,
    IDENTITY_ATTRS,
    QUANTISATION,
    SCHEMA_VERSION,
    SPECS,
    VERSION_HELP,
    Dims,
    array_problem,
    codec_typesize,
    compressors,
    frames_text,
    layout,
    n_shards,
    shard_slice,
    specs_for,
    stored_names,
)
from hipnet.pipeline.store.shardread import read_frames


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

    ``attrs`` must hold the identity keys (``schema.IDENTITY_ATTRS``: ``dataset``, ``split``, ``config``,
    ``skeleton``, ``frames_sha`` ...); ``ids`` the ``frame/subject``, ``frame/sequence``, ``frame/index`` columns,
    written at creation with the arrays that are not frame-major (and their hash record).
    """
    path = as_path(path)
    attrs = {ATTR.schema_version: SCHEMA_VERSION, ATTR.sections: list(sections), ATTR.shard_frames: shard_frames,
             ATTR.dims: asdict(dims), **attrs}
    if "quantised" in sections:
        attrs.setdefault(ATTR.quantisation, dict(QUANTISATION))
    if store_exists(path):
        group = open_group(path, mode="r+")
        check_identity(path, dict(group.attrs), attrs)
        return group
    # a local store is built in a temporary folder and renamed into place; an object store has no rename, so it is
    # built in place and its root attributes, which make it a store (``store_exists``), are written last
    remote = is_url(path)
    target = path if remote else path.with_name(f".{path.name}.creating")
    if remote and (path / "zarr.json").exists():
        remove_tree(path)  # a creation that was interrupted before its attributes
    elif not remote and target.exists():
        shutil.rmtree(target)
    group = zarr.open_group(str(target), mode="w", zarr_format=3)
    for spec in specs_for(sections):
        chunks, shards = layout(spec, dims, shard_frames, sections)
        group.create_array(
            spec.name, shape=dims.shape(spec), dtype=spec.dtype, chunks=chunks, shards=shards,
            compressors=compressors(spec.dtype, codec_typesize(spec)), fill_value=0, attributes={"doc": spec.doc},
        )
    for name, column in ids.items():
        group[name][:] = np.asarray(column, dtype=np.int32)
    group["subject/rest_joints"][:] = np.asarray(rest_joints, dtype=np.float32)
    if "mesh" in sections:
        group["mesh/faces"][:] = np.asarray(faces, dtype=np.int32)
    group.attrs.update({**attrs, ATTR.schema_version: None} if remote else attrs)
    record_static(group)
    if remote:
        group.attrs[ATTR.schema_version] = SCHEMA_VERSION  # the root metadata, rewritten after everything else
    else:
        target.rename(path)
    return open_group(path, mode="r+")


def store_exists(path: Path) -> bool:
    """Whether a store (made whole by ``create_store``) is at ``path``: its root ``zarr.json``; on object storage,
    one that carries the schema version (written last at creation)."""
    path = as_path(path)
    if not (path / "zarr.json").exists():
        return False
    if not is_url(path):
        return True
    return json.loads((path / "zarr.json").read_text()).get("attributes", {}).get(ATTR.schema_version) is not None


def check_identity(path: Path, old: Mapping, attrs: Mapping) -> None:
    """Refuse to write ``attrs`` into the store at ``path`` (attributes ``old``) unless the identity attributes
    (``schema.IDENTITY_ATTRS``) match, naming those that differ."""
    if old.get(ATTR.schema_version) != attrs.get(ATTR.schema_version):
        raise FileExistsError(f"{path} exists and was written with store schema version "
                              f"{old.get(ATTR.schema_version)!r}; this code writes version "
                              f"{attrs.get(ATTR.schema_version)}: {VERSION_HELP}")
    diff = [k for k in IDENTITY_ATTRS if old.get(k) != attrs.get(k)]
    if diff:
        raise FileExistsError(
            f"{path} exists and was written with a different {', '.join(diff)}; "
            "choose another --out or delete it to start over"
        )


def open_group(path: Path, mode: str = "r") -> zarr.Group:
    """The root group of the store at ``path`` (a local folder or a URL)."""
    path = as_path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"{path} is not a Zarr store (no zarr.json)")
    return zarr.open_group(str(path) if is_url(path) else path, mode=mode, zarr_format=3)


def store_dims(group: zarr.Group) -> Dims:
    """The sizes of a store's dimension symbols: its ``dims`` attr."""
    return Dims(**group.attrs[ATTR.dims])


def done_mask(group: zarr.Group, name: str = DONE) -> np.ndarray:
    return np.asarray(group[name][:], dtype=bool)


def frame_ids(group: zarr.Group) -> list[tuple[str, str, int]]:
    """(subject, sequence, index) of every frame, in store order."""
    s, q, k = (np.asarray(group[n][:]).tolist() for n in ("frame/subject", "frame/sequence", "frame/index"))
    subjects, sequences = group.attrs[ATTR.subjects], group.attrs[ATTR.sequences]
    return [(subjects[a], sequences[b], c) for a, b, c in zip(s, q, k, strict=True)]


def shards_todo(group: zarr.Group, name: str = DONE) -> list[int]:
    """Shards with at least one frame not done (they are recomputed whole)."""
    done = done_mask(group, name)
    k = int(group.attrs[ATTR.shard_frames])
    return [i for i in range(n_shards(len(done), k)) if not done[shard_slice(i, len(done), k)].all()]


def write_shard(group: zarr.Group, shard: int, arrays: Mapping[str, np.ndarray], done: np.ndarray,
                done_name: str = DONE) -> None:
    """Write shard ``shard`` of the frame-major ``arrays`` (each holding exactly that shard's frames), then the
    shard's hash record, then its ``done`` slice. One slice assignment per array: shard-aligned, never shared with
    another task."""
    n = group[done_name].shape[0]
    k = int(group.attrs[ATTR.shard_frames])
    sl = shard_slice(shard, n, k)
    written = {}
    try:
        for name, block in arrays.items():
            if not SPECS[name].per_frame:
                raise ValueError(f"{name} is not frame-major; it is written once at creation")
            if len(block) != sl.stop - sl.start:
                raise ValueError(f"{name}: {len(block)} frames for shard {shard} of {sl.stop - sl.start}")
            written[name] = np.ascontiguousarray(block, dtype=SPECS[name].dtype)  # hashed as written
            group[name][sl] = written[name]
        record_shard(group, shard, written)
        group[done_name][sl] = np.asarray(done, dtype=bool)
    except OSError as e:  # a full disk, a quota, a read-only or vanished folder: the shard stays not done
        raise StoreWriteError(
            f"{store_root(group)}: shard {shard} ({frames_text(shard, n, k)}) could not be written: "
            f"{e.strerror or e}{f' ({e.filename})' if e.filename else ''}; the shards finished before are kept: "
            "fix that (free space) and rerun the same command to resume") from None


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


class StoreWriteError(RuntimeError):
    """A shard could not be written (no space, no permission); the store stays resumable."""



def mark_complete(group: zarr.Group) -> bool:
    """When every frame is done: write the shard index, then the completion marker. Returns whether the store
    is complete."""
    if not done_mask(group).all():
        return False
    if "quantised" in group.attrs[ATTR.sections]:
        bound = float(point_error_bound(np.asarray(group["surface/box"][:])).max(initial=0.0))
        group.attrs[ATTR.quantisation] = {**group.attrs[ATTR.quantisation], "max_point_error_mm": 1000 * bound}
    group.attrs[ATTR.shard_index] = collect_index(group)
    group.attrs[ATTR.complete] = True
    return True


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


def mark_incomplete(group: zarr.Group) -> None:
    """Before rewriting a finished store in place: clear the completion marker and drop the shard index (the
    per-shard records stay and are updated shard by shard)."""
    group.attrs[ATTR.complete] = False
    if ATTR.shard_index in group.attrs:
        del group.attrs[ATTR.shard_index]


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
