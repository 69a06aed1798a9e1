"""`make demo`'s last step: its real numbers into bench/results/demo.json (docs/experiments/demo.md is generated from it).

Reads the run's evaluation (`RUN/eval/metrics.json`: the metrics, and the checkpoint's step and learning-rate plan),
its training log (`RUN/log.csv`: the training wall time at the last logging step) and the demo's start time, and
writes the plan (`schedule`: its steps, and whether they were fitted to the time), uniform and near-surface mIoU
(percent), Chamfer-L1 (x1e-4 and mm), normal consistency, the per-joint near-surface IoU, `wall_s` (the whole demo),
`train_s`, `eval_s`, with the machine and the commit. The evaluation's `metrics.json` itself (every frame's
uniform, near-surface and per-joint IoU) is kept beside it as bench/results/demo_metrics.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from bench._results import RESULTS, commit, write_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="the demo's run folder (runs/anny_fast)")
    p.add_argument("--started", type=Path, required=True, help="file holding the demo's start time (epoch seconds)")
    p.add_argument("--note", default=None, help="what this run changes (the table of every demo run shows it)")
    args = p.parse_args()
    text = (args.run / "eval" / "metrics.json").read_text()
    metrics = json.loads(text)
    s, prov = metrics["summary"], metrics["provenance"]
    with open(args.run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    write_result("demo", {
        "commit": commit(), "run": str(args.run), "planned_steps": prov.get("config", {}).get("steps"),
        "lr": prov.get("config", {}).get("lr"), "schedule": prov.get("schedule"),
        "uniform_miou": 100 * s["uniform_miou"], "near_miou": 100 * s["near_miou"],
        "chamfer_x1e4": s.get("chamfer_l1_x1e4"), "chamfer_mm": s.get("chamfer_mm"),
        "normal_consistency": s.get("normal_consistency"), "frames": s["frames"], "mesh_frames": s.get("mesh_frames"),
        "per_joint_near_iou": {k: 100 * v for k, v in s["per_joint_near_iou"].items()},
        # the checkpoint's step (the log's last row is the last logging step, up to log_every - 1 before it)
        "steps": prov.get("step", int(rows[-1]["step"]) if rows else 0),
        "train_s": float(rows[-1]["wall_s"]) if rows else None,
        "eval_s": prov.get("wall_s"), "wall_s": round(time.time() - float(args.started.read_text()), 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"note": args.note} if args.note else {}),
    })
    kept = RESULTS / "demo_metrics.json"
    kept.write_text(text)
    print(f"wrote {kept} (the evaluation's metrics.json, per frame)")


if __name__ == "__main__":
    main()
