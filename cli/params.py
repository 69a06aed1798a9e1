"""Click parameter types shared by the commands."""

from __future__ import annotations

import click


class StoreLocation(click.ParamType):
    """A store or output location: a local path (checked to exist when ``exists``) or an object-store URL
    (``s3://bucket/prefix``, checked when it is used). Converts to ``pathlib.Path`` or ``upath.UPath``
    (``pipeline.core.location.as_path``)."""

    name = "PATH|URL"

    def __init__(self, exists: bool = False) -> None:
        self.exists = exists

    def convert(self, value, param, ctx):
        from hipnet.pipeline.core.location import as_path, is_url

        if not isinstance(value, str):
            return value
        path = as_path(value)
        if self.exists and not is_url(path) and not path.exists():
            self.fail(f"{value}: no such folder", param, ctx)
        return path


STORE = StoreLocation(exists=True)
OUTPUT = StoreLocation()


def _click_type(hint):
    """The click type of a field annotation: a Choice for a ``Literal``, the plain type of ``int | None``."""
    import types
    from typing import Literal, get_args, get_origin

    if get_origin(hint) is Literal:
        return click.Choice(get_args(hint))
    if get_origin(hint) in (types.UnionType,):
        hint = next(a for a in get_args(hint) if a is not type(None))
    if hint not in (int, float, str, bool):
        raise TypeError(f"no command-line type for {hint!r}")
    return hint


def config_options(cls: type, names=None, *, flags: dict[str, str] | None = None, prefix: str = "",
                   with_defaults: bool = True, note_default: bool = True):
    """Decorator adding one ``--option`` per field of the config dataclass ``cls`` (those in ``names``, default
    all; ``pipeline.core.fields``): its type and help from the field, its flag ``--field-name`` unless ``flags`` names
    another, its parameter ``prefix + field``. ``with_defaults``: the field's default, shown in the help;
    otherwise None, so that the command knows what was given (with ``note_default``, the help still names the
    field's default; without, the option overrides a preset's value). A ``bool`` field is a flag (``--x/--no-x``
    when it defaults to True)."""
    from dataclasses import MISSING, fields

    from hipnet.pipeline.core.fields import field_type

    chosen = [f for f in fields(cls) if names is None or f.name in names]
    flags = flags or {}

    def decorate(fn):
        for f in reversed(chosen):
            flag = flags.get(f.name) or "--" + f.name.replace("_", "-")
            hint = _click_type(field_type(cls, f.name))
            default = f.default if with_defaults and f.default is not MISSING else None
            text = f.metadata.get("doc", "")
            if not with_defaults and note_default and f.default is not MISSING:
                text += f" [default: {f.default}]"
            if hint is bool and with_defaults:
                decl = f"{flag}/--no-{flag[2:]}" if default else flag
                fn = click.option(decl, prefix + f.name, is_flag=True, default=bool(default), help=text)(fn)
                continue
            shown = with_defaults and default is not None
            fn = click.option(flag, prefix + f.name, type=hint, default=default, show_default=shown, help=text)(fn)
        return fn

    return decorate


def pick(cls: type, values: dict, prefix: str = "", given_only: bool = False) -> dict:
    """The entries of ``values`` (a command's parameters) that are fields of ``cls`` (named ``prefix + field``),
    removed from ``values``, as keyword arguments of ``cls``; ``given_only`` drops those that are None."""
    from dataclasses import fields

    out = {f.name: values.pop(prefix + f.name) for f in fields(cls) if prefix + f.name in values}
    return {k: v for k, v in out.items() if v is not None} if given_only else out
