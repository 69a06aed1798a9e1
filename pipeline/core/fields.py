"""Documented configuration fields: the one mechanism every command's options come from.

A configuration is a frozen dataclass whose fields are made with ``doc(default, text)``: the default lives there
and nowhere else, and the text is the option's help. ``hipnet.cli.params.config_options`` turns the fields into
click options (type from the annotation: ``Literal`` choices, ``bool`` flags, ``int | None``), so a command states no
default of its own; ``tests/test_config_options.py`` fails when one does. Closed choices are ``Literal`` types,
checked by ``check_choices`` in the dataclass's ``__post_init__``.
"""

from __future__ import annotations

import functools
from dataclasses import field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints


def doc(default: Any, text: str) -> Any:
    """A dataclass field with a default and its help text (``metadata["doc"]``, the CLI's help)."""
    return field(default=default, metadata={"doc": text})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def field_type(cls: type, name: str) -> Any:
    """The resolved annotation of field ``name`` of dataclass ``cls`` (``int | None``, a ``Literal``, ...)."""
    return _hints(cls)[name]


def field_doc(cls: type, name: str) -> str:
    """The help text of field ``name`` of dataclass ``cls``."""
    return next(f.metadata.get("doc", "") for f in fields(cls) if f.name == name)


def defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of dataclass ``cls``."""
    return {f.name: f.default for f in fields(cls)}


def check_choices(obj: Any) -> None:
    """Raise ``ValueError`` when a ``Literal``-typed field of the dataclass ``obj`` holds a value outside it."""
    for name, hint in _hints(type(obj)).items():
        if get_origin(hint) is Literal and getattr(obj, name) not in get_args(hint):
            raise ValueError(f"{name} must be one of {', '.join(map(repr, get_args(hint)))}, "
                             f"got {getattr(obj, name)!r}")
