"""The store: its contract (``schema``), creating and writing it (``zarrstore``), reading it (``reading``), its shard hashes
(``integrity``), validation, the quantised codes, direct shard reads, where it lives (a folder or an object-store
URL: ``location``) and the bounded cache of a remote one (``cache``).

The read side's public names are importable from here (``from hipnet.pipeline.store import Store, open_group``);
they load on first use."""

from __future__ import annotations

PUBLIC = {"Store": "reading", "open_group": "zarrstore", "store_exists": "zarrstore", "StoreWriteError": "zarrstore"}


def __getattr__(name: str):
    if name in PUBLIC:
        import importlib

        return getattr(importlib.import_module(f"hipnet.pipeline.store.{PUBLIC[name]}"), name)
    raise AttributeError(f"module 'hipnet.pipeline.store' has no attribute {name!r}")
