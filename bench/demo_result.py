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


def decay_done(prov: dict, steps: int) -> float | None:
    """The share of the learning-rate decay the run completed: 1 when it reached lr * lr_final (a cosine plan
    trained to its end), less when the time cap stopped it first; None for a constant learning rate."""
    from hipnet.model.config import TrainConfig
    from hipnet.model.trainer import lr_factor

    cfg = TrainConfig.from_dict(prov.get("config", {}), "the run's config")
    planned = (prov.get("schedule") or {}).get("planned") or cfg.steps
    if cfg.lr_schedule == "constant" or not planned:
        return None
    return round((1.0 - lr_factor(cfg, steps, planned)) / (1.0 - cfg.lr_final), 4)


def step_windows(rows: list[dict], window: int = 100) -> list[dict]:
    """Mean seconds a training step took in each window of ``window`` steps, from the log's wall times (how the
    step time moved over the run; the fitted plan follows it)."""
    marks = [(int(r["step"]), float(r["wall_s"])) for r in rows]
    out, last = [], (0, 0.0)
    for step, wall in marks:
        if step - last[0] >= window:
            out.append({"to_step": step, "step_s": round((wall - last[1]) / (step - last[0]), 3)})
            last = (step, wall)
    return out


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
    steps = prov.get("step", int(rows[-1]["step"]) if rows else 0)
    write_result("demo", {
        "commit": commit(), "run": str(args.run), "planned_steps": prov.get("config", {}).get("steps"),
        "lr": prov.get("config", {}).get("lr"), "schedule": prov.get("schedule"),
        "uniform_miou": 100 * s["uniform_miou"], "near_miou": 100 * s["near_miou"],
        "chamfer_x1e4": s.get("chamfer_l1_x1e4"), "chamfer_mm": s.get("chamfer_mm"),
        "normal_consistency": s.get("normal_consistency"), "frames": s["frames"], "mesh_frames": s.get("mesh_frames"),
        "per_joint_near_iou": {k: 100 * v for k, v in s["per_joint_near_iou"].items()},
        # the checkpoint's step (the log's last row is the last logging step, up to log_every - 1 before it)
        "steps": steps, "decay_done": decay_done(prov, steps), "step_s_windows": step_windows(rows),
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
