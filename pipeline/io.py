"""Small, careful file helpers: atomic writes, byte-deterministic npz, safe npz/yaml reads."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

_EPOCH = (1980, 1, 1, 0, 0, 0)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def npz_bytes(arrays: Mapping[str, np.ndarray], compress: bool = True) -> bytes:
    """An ``.npz`` archive whose bytes depend only on the arrays (fixed timestamps, sorted names).

    ``np.savez`` stamps each member with the current time, so two identical runs differ byte-wise.
    """
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_npz(path: Path, arrays: Mapping[str, np.ndarray], compress: bool = True) -> None:
    atomic_write_bytes(path, npz_bytes(arrays, compress))


def read_npz(path: Path, required: Mapping[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file without pickle; check ``required`` names and shapes.

    ``required`` maps a key to its expected shape, with ``None`` for a free axis. Errors name the file and key.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: cannot read as npz ({type(e).__name__}: {e})") from e
    for key, shape in (required or {}).items():
        if key not in out:
            raise ValueError(f"{path}: missing key {key!r} (has {sorted(out)})")
        got = out[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got, strict=True)):
            raise ValueError(f"{path}: key {key!r} has shape {got}, expected {shape}")
    return out


def write_yaml(path: Path, data) -> None:
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())


def read_yaml(path: Path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
