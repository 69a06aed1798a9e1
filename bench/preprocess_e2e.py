"""Benchmark: `make preprocess DATASET=anny` end to end, at an earlier commit and now, in one run on one machine.

Both runs execute the command the Makefile runs (``hipnet-data preprocess --dataset anny --root RAW --out OUT
--workers 2 --geodesics per-frame``, then ``hipnet-data validate OUT/*.zarr``) on the same generated raw data: the
current code from this checkout, the previous code from a temporary git worktree of ``--before`` (default:
``BEFORE``, the commit before the faster stages), imported through a package folder of links so both run in this virtual
environment. Data generation is not timed (the raw data exists before both runs; it is the same for both).

Writes bench/results/preprocess_e2e.json: wall seconds of each run (preprocess and validate), frames per split, the
ratio before / now, both commits and the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._results import write_result

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "fdf310d"  # the last commit before the faster preprocessing stages (3ac6d07)
PACKAGE_DIRS = ("pipeline", "model", "cli", "viz", "data_manifests")


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def shim(tree: Path, into: Path) -> Path:
    """A folder holding ``hipnet/`` as links to ``tree``'s package folders: on PYTHONPATH it imports that tree."""
    pkg = into / "hipnet"
    pkg.mkdir(parents=True)
    for d in PACKAGE_DIRS:
        if (tree / d).is_dir():
            (pkg / d).symlink_to(tree / d)
    return into


def preprocess(raw: Path, out: Path, workers: int, geodesics: str, pythonpath: Path | None) -> dict:
    """Time the Makefile's preprocess and validate commands with the code on ``pythonpath`` (None: this checkout)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cli = [sys.executable, "-m", "hipnet.cli.data"]
    t = time.perf_counter()
    subprocess.run([*cli, "preprocess", "--dataset", "anny", "--root", str(raw), "--out", str(out), "--workers",
                    str(workers), "--geodesics", geodesics], check=True, env=env, cwd=pythonpath or ROOT)
    t_pre = time.perf_counter() - t
    stores = sorted(str(p) for p in out.glob("*.zarr"))
    t = time.perf_counter()
    subprocess.run([*cli, "validate", *stores], check=True, env=env, cwd=pythonpath or ROOT)
    t_val = time.perf_counter() - t
    return {"preprocess_s": round(t_pre, 1), "validate_s": round(t_val, 1), "wall_s": round(t_pre + t_val, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default=BEFORE, help="commit of the previous code (default: %(default)s)")
    p.add_argument("--raw", type=Path, default=ROOT / "data" / "raw" / "anny",
                   help="the embedded dataset (default: data/raw/anny, generated with `hipnet-data anny` if absent)")
    p.add_argument("--workers", type=int, default=2, help="as the Makefile's WORKERS (default: %(default)s)")
    p.add_argument("--geodesics", default="per-frame", help="as the Makefile's GEODESICS (default: %(default)s)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its worktree (finally)
    args.raw = args.raw.resolve()  # the previous code runs in its worktree's folder

    if not (args.raw / "dataset.yaml").exists():
        subprocess.run([sys.executable, "-m", "hipnet.cli.data", "anny", "--out", str(args.raw)], check=True)
    from hipnet.pipeline.readers.anny import AnnyReader

    frames = {s: len(AnnyReader(args.raw, (s,)).frame_refs()) for s in ("train", "test", "heldout")}
    before = git("rev-parse", "--short", args.before)
    git("worktree", "prune")  # a worktree of an interrupted run, whose folder is gone
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = tmp / "before"
        git("worktree", "add", "--detach", str(tree), before)
        try:
            now = preprocess(args.raw, tmp / "out_now", args.workers, args.geodesics, None)
            shutil.rmtree(tmp / "out_now")
            then = preprocess(args.raw, tmp / "out_before", args.workers, args.geodesics, shim(tree, tmp / "path"))
        finally:
            git("worktree", "remove", "--force", str(tree))
    write_result("preprocess_e2e", {
        "command": f"hipnet-data preprocess --dataset anny --workers {args.workers} --geodesics {args.geodesics}, "
                   "then hipnet-data validate (what `make preprocess DATASET=anny` runs after generating the data)",
        "frames": frames,
        "before": {"commit": before, **then},
        "now": {"commit": git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain") else ""),
                **now},
        "speedup_vs_before": round(then["wall_s"] / now["wall_s"], 3),
    })


if __name__ == "__main__":
    main()
