"""Whether a store can be read with a checkpoint: the same store schema version and the same skeleton.

The network has one sub-network per joint, in the skeleton's order, and reads the joint transforms of a store by
position: a store whose joints are renamed, reordered or re-parented would feed a joint's transform to another
joint's sub-network (a body with a leg cut off) without any error. ``hipnet-eval``, ``hipnet-fit``,
``hipnet-sample`` and ``hipnet-animate`` open every store through ``open_compatible`` and refuse such stores with
one line that names the store, the checkpoint and what differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hipnet.pipeline.core.location import as_path
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import SPECS
from hipnet.pipeline.store.zarrstore import open_group


def _names(xs) -> str:
    return ", ".join(xs)


def skeleton_difference(expected: Mapping, got: Mapping) -> str | None:
    """What differs between two skeletons given as store attrs (``{"names": [...], "parents": [...]}``),
    ``expected`` the checkpoint's: the joint names (which), their order (the first position that differs) or the
    parents (which joints' parents, by name); None when they are the same."""
    a, b = list(expected["names"]), list(got["names"])
    if set(a) != set(b) or len(a) != len(b):
        only_a, only_b = [n for n in a if n not in b], [n for n in b if n not in a]
        parts = [f"{len(a)} vs {len(b)} joints"] if len(a) != len(b) else []
        parts += [f"only the checkpoint has {_names(only_a)}"] if only_a else []
        parts += [f"only the store has {_names(only_b)}"] if only_b else []
        return "joint names differ: " + "; ".join(parts)
    if a != b:
        k = next(k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        return f"joint order differs from position {k}: the checkpoint has {a[k]}, the store {b[k]}"

    def parent(names, p):
        return "none" if p < 0 else names[p]

    pa, pb = [int(p) for p in expected["parents"]], [int(p) for p in got["parents"]]
    moved = [f"{a[j]} (checkpoint {parent(a, x)}, store {parent(b, y)})"
             for j, (x, y) in enumerate(zip(pa, pb, strict=True)) if x != y]
    return "parents differ: " + ", ".join(moved) if moved else None


def check_store_compatible(ckpt: Mapping, checkpoint: Path | str, store_path: Path | str, attrs: Mapping) -> None:
    """Refuse (ValueError, one line naming the store and the checkpoint) a store whose root ``attrs`` record
    another schema version or another skeleton than the checkpoint dict ``ckpt`` (``load_checkpoint``)."""
    theirs, ours = attrs.get("schema_version"), ckpt.get("schema_version")
    if theirs != ours:
        raise ValueError(f"{store_path}: store schema_version {theirs!r} differs from checkpoint {checkpoint}'s "
                         f"schema_version {ours!r}; preprocess the data again or use a matching checkpoint")
    diff = skeleton_difference(ckpt["skeleton"], attrs["skeleton"])
    if diff is not None:
        raise ValueError(f"{store_path}: skeleton differs from checkpoint {checkpoint}'s: {diff}")


def open_compatible(ckpt: Mapping, checkpoint: Path | str, path: Path | str,
                    arrays: Sequence[str] | None = None) -> Store:
    """``Store.open`` after ``check_store_compatible`` on the store's raw attributes (so a store of another schema
    version is named as such, against the checkpoint's). ``arrays``: what the caller may read, those of the store's
    sections are checked (their dtypes, shapes and shard files); None: every array."""
    attrs = dict(open_group(as_path(path)).attrs)
    check_store_compatible(ckpt, checkpoint, path, attrs)
    if arrays is not None:
        sections = attrs.get("sections", [])
        arrays = [a for a in arrays if a not in SPECS or SPECS[a].section in sections]
    return Store.open(as_path(path), arrays=arrays)


@dataclass
class StoreOpener:
    """Opens stores for one checkpoint, each path once, refusing incompatible ones: pass it where a function
    ``path -> Store`` is taken (``hipnet.model.specs``)."""

    ckpt: Mapping
    checkpoint: Path | str
    arrays: Sequence[str] | None = None  # what the caller reads (``open_compatible``); None: every array
    _stores: dict[str, Store] = field(default_factory=dict)

    def __call__(self, path: Path | str) -> Store:
        key = str(as_path(path))
        if key not in self._stores:
            self._stores[key] = open_compatible(self.ckpt, self.checkpoint, as_path(path), self.arrays)
        return self._stores[key]
