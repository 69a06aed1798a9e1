"""Click parameter types shared by the commands."""

from __future__ import annotations

import click


class StoreLocation(click.ParamType):
    """A store or output location: a local path (checked to exist when ``exists``) or an object-store URL
    (``s3://bucket/prefix``, checked when it is used). Converts to ``pathlib.Path`` or ``upath.UPath``
    (``pipeline.location.as_path``)."""

    name = "PATH|URL"

    def __init__(self, exists: bool = False) -> None:
        self.exists = exists

    def convert(self, value, param, ctx):
        from hipnet.pipeline.location import as_path, is_url

        if not isinstance(value, str):
            return value
        path = as_path(value)
        if self.exists and not is_url(path) and not path.exists():
            self.fail(f"{value}: no such folder", param, ctx)
        return path


STORE = StoreLocation(exists=True)
OUTPUT = StoreLocation()
