"""Direct reads of a store's frame-major arrays from their shard files, decoded in the calling thread.

zarr 3 decodes every inner chunk of a shard through its async codec pipeline, which hands each blosc call to a
thread pool (``asyncio.to_thread``): about 0.3 ms per chunk on the 2-core machine, several times the decompression
itself. A quantised store has ten chunks per frame and surface array, so a loader reading through zarr spends
most of its time there. ``read_frames`` reads the shard files of the layout this toolkit writes (``schema.layout`` and
``schema.compressors``: one ``sharding_indexed`` codec whose shards span every axis but the first, inner chunks of
one frame split only along the second axis, inner codecs ``bytes`` (little-endian) + ``blosc``, the index at the
end with ``bytes`` + ``crc32c``, default ``/`` chunk keys) itself: it checks the index's checksum, takes an absent
shard file or an empty index entry as the fill value, and copies out the requested frames and points. For any
other layout, or a selection that is not a plain slice, it returns None and the caller reads through zarr, which
stays the reference the tests compare against (tests/test_store.py).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np
from numcodecs import blosc

EMPTY = np.uint64(2**64 - 1)  # an index entry of a chunk that was never written (all fill value)
_pread = os.pread  # every byte this module reads goes through it (bench/loader.py counts them)


@dataclass(frozen=True)
class ShardLayout:
    folder: Path  # the array's folder (its zarr.json and c/)
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: tuple[int, ...]  # frames per shard, then the full extent of every other axis
    chunk: tuple[int, ...]  # 1 frame, points per chunk, then the full extent of every other axis
    fill: object

    @property
    def chunks_per_frame(self) -> int:
        return -(-self.shape[1] // self.chunk[1]) if len(self.shape) > 1 else 1

    def shard_file(self, i: int) -> Path:
        return self.folder.joinpath("c", str(i), *["0"] * (len(self.shape) - 1))


def _supported(meta: dict) -> ShardLayout | None:
    """The layout of an array's ``zarr.json`` when ``read_frames`` can read it, else None."""
    try:
        if meta.get("zarr_format") != 3 or meta.get("storage_transformers"):
            return None
        if meta["chunk_key_encoding"] != {"name": "default", "configuration": {"separator": "/"}}:
            return None
        (codec,) = meta["codecs"]
        if codec["name"] != "sharding_indexed":
            return None
        conf = codec["configuration"]
        inner, index = conf["codecs"], conf["index_codecs"]
        if conf.get("index_location", "end") != "end" or [c["name"] for c in inner] != ["bytes", "blosc"]:
            return None
        if inner[0].get("configuration", {}).get("endian", "little") != "little":
            return None
        if index != [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]:
            return None
        dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        shape = tuple(meta["shape"])
        shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        chunk = tuple(conf["chunk_shape"])
    except (KeyError, TypeError, ValueError):
        return None
    if not shape or shard[1:] != shape[1:] or chunk[0] != 1 or chunk[2:] != shape[2:]:
        return None
    if len(shape) > 1 and shard[1] % chunk[1]:
        return None  # zarr refuses to write such an array; not one of ours
    fill = meta.get("fill_value", 0)
    # plain numbers only (the pipeline's fill is 0 or False); encoded fills ("NaN", hex, complex) go through zarr
    if dtype.kind not in "biuf" or isinstance(fill, str | list | dict):
        return None
    return ShardLayout(Path(), dtype, shape, shard, chunk, fill)


@functools.lru_cache(maxsize=256)
def _layout(folder: str, stamp: tuple[int, int, int]) -> ShardLayout | None:
    """Cached per array folder and its ``zarr.json``'s (inode, mtime, size): a store rebuilt in place (a new file)
    is read anew."""
    path = Path(folder) / "zarr.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable array metadata ({e})") from None
    found = _supported(meta)
    return None if found is None else ShardLayout(Path(folder), found.dtype, found.shape, found.shard, found.chunk,
                                                  found.fill)


def layout(folder: Path) -> ShardLayout | None:
    try:
        st = (Path(folder) / "zarr.json").stat()
    except OSError:
        return None
    return _layout(str(folder), (st.st_ino, st.st_mtime_ns, st.st_size))


def _index(fd: int, path: Path, n: int) -> np.ndarray:
    """The (n, 2) uint64 (offset, bytes) index at the end of a shard file, its crc32c checked."""
    size = os.fstat(fd).st_size
    want = 16 * n + 4
    if size < want:
        raise ValueError(f"{path}: shard file of {size} bytes, shorter than its index ({want} bytes)")
    raw = _pread(fd, want, size - want)
    if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
        raise ValueError(f"{path}: the shard index fails its crc32c checksum (the file is damaged)")
    return np.frombuffer(raw[:-4], dtype="<u8").reshape(n, 2)


def read_frames(folder: Path, frames: slice, points: slice = slice(None), absent_is_fill: bool = True
                ) -> np.ndarray | None:
    """Frames ``frames`` (and points ``points`` along the second axis) of the array stored in ``folder``, exactly as
    zarr reads them; None when the array's layout or the selection is not one this reader handles. An absent shard
    file is the fill value (zarr writes none for a shard that is all fill) unless ``absent_is_fill`` is False
    (a cache, where an absent file was evicted): then FileNotFoundError."""
    lay = layout(folder)
    if lay is None or not isinstance(frames, slice) or not isinstance(points, slice):
        return None
    f0, f1, fs = frames.indices(lay.shape[0])
    if fs != 1:
        return None
    if len(lay.shape) == 1:
        if points != slice(None):
            return None
        p0, p1 = 0, 1
    else:
        p0, p1, ps = points.indices(lay.shape[1])
        if ps != 1:
            return None
    f1, p1 = max(f0, f1), max(p0, p1)
    rest = lay.shape[2:]
    out = np.empty((f1 - f0, *((p1 - p0,) if len(lay.shape) > 1 else ()), *rest), dtype=lay.dtype)
    if out.size == 0:
        return out
    sf, cp, per = lay.shard[0], (lay.chunk[1] if len(lay.shape) > 1 else 1), lay.chunks_per_frame
    chunk_shape = lay.chunk[1:]
    expect = int(np.prod(chunk_shape, dtype=np.int64)) * lay.dtype.itemsize
    for s in range(f0 // sf, (f1 - 1) // sf + 1):
        a, b = max(f0, s * sf), min(f1, (s + 1) * sf)
        path = lay.shard_file(s)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if not absent_is_fill:
                raise
            out[a - f0:b - f0] = lay.fill
            continue
        try:
            index = _index(fd, path, sf * per).reshape(sf, per, 2)
            for f in range(a, b):
                for k in range(p0 // cp, (p1 - 1) // cp + 1):
                    lo, hi = max(p0, k * cp), min(p1, (k + 1) * cp)
                    dst = out[f - f0, lo - p0:hi - p0] if len(lay.shape) > 1 else out[f - f0:f - f0 + 1]
                    offset, nbytes = index[f - s * sf, k]
                    if offset == EMPTY and nbytes == EMPTY:
                        dst[...] = lay.fill
                        continue
                    try:
                        data = blosc.decompress(_pread(fd, int(nbytes), int(offset)))
                    except (RuntimeError, ValueError) as e:
                        raise ValueError(f"{path}: inner chunk {k} of frame {f} does not decode ({e})") from None
                    if len(data) != expect:
                        raise ValueError(f"{path}: inner chunk {k} of frame {f} holds {len(data)} bytes, not {expect}")
                    chunk = np.frombuffer(data, dtype=lay.dtype).reshape(chunk_shape)
                    dst[...] = chunk[lo - k * cp:hi - k * cp] if len(lay.shape) > 1 else chunk
        finally:
            os.close(fd)
    return out
