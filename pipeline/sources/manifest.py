"""Dataset manifests: the YAML files in ``data_manifests/`` that fix subjects, sequences and splits.

A manifest is decided once and committed; nothing about a split is decided at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from hipnet.pipeline.core.io import read_yaml

SPLITS = ("train", "test", "heldout")


def manifest_path(name_or_path: str | Path) -> Path:
    """A manifest file: a path that exists, or the name of one shipped in ``data_manifests/``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    spec = importlib.util.find_spec("hipnet.data_manifests")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        shipped = Path(folder) / f"{name_or_path}.yaml"
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(f"no manifest {name_or_path!r}: not a YAML file and not in data_manifests/")


def load_manifest(name_or_path: str | Path) -> dict:
    path = manifest_path(name_or_path)
    m = read_yaml(path)
    for key in ("dataset", "subjects", "sequences"):
        if key not in m:
            raise ValueError(f"{path}: manifest lacks the key {key!r}")
    check_split(m, where=str(path))
    return m


def check_split(manifest: dict, where: str = "manifest") -> None:
    """Every sequence belongs to a known subject and exactly one split; names are unique."""
    subjects = {s["name"] for s in manifest["subjects"]}
    seen = set()
    for seq in manifest["sequences"]:
        key = (seq["subject"], seq["name"])
        if seq["subject"] not in subjects:
            raise ValueError(f"{where}: sequence {key} names an unknown subject")
        if seq["split"] not in SPLITS:
            raise ValueError(f"{where}: sequence {key} has split {seq['split']!r}, not one of {SPLITS}")
        if key in seen:
            raise ValueError(f"{where}: sequence {key} is listed twice")
        seen.add(key)


def manifest_hash(manifest: dict) -> str:
    """A stable hash of the manifest's content (key order independent)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
