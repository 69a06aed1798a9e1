"""A bounded local cache of a remote store's shard files, checked against the store's shard hashes.

A store on object storage is read through a local mirror: the same folder layout (each array's ``zarr.json`` and
the shard files ``<array>/c/<shard>/0/...``), filled one shard file at a time as readers ask for frames, so that
``pipeline.store.shardread`` reads it exactly as it reads a local store. A shard file is downloaded into a staging folder,
decoded, its content hashed and compared with the store's shard index (``pipeline.store.integrity``), and only then moved
into the mirror (a rename): the mirror never holds a file that does not match the index. A store rebuilt on the
server has other hashes and gets another mirror folder (the folder name includes a digest of the shard index).

The cache is bounded (``HIPNET_CACHE_BYTES``, default 20 GiB): when a process's count of the cache's bytes (its
last walk of the cache plus its own downloads since) passes the limit, and every ``WALK_EVERY`` downloads, the
least recently used shard files of every mirror are deleted until the cache fits. Several processes filling one
cache at once can pass the limit by what the others downloaded since their last walks.

``prefetch`` downloads shard files in background threads while the reader works on earlier ones, so a reader that
prefetches a few shards ahead never waits on the network once its shards are cached (``bench/s3.py`` measures cold
and warm reads). Several processes (the DataLoader's
workers) may share a mirror: every placement is an atomic rename of a verified file, and a file deleted while it
is being read stays readable to the reader that opened it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.location import as_path
from hipnet.pipeline.store.schema import SPECS, content_hash, frames_text, shard_key

DEFAULT_BYTES = 20 * 2**30
PREFETCH_THREADS = 4
WALK_EVERY = 64  # downloads between two walks of the cache when this process's own count is within the limit


def cache_root() -> Path:
    """``HIPNET_CACHE`` or ``~/.cache/hipnet/shards``."""
    env = os.environ.get("HIPNET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hipnet" / "shards"


def cache_limit() -> int:
    """``HIPNET_CACHE_BYTES`` (bytes, a plain integer) or 20 GiB."""
    env = os.environ.get("HIPNET_CACHE_BYTES")
    try:
        return int(env) if env else DEFAULT_BYTES
    except ValueError:
        raise ValueError(f"HIPNET_CACHE_BYTES={env!r} is not a number of bytes") from None


class CacheError(ValueError):
    """A shard file on the server does not match the store's shard index."""


class ShardCache:
    """The local mirror of one remote store (``url``, its shard index ``index``, its frame count and shard size)."""

    def __init__(self, url: str, index: dict, n_frames: int, shard_frames: int, root: Path | None = None,
                 limit: int | None = None) -> None:
        self.url, self.index, self.n_frames, self.shard_frames = url, index, n_frames, shard_frames
        self.root = Path(root) if root is not None else cache_root()
        self.limit = cache_limit() if limit is None else limit
        digest = hashlib.sha256(json.dumps([url, index], sort_keys=True).encode()).hexdigest()[:16]
        self.mirror = self.root / digest
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.downloaded = 0  # bytes this process fetched from the server
        self._estimate: int | None = None  # the cache's bytes as of the last walk, plus this process's downloads
        self._since_walk = 0

    @property
    def remote(self) -> Path:
        """The store's URL path, made anew in each process: a filesystem's connections do not survive a fork (the
        DataLoader's workers)."""
        if getattr(self, "_remote_pid", None) != os.getpid():
            self._remote, self._remote_pid = as_path(self.url), os.getpid()
        return self._remote

    # ----------------------------------------------------------------------------------------- what is where

    def read(self, name: str, frames: slice, points: slice = slice(None)) -> np.ndarray | None:
        """Frames ``frames`` (and ``points``) of array ``name`` from the mirror (``shardread.read_frames``), each
        shard file downloaded and checked first if it is not there. Read shard by shard: a file evicted between
        its check and its read (by this process's prefetch or another process) is fetched again, never taken for
        the fill value."""
        from hipnet.pipeline.store.shardread import read_frames

        f0, f1, step = frames.indices(self.n_frames)
        if step != 1:
            return None
        self._metadata(name, self.mirror)
        blocks = []
        for i in self.shards_of(name, frames):
            part = slice(max(f0, i * self.shard_frames), min(f1, (i + 1) * self.shard_frames)) \
                if SPECS[name].per_frame else frames
            size, _ = self.entry(name, i)
            for attempt in range(3):
                self.ensure(name, i)
                try:
                    block = read_frames(self.mirror / name, part, points, absent_is_fill=not size)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
            if block is None:
                return None
            blocks.append(block)
        if not blocks:  # no frames asked for
            return read_frames(self.mirror / name, frames, points)
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

    def shards_of(self, name: str, frames: slice) -> range:
        if not SPECS[name].per_frame:
            return range(1)
        f0, f1, _ = frames.indices(self.n_frames)
        return range(f0 // self.shard_frames, (max(f0, f1 - 1)) // self.shard_frames + 1) if f1 > f0 else range(0)

    def entry(self, name: str, shard: int) -> tuple[int, str]:
        entries = self.index["arrays"].get(name)
        if entries is None or shard >= len(entries):
            raise CacheError(f"{self.url}: {name} shard {shard} is not in the shard index")
        size, digest = entries[shard]
        return int(size), digest

    def cached(self, name: str, shard: int) -> bool:
        size, _ = self.entry(name, shard)
        local = self.mirror / shard_key(SPECS[name], shard)
        return not size or (local.exists() and local.stat().st_size == size)

    # ----------------------------------------------------------------------------------------------- fetching

    def ensure(self, name: str, shard: int) -> None:
        """Shard ``shard`` of ``name`` in the mirror: waits for a prefetch of it, or downloads it now."""
        key = f"{name}#{shard}"
        with self._lock:
            pending = self._pending.get(key) if self._pid == os.getpid() else None
        if pending is not None:
            pending.result()
        if not self.cached(name, shard):
            self._fetch(name, shard)
        local = self.mirror / shard_key(SPECS[name], shard)
        if local.exists():  # the time of last use, which ``trim`` evicts by
            os.utime(local)

    def prefetch(self, items: Iterable[tuple[str, int]]) -> None:
        """Start downloading the shard files ``(array, shard)`` not in the mirror yet, in background threads."""
        if self._pid != os.getpid() or self._pool is None:  # a forked loader worker gets threads of its own
            self._pool, self._pending, self._pid = ThreadPoolExecutor(PREFETCH_THREADS), {}, os.getpid()
        with self._lock:
            for name, shard in items:
                key = f"{name}#{shard}"
                if key in self._pending and not self._pending[key].done():
                    continue
                if not self.cached(name, shard):
                    self._pending[key] = self._pool.submit(self._fetch, name, shard)

    def _metadata(self, name: str, folder: Path) -> None:
        meta = folder / name / "zarr.json"
        if not meta.exists():
            meta.parent.mkdir(parents=True, exist_ok=True)
            tmp = meta.with_name(f".zarr.json.{uuid.uuid4().hex}")
            tmp.write_bytes((self.remote / name / "zarr.json").read_bytes())
            os.replace(tmp, meta)

    def _fetch(self, name: str, shard: int) -> None:
        """Download one shard file into a staging mirror, check its size and content hash against the index, move
        it into the mirror, then trim the cache to its limit."""
        from hipnet.pipeline.store.shardread import read_frames

        size, digest = self.entry(name, shard)
        if not size:
            return
        key = shard_key(SPECS[name], shard)
        data = (self.remote / key).read_bytes()
        self.downloaded += len(data)
        where = f"{self.url}: {name} shard {shard}" + (
            f" ({frames_text(shard, self.n_frames, self.shard_frames)})" if SPECS[name].per_frame else "")
        if len(data) != size:
            raise CacheError(f"{where} has {len(data)} bytes on the server, the shard index says {size} (altered or "
                             "truncated); the store is damaged: rebuild it")
        stage = self.mirror / ".incoming" / uuid.uuid4().hex
        try:
            self._metadata(name, stage)
            staged = stage / key
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(data)
            frames = slice(shard * self.shard_frames, (shard + 1) * self.shard_frames) if SPECS[name].per_frame \
                else slice(None)
            try:
                block = read_frames(stage / name, frames)
            except ValueError as e:
                raise CacheError(f"{where} does not decode ({e}); the store is damaged: rebuild it") from None
            if block is not None and content_hash(np.ascontiguousarray(block)) != digest:
                raise CacheError(f"{where}: content differs from its hash in the shard index (altered on the "
                                 "server); the store is damaged: rebuild it")
            self._metadata(name, self.mirror)
            final = self.mirror / key
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
        finally:
            import shutil

            shutil.rmtree(stage, ignore_errors=True)
        self._since_walk += 1
        if self._estimate is not None:
            self._estimate += size
        # walking the cache costs a stat per file: done when this process's count says the limit may be passed,
        # and every WALK_EVERY downloads to count what other processes added
        if self._estimate is None or self._estimate > self.limit or self._since_walk >= WALK_EVERY:
            self.trim()

    # ------------------------------------------------------------------------------------------------ bounding

    def trim(self) -> None:
        """Delete the least recently used shard files (of every mirror under the cache root) until the cache is
        within its limit."""
        files = []
        for folder, subfolders, names in os.walk(self.root):  # other processes add and remove files meanwhile
            subfolders[:] = [d for d in subfolders if d != ".incoming"]
            for name in names:
                if name == "zarr.json" or name.startswith("."):
                    continue
                try:
                    st = os.stat(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                files.append((st.st_mtime, st.st_size, Path(folder, name)))
        total = sum(s for _, s, _ in files)
        for _, s, f in sorted(files):
            if total <= self.limit:
                break
            f.unlink(missing_ok=True)
            total -= s
        self._estimate, self._since_walk = total, 0

    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.mirror.rglob("*") if f.is_file()) if self.mirror.exists() else 0
