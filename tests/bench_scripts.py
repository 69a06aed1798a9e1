"""The benchmarks' modules for the tests: ``bench`` is a package run from the repository root (``python -m
bench.NAME``), so the tests import it from there."""

from __future__ import annotations

import importlib


def load_bench(name: str):
    """The module ``bench.<name>``."""
    return importlib.import_module(f"bench.{name}")
