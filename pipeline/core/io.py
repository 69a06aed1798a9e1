"""Small, careful file helpers: atomic writes, byte-deterministic npz, safe npz/yaml reads."""

from __future__ import annotations

import io
import os
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

_EPOCH = (1980, 1, 1, 0, 0, 0)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file. On object
    storage (a URL path) one PUT writes the object whole."""
    from hipnet.pipeline.core.location import as_path, is_url

    if is_url(path):
        as_path(path).write_bytes(data)
        return
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


def _not_an_archive(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be an archive of ``what`` before numpy sees it (numpy's own fallback text invites the
    user to load it with ``allow_pickle``), or None."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"{path}: cannot open ({e.strerror or e})"
    if size == 0:
        return f"{path}: cannot read as {what}: empty file (0 bytes)"
    return None


# what reading a damaged zip member raises besides ValueError: flag bits that say "encrypted" (RuntimeError) or
# "patched" and versions zipfile does not implement (NotImplementedError), a broken deflate stream (zlib.error)
ZIP_ERRORS = (OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError)
# what numpy raises on an array header it cannot parse (it reads the header as a Python literal)
HEADER_ERRORS = (SyntaxError, TypeError, tokenize.TokenError)


def load_npz(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (all, or those of ``keys`` that it has) without pickle; every error is a
    ValueError naming the file in our words: "not a valid .npz (zip) file", "member X is a pickled object; refused",
    "cannot read as npz (...)" for a damaged member."""
    path = Path(path)
    problem = _not_an_archive(path, "npz")
    if problem is None and not (zipfile.is_zipfile(path) and _starts_like_a_zip(path)):
        problem = f"{path}: cannot read as npz: not a valid .npz (zip) file (truncated, or another format)"
    if problem:
        raise ValueError(problem)
    out = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files if keys is None else [k for k in keys if k in z.files]:
                out[key] = _member(z, key, path)
    except ZIP_ERRORS as e:
        raise ValueError(f"{path}: cannot read as npz ({type(e).__name__}: {one_line(e)})") from e
    except ValueError as e:  # numpy's own words (its fallback to pickle, a damaged header): ours, naming the file
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read as npz ({one_line(e)})") from e
    return out


def _starts_like_a_zip(path: Path) -> bool:
    """numpy decides by the first bytes whether a file is an archive (else it tries pickle): a local file header,
    or an empty archive's end record."""
    with open(path, "rb") as f:
        return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def one_line(e: Exception, limit: int = 200) -> str:
    """An exception's message on one line (some libraries write several), cut at ``limit`` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _member(z, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{path}: member {key} is a pickled object; refused") from None
        raise ValueError(f"{path}: cannot read member {key} ({one_line(e)})") from e
    except HEADER_ERRORS as e:  # a damaged member header numpy cannot parse
        raise ValueError(f"{path}: cannot read member {key} ({type(e).__name__}: {one_line(e)})") from e


def load_npy(path: Path) -> np.ndarray:
    """One ``.npy`` array without pickle; errors name the file in our words (see ``load_npz``)."""
    path = Path(path)
    problem = _not_an_archive(path, "npy")
    if problem:
        raise ValueError(problem)
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError(f"{path}: cannot read as npy: not a .npy file")
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if str(path) in str(e):
            raise
        if "allow_pickle" in str(e):
            raise ValueError(f"{path}: the array is a pickled object; refused") from None
        raise ValueError(f"{path}: cannot read as npy ({one_line(e)})") from e
    except (OSError, EOFError, *HEADER_ERRORS) as e:
        raise ValueError(f"{path}: cannot read as npy ({type(e).__name__}: {one_line(e)})") from e


def read_npz(path: Path, required: Mapping[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file without pickle (``load_npz``); check ``required`` names and shapes.

    ``required`` maps a key to its expected shape, with ``None`` for a free axis. Errors name the file and key.
    """
    path = Path(path)
    out = load_npz(path)
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
