"""Shard hashes (docs/architecture.md section 4): a store proves it is whole.

Each shard task records, per array, its shard file's size and a hash of the shard's content (``schema.content_hash``
of the array values, independent of codecs) in the store's ``hashes/<shard>`` group, before it marks its frames
done; the arrays written once at creation get ``hashes/static``. ``store.mark_complete`` collects the records into
the ``shard_index`` root attribute and only then sets ``complete`` (mosaicml-streaming's index, written last).

Readers check the index against the files: ``check_files`` (presence and size: a ``stat`` per shard file, what
``Store.open`` and ``hipnet-data validate --quick`` do) and ``content_problem`` (the hash: ``validate``).
Zarr does not write a shard whose frames are all fill value, so such a shard is recorded with 0 bytes and must have
no file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from hipnet.pipeline.core import location
from hipnet.pipeline.core.location import as_path, is_url
from hipnet.pipeline.store.schema import (
    ATTR,
    DONE,
    HASH_ALGORITHM,
    HASH_GROUP,
    SPECS,
    STATIC_RECORD,
    content_hash,
    frames_text,
    n_shards,
    shard_key,
    shard_slice,
    specs_for,
)


@dataclass(frozen=True)
class FileProblem:
    """A shard file that does not match the shard index. ``shard`` is None for an array written once."""

    array: str
    shard: int | None
    frames: str
    message: str
    file: str

    def __str__(self) -> str:
        where = self.array if self.shard is None else f"{self.array} shard {self.shard} ({self.frames})"
        return f"{where} {self.message}" + (f" ({self.file})" if self.file else "")


def store_root(group: zarr.Group) -> Path:
    """The folder (or, on object storage, the URL) of a group."""
    store = group.store
    if hasattr(store, "root"):  # a local store
        return Path(store.root) / group.path
    return as_path(store.fs.unstrip_protocol("/".join(p for p in (store.path, group.path) if p)))


def remove_partial_writes(root: Path) -> list[Path]:
    """Delete the temporary files (``<chunk>.<uuid>.partial``) of chunk writes that a killed process left behind.

    Zarr's local store writes a chunk to such a file and renames it into place, so a finished chunk is never torn;
    a process killed between the two leaves the temporary file, which no reader looks at but which makes a resumed
    store differ from an uninterrupted one. Only called before resuming, when no writer is running. Object storage
    has no such files (an object is written whole by one PUT)."""
    if is_url(root):
        return []
    stray = sorted(Path(root).rglob("*.partial"))
    for f in stray:
        f.unlink()
    return stray


def hashed_arrays(sections: Iterable[str]) -> tuple[list[str], list[str]]:
    """(frame-major arrays hashed per shard, arrays written once) of a store with ``sections``."""
    specs = [s for s in specs_for(sections) if s.name != DONE]
    return [s.name for s in specs if s.per_frame], [s.name for s in specs if not s.per_frame]


def file_size(root: Path, name: str, shard: int) -> int:
    """Bytes of shard ``shard``'s file of array ``name``; 0 when there is no file."""
    return location.file_size(root / shard_key(SPECS[name], shard))


def size_lookup(root: Path) -> Callable[[str, int], int]:
    """``file_size`` for many shard files: a stat each in a local folder, one listing of a remote store (a request
    per object would be a round trip each)."""
    if not is_url(root):
        return lambda name, shard: file_size(root, name, shard)
    sizes = location.sizes_under(root)
    return lambda name, shard: sizes.get(shard_key(SPECS[name], shard), 0)


def read_record(group: zarr.Group, key: str) -> dict | None:
    try:
        return dict(group[f"{HASH_GROUP}/{key}"].attrs)["arrays"]
    except KeyError:
        return None


def _write_record(group: zarr.Group, key: str, arrays: Mapping[str, list]) -> None:
    # zarr writes the group's zarr.json through a temporary file and a rename: a record is whole or absent
    group.create_group(f"{HASH_GROUP}/{key}", overwrite=True, attributes={"arrays": dict(sorted(arrays.items()))})


def record_shard(group: zarr.Group, shard: int, written: Mapping[str, np.ndarray]) -> dict[str, list]:
    """Write shard ``shard``'s hash record: the arrays in ``written`` (exactly the values just written) are hashed
    from memory, the others are kept from the shard's earlier record or read back. Call it after writing the
    shard's arrays and before its ``done`` slice. Returns ``{array: [file bytes, content hash]}``."""
    root = store_root(group)
    per_shard, _ = hashed_arrays(group.attrs[ATTR.sections])
    sl = shard_slice(shard, group[DONE].shape[0], int(group.attrs[ATTR.shard_frames]))
    old = read_record(group, str(shard)) or {}
    record = {}
    for name in per_shard:
        if name in written:
            record[name] = [file_size(root, name, shard), content_hash(written[name])]
        elif name in old:
            record[name] = old[name]
        else:
            record[name] = [file_size(root, name, shard), content_hash(np.asarray(group[name][sl]))]
    _write_record(group, str(shard), record)
    return record


def record_static(group: zarr.Group) -> dict[str, list]:
    """Write the hash record of the arrays written once at creation (``hashes/static``)."""
    root = store_root(group)
    _, static = hashed_arrays(group.attrs[ATTR.sections])
    record = {name: [file_size(root, name, 0), content_hash(np.asarray(group[name][...]))] for name in static}
    _write_record(group, STATIC_RECORD, record)
    return record


def collect_index(group: zarr.Group) -> dict:
    """The ``shard_index`` attribute from the per-shard records: ``{"algorithm": ..., "arrays": {name: [[bytes,
    hash] per shard]}}``. Every shard's record is written with its data (``write_shard``); one missing is a store
    damaged behind the writer's back (``ValueError``)."""
    per_shard, static = hashed_arrays(group.attrs[ATTR.sections])
    n = n_shards(group[DONE].shape[0], int(group.attrs[ATTR.shard_frames]))
    arrays: dict[str, list] = {name: [] for name in per_shard}
    for i in range(n):
        record = read_record(group, str(i))
        if record is None:
            raise ValueError(f"{store_root(group)}: shard {i} has no hash record ({HASH_GROUP}/{i}): the store was "
                             "altered after it was written; rebuild it")
        for name in per_shard:
            arrays[name].append(record[name])
    record = read_record(group, STATIC_RECORD)
    if record is None:
        raise ValueError(f"{store_root(group)}: no hash record of the arrays written at creation "
                         f"({HASH_GROUP}/{STATIC_RECORD}); rebuild the store")
    for name in static:
        arrays[name] = [record[name]]
    return {"algorithm": HASH_ALGORITHM, "arrays": dict(sorted(arrays.items()))}


def check_files(root: Path, index: Mapping, names: Iterable[str], n_frames: int, shard_frames: int) -> list[FileProblem]:
    """Every shard file of the arrays ``names`` against ``index``: present when it had content, with the recorded
    size. A file rewritten to the same size passes (only ``content_problem`` finds it)."""
    problems = []
    size_of = size_lookup(root)
    expected_shards = n_shards(n_frames, shard_frames)
    for name in names:
        spec = SPECS[name]
        entries = index["arrays"].get(name)
        if entries is None:
            problems.append(FileProblem(name, None, "", "is not in the shard index", ""))
            continue
        want = expected_shards if spec.per_frame else 1
        if len(entries) != want:
            problems.append(FileProblem(name, None, "", f"has {len(entries)} shards in the shard index, the store "
                                                        f"has {want}", ""))
            continue
        for i, (size, _) in enumerate(entries):
            found = size_of(name, i)
            if found == size:
                continue
            if not found:
                message = "is missing"
            elif not size:
                message = f"exists ({found} bytes) but was written empty (no file)"
            else:
                message = f"has {found} bytes, the shard index says {size} (altered or truncated)"
            shard, frames = (i, frames_text(i, n_frames, shard_frames)) if spec.per_frame else (None, "")
            problems.append(FileProblem(name, shard, frames, message, shard_key(spec, i)))
    return problems


def content_problem(index: Mapping, name: str, shard: int, block: np.ndarray, n_frames: int,
                    shard_frames: int) -> FileProblem | None:
    """Shard ``shard`` of array ``name`` (its values ``block``) against its hash in ``index``."""
    entries = index["arrays"].get(name)
    if entries is None or shard >= len(entries) or content_hash(block) == entries[shard][1]:
        return None
    spec = SPECS[name]
    shard_id, frames = (shard, frames_text(shard, n_frames, shard_frames)) if spec.per_frame else (None, "")
    return FileProblem(name, shard_id, frames, "content differs from its hash in the shard index (altered)",
                       shard_key(spec, shard))


def damaged_shards(group: zarr.Group) -> dict[int, FileProblem]:
    """Shards whose files do not match their own hash record (``hashes/<i>``): a shard file deleted, truncated or
    altered in size after it was written. A rerun of ``preprocess`` recomputes them (``run.prepare_store``)."""
    root = store_root(group)
    per_shard, _ = hashed_arrays(group.attrs[ATTR.sections])
    n, k = group[DONE].shape[0], int(group.attrs[ATTR.shard_frames])
    size_of = size_lookup(root)
    found: dict[int, FileProblem] = {}
    for i in range(n_shards(n, k)):
        record = read_record(group, str(i))
        for name in per_shard if record else []:
            if name in record and size_of(name, i) != record[name][0]:
                found[i] = FileProblem(name, i, frames_text(i, n, k), "does not match its hash record (deleted or "
                                       "altered)", shard_key(SPECS[name], i))
                break
    return found
