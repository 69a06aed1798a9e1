"""Import a script of ``bench/`` (they are scripts, not a package) so that tests can call its functions and main."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str):
    """``bench/<name>.py`` as a module, registered in ``sys.modules`` (dataclasses look their module up there while a
    class is built) with ``bench/`` on the path for the script's own imports of its neighbours."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
