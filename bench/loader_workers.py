"""Benchmark: the ``fast`` preset's training steps with batches made in a loader worker process against in the
training process (``loader_workers`` 1 against 0).

Both give the same batches (one stream; ``tests/test_train.py`` checks it batch for batch, and this script checks
that the two runs log the same losses). On 2 cores the question is only whether a worker process beside torch's two
threads overlaps the batch making (about a quarter of a step's CPU time) or fights the threads for the cores. Whole
``hipnet-train`` runs of ``--steps`` steps with each setting, alternating in pairs so the machine's drift hits both
alike; the training wall time at the last logged step of each (``log.csv``), the per-pair ratio and the mean.
Writes bench/results/loader_workers.json.

    python -m bench.loader_workers --store data/processed/anny/train.zarr     # after make demo; about 12 minutes
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._results import commit, write_result

LOSS_COLUMNS = ("total", "surface", "eikonal", "normal", "sdf", "sub_surface", "sub_normal")


def run(store: Path, workers: int, steps: int, out: Path) -> tuple[float, list[tuple[str, ...]]]:
    """Train ``steps`` steps of ``fast`` with ``workers`` loader workers; (wall seconds at the last logged step,
    the logged losses)."""
    config = out.with_suffix(".yaml")
    config.write_text(f"base: fast\nsteps: {steps}\nlog_every: {steps // 2}\nloader_workers: {workers}\n")
    subprocess.run([str(Path(sys.executable).parent / "hipnet-train"), "--shards", str(store), "--config", str(config),
                    "--out", str(out)], check=True, capture_output=True)
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["wall_s"]), [tuple(r[c] for c in LOSS_COLUMNS if c in r) for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=Path("data/processed/anny/train.zarr"))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--pairs", type=int, default=3)
    args = p.parse_args(argv)
    if not (args.store / "zarr.json").exists():
        print(f"error: {args.store} is not a store (run `make demo` or `make preprocess DATASET=anny` first)",
              file=sys.stderr)
        return 1
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.pairs):
            order = (0, 1) if k % 2 == 0 else (1, 0)
            wall, losses = {}, {}
            for w in order:
                wall[w], losses[w] = run(args.store, w, args.steps, Path(tmp) / f"pair{k}_w{w}")
                print(f"pair {k}: loader_workers {w}: {wall[w]:.1f} s for {args.steps} steps", flush=True)
            if losses[0] != losses[1]:
                print("error: the two settings logged different losses (not the same batches)", file=sys.stderr)
                return 1
            pairs.append({"in_process_s": wall[0], "worker_s": wall[1], "speedup": wall[1] / wall[0],
                          "order": list(order)})
    mean = {k: sum(x[k] for x in pairs) / len(pairs) for k in ("in_process_s", "worker_s")}
    write_result("loader_workers", {"commit": commit(), "preset": "fast", "steps": args.steps, "pairs": pairs,
                                    "mean_in_process_s": mean["in_process_s"], "mean_worker_s": mean["worker_s"],
                                    "speedup_in_process": mean["worker_s"] / mean["in_process_s"],
                                    "same_losses": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
