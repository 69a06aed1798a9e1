"""Dataset readers and their registry.

Every reader implements ``pipeline.readers.base.Reader`` (frame refs, subjects, loading, checks; typed
``ReaderInfo``). ``hipnet-data preprocess --dataset D`` takes a reader name (``anny``, ``generic``: their folders
carry their own split) or a manifest (a name in ``data_manifests/`` such as ``amass_cmu``, or a YAML path) whose
``reader`` key names the reader that reads it.

Adding a dataset:

1. one module here, ``pipeline/readers/<name>.py``, with a ``Reader`` subclass (or a function returning one, as
   ``open_dfaust`` picks one of two) taking ``(root, splits, manifest=None, body_models=None, strict=True)``;
   manifest-driven sources subclass ``ManifestReader`` (``pipeline.readers.common``);
2. one entry in ``READERS`` below;
3. one manifest in ``data_manifests/`` (``reader: <name>``) when the raw folder does not describe its own split;
4. one test, ``tests/test_readers_<name>.py``, on tiny files in the source's layout, through ``preprocess``;
5. one row in the README's reader table.

The runner and the CLI need nothing else: they call only what ``Reader`` declares.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from hipnet.pipeline.readers.amass import AmassReader
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.readers.base import Reader
from hipnet.pipeline.readers.cape import CapeReader
from hipnet.pipeline.readers.dfaust import open_dfaust
from hipnet.pipeline.readers.generic import GenericReader
from hipnet.pipeline.sources.manifest import SPLITS, load_manifest


class OpenReader(Protocol):
    """What a registry entry is: a callable (a ``Reader`` class or a function) that opens a raw folder."""

    def __call__(self, root: Path, splits: Iterable[str] = SPLITS, manifest: str | Path | None = None,
                 body_models: Path | None = None, strict: bool = True) -> Reader: ...


READERS: dict[str, OpenReader] = {"anny": AnnyReader, "generic": GenericReader, "amass": AmassReader,
                                  "dfaust": open_dfaust, "cape": CapeReader}


def open_reader(dataset: str, root: Path, splits: Iterable[str] = SPLITS, body_models: Path | None = None,
                strict: bool = True) -> Reader:
    """A reader for ``dataset`` (a reader name or a manifest name/path) over the raw folder ``root``.

    A reader name opens that reader with its default manifest, if it has one (``dfaust``, ``cape``); a manifest
    opens the reader its ``reader`` key names (default: its ``dataset``)."""
    if dataset in READERS:
        return READERS[dataset](root, splits, body_models=body_models, strict=strict)
    manifest = load_manifest(dataset)
    kind = manifest.get("reader", manifest["dataset"])
    if kind not in READERS:
        raise ValueError(f"manifest {dataset}: reader {kind!r} is not one of {sorted(READERS)}")
    return READERS[kind](root, splits, manifest=dataset, body_models=body_models, strict=strict)
