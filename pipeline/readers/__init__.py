"""Dataset readers. Each yields ``pipeline.frames.Frame`` objects; adding a dataset is one module and one entry.

``hipnet-data preprocess --dataset D`` takes a reader name (``anny``, ``generic``: their folders carry their own
split) or a manifest (a name in ``data_manifests/`` such as ``amass_cmu``, or a YAML path) whose ``reader`` key
names the reader that reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hipnet.pipeline.manifest import SPLITS, load_manifest
from hipnet.pipeline.readers.amass import AmassReader
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.readers.cape import CapeReader
from hipnet.pipeline.readers.dfaust import open_dfaust
from hipnet.pipeline.readers.generic import GenericReader

READERS = {"anny": AnnyReader, "generic": GenericReader, "amass": AmassReader, "dfaust": open_dfaust,
           "cape": CapeReader}
SELF_DESCRIBED = ("anny", "generic")  # their raw folders hold subjects, sequences and splits


def open_reader(dataset: str, root: Path, splits: Iterable[str] = SPLITS, body_models: Path | None = None,
                strict: bool = True):
    """A reader for ``dataset`` (a reader name or a manifest name/path) over the raw folder ``root``."""
    if dataset in SELF_DESCRIBED:
        return READERS[dataset](root, splits)
    try:
        manifest = load_manifest(dataset)
    except FileNotFoundError:
        if dataset in READERS:
            raise ValueError(f"the {dataset} reader needs a manifest: pass one of its manifests in data_manifests/ "
                             "(amass_transitions, amass_cmu, dfaust, dfaust_snarf, dfaust_poseprior, cape) or a "
                             "YAML path as --dataset") from None
        raise
    kind = manifest.get("reader", manifest["dataset"])
    if kind not in READERS or kind in SELF_DESCRIBED:
        raise ValueError(f"manifest {dataset}: reader {kind!r} is not one of {sorted(set(READERS) - set(SELF_DESCRIBED))}")
    return READERS[kind](root, splits, manifest=dataset, body_models=body_models, strict=strict)
