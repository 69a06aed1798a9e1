"""Where a store lives: a local folder (``pathlib.Path``) or an object-store URL (``s3://bucket/prefix/train.zarr``,
any fsspec protocol, as a ``upath.UPath``).

Every command that takes a store path takes either. Local paths keep their own code paths (and speed); a URL goes
through fsspec, with credentials and the endpoint from the usual places (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for an S3-compatible server, ``~/.aws``; or fsspec's
``FSSPEC_S3_*`` variables). Object stores differ from a filesystem in two ways the pipeline relies on:

- there is no rename: a store on object storage is created in place and is visible as a store only once its root
  ``zarr.json`` carries the identity attributes (written last; one PUT is atomic), see ``pipeline.store.zarrstore``;
- every object is written whole by one PUT, so a killed writer leaves no torn or temporary file behind, and a
  conditional PUT (``If-None-Match: *``) gives the writer lock its "create only if absent".
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

LOCAL_PROTOCOLS = ("", "file", "local")


def is_url(p: object) -> bool:
    """Whether ``p`` names an object-store location (``proto://...`` other than ``file://``)."""
    if hasattr(p, "protocol"):
        return p.protocol not in LOCAL_PROTOCOLS
    if isinstance(p, PurePath):
        return False
    text = str(p)
    return "://" in text and text.split("://", 1)[0] not in LOCAL_PROTOCOLS


def as_path(p: str | os.PathLike) -> Path:
    """``p`` as a path object: a ``Path`` for a local path (``file://`` stripped), a ``UPath`` for a URL. Both
    support ``/``, ``name``, ``parent``, ``with_name``, ``exists`` and ``read_text``; what differs is in this module."""
    if is_url(p):
        from upath import UPath

        # listings are not cached: other processes (a cluster's workers) write the store while this one reads it
        return p if hasattr(p, "protocol") else UPath(str(p).rstrip("/"), use_listings_cache=False)
    text = str(p)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def fs_path(p: Path) -> tuple[object, str]:
    """(fsspec filesystem, path within it) of a URL path."""
    return p.fs, p.path


def url(p: Path) -> str:
    """The string zarr and fsspec open: the URL of a remote path, the path of a local one."""
    return str(p)


def file_size(p: Path) -> int:
    """Bytes of the file ``p``; 0 when there is none."""
    try:
        if is_url(p):
            fs, path = fs_path(p)
            return int(fs.size(path))
        return os.stat(p).st_size
    except FileNotFoundError:
        return 0


def sizes_under(root: Path) -> dict[str, int]:
    """``{relative key: bytes}`` of every file under ``root``: one listing of a remote prefix (a HEAD per object
    would be one round trip each), a walk of a local folder."""
    if is_url(root):
        fs, base = fs_path(root)
        base = base.rstrip("/")
        found = fs.find(base, detail=True)
        return {k[len(base) + 1:]: int(v["size"]) for k, v in found.items() if v.get("type", "file") == "file"}
    root = Path(root)
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def glob_paths(pattern: str) -> list[Path]:
    """Paths matching ``pattern`` (``*``, ``?``, ``[...]``), local or remote, sorted."""
    import glob

    if is_url(pattern):
        base = as_path(pattern)
        return [as_path(base.fs.unstrip_protocol(m)) for m in sorted(base.fs.glob(base.path))]
    return [Path(m) for m in sorted(glob.glob(pattern))]


def create_exclusive(p: Path, data: bytes) -> bool:
    """Write ``data`` to ``p`` only if no file is there (``O_CREAT | O_EXCL``; a conditional PUT on object
    storage); False when one is."""
    if is_url(p):
        fs, path = fs_path(p)
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True
    try:
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def modified(p: Path) -> float:
    """Modification time (seconds since the epoch) of the file ``p``."""
    if is_url(p):
        fs, path = fs_path(p)
        return fs.modified(path).timestamp()
    return p.stat().st_mtime


def touch(p: Path) -> None:
    """Refresh ``p``'s modification time (an object is rewritten with its own content)."""
    if is_url(p):
        fs, path = fs_path(p)
        fs.pipe_file(path, fs.cat_file(path))
    else:
        os.utime(p)


def remove(p: Path) -> None:
    """Delete the file ``p`` if it is there."""
    if is_url(p):
        fs, path = fs_path(p)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass
    else:
        Path(p).unlink(missing_ok=True)


def remove_tree(p: Path) -> None:
    """Delete the folder (or prefix) ``p`` and everything under it."""
    if is_url(p):
        fs, path = fs_path(p)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    else:
        import shutil

        shutil.rmtree(p)


def make_folder(p: Path) -> None:
    """Create the folder ``p`` (a no-op on object storage, where prefixes exist with their objects)."""
    if not is_url(p):
        Path(p).mkdir(parents=True, exist_ok=True)
