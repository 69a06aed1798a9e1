"""Zarr v3 stores of docs/architecture.md section 4: creation, shard-aligned writes and completion
(the read side is ``pipeline.store.reading``).

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
``reading.Store.open`` checks what it reads against the schema and the shard index before anyone trains on it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zarr

from hipnet.pipeline.core.location import as_path, is_url, remove_tree
from hipnet.pipeline.store.integrity import (
    collect_index,
    record_shard,
    record_static,
    store_root,
)
from hipnet.pipeline.store.quantise import point_error_bound
from hipnet.pipeline.store.schema import (
    ATTR,
    DONE,
    IDENTITY_ATTRS,
    QUANTISATION,
    SCHEMA_VERSION,
    SPECS,
    VERSION_HELP,
    Dims,
    codec_typesize,
    compressors,
    frames_text,
    layout,
    n_shards,
    shard_slice,
    specs_for,
)


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


def mark_incomplete(group: zarr.Group) -> None:
    """Before rewriting a finished store in place: clear the completion marker and drop the shard index (the
    per-shard records stay and are updated shard by shard)."""
    group.attrs[ATTR.complete] = False
    if ATTR.shard_index in group.attrs:
        del group.attrs[ATTR.shard_index]
