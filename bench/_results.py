"""Shared by the benchmarks: the machine a figure was measured on, and writing bench/results/NAME.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).parent / "results"  # bench/results/: every figure the README and the docs quote


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def commit() -> str:
    """The short hash of this checkout's HEAD ("unknown" outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_result(name: str, result: dict) -> Path:
    """Print ``result`` (with the machine added) and write it to bench/results/<name>.json."""
    result = {"machine": machine(), **result}
    text = json.dumps(result, indent=2)
    print(text)
    out = RESULTS / f"{name}.json"
    out.write_text(text + "\n")
    print(f"wrote {out}")
    return out
