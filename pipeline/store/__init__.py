"""The store: its contract (``schema``), creating, writing and reading it (``zarrstore``), its shard hashes
(``integrity``), validation, the quantised codes, direct shard reads, where it lives (a folder or an object-store
URL: ``location``) and the bounded cache of a remote one (``cache``).

The read side's public names are importable from here (``from hipnet.pipeline.store import Store, open_group``);
they load on first use."""

from __future__ import annotations

PUBLIC = ("Store", "open_group", "store_exists", "StoreWriteError")


def __getattr__(name: str):
    if name in PUBLIC:
        from hipnet.pipeline.store import zarrstore

        return getattr(zarrstore, name)
    raise AttributeError(f"module 'hipnet.pipeline.store' has no attribute {name!r}")
