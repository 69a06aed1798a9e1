"""Benchmark: the `fast` preset's training step with part-local evaluation (``ModelConfig.part_support``) against
the dense step, split into its parts.

Four configurations train side by side on the same batches of one store, from the same initial weights: the dense
model and the part-local one, each with input gradients by autograd (the preset's) and by forward-mode derivatives.
They take turns, ``ROUND`` steps each, so all of them see the machine at nearly the same time; each step is timed
in three parts: forward (the loss, with the input gradients it needs), backward, and the Adam update. The loader's
time to make a batch (the same for every configuration) is timed apart on the live in-process stream. Also
recorded: the share of (joint, point) pairs the part-local model evaluates, and the rows it runs with padding.
Writes bench/results/part_support.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench._results import commit, write_result
from bench.step_drift import small_store
from hipnet.model.checkpoint import build_model
from hipnet.model.config import PRESETS
from hipnet.model.data import FrameStream
from hipnet.model.functional import joint_points
from hipnet.model.losses import Batch, loss_for
from hipnet.model.partlocal import level_groups
from hipnet.model.support import part_boxes

ROUND = 5  # steps of one configuration before the next takes its turn
BATCHES = 24
MODES = {"dense": (False, "autograd"), "part-support": (True, "autograd"), "dense-forward": (False, "forward"),
         "part-support-forward": (True, "forward")}


def batches_and_loader_time(stream: FrameStream, count: int) -> tuple[list[Batch], float]:
    """``count`` batches of the live stream and its median seconds per batch."""
    out, times, epoch = [], [], 0
    while len(out) < count:
        stream.set_epoch(epoch)
        epoch += 1
        it = iter(stream)
        while len(out) < count:
            t = time.perf_counter()
            raw = next(it, None)
            if raw is None:
                break
            times.append(time.perf_counter() - t)
            out.append(Batch.from_dict(raw))
    return out, statistics.median(times)


def evaluated_share(model, batches: list[Batch]) -> dict:
    """Of the dense model's (joint, point) evaluations: the share the part-local model makes, and the share it runs
    counting the padding of its stacked calls; and the share of points each joint runs on."""
    run = padded = total = 0
    per_joint = torch.zeros(model.skeleton.num_joints)
    for b in batches:
        x = torch.cat([b.points, b.eikonal], 1)
        j = model.skeleton.num_joints
        q = joint_points(x, b.joint_transforms, torch.arange(j), True).reshape(j, -1, 3)
        lo, hi = model.support[:, 0].unsqueeze(1), model.support[:, 1].unsqueeze(1)
        m = model.cfg.support_margin
        need = (model.subtree @ ((q >= lo - m) & (q <= hi + m)).all(-1).float()) > 0
        counts = need.sum(1).tolist()
        run, total = run + sum(counts), total + need.numel()
        padded += sum(len(g) * max(counts[lv[i]] for i in g) for lv in model.levels
                      for g in level_groups([counts[i] for i in lv]))
        per_joint += need.float().mean(1)
    names = model.skeleton.names
    return {"evaluated": round(run / total, 4), "with_padding": round(padded / total, 4),
            "per_joint": {names[k]: round(float(v) / len(batches), 3) for k, v in enumerate(per_joint)}}


def timed_step(model, opt, loss_fn, batch: Batch, sync) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    loss, _ = loss_fn(model, batch)
    sync()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sync()
    t2 = time.perf_counter()
    opt.step()
    sync()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def compare(store: Path, rounds: int, device: str = "cpu", frames_per_step: int | None = None) -> dict:
    """The four configurations' step times (medians of forward, backward, Adam and the whole step) on ``store``'s
    batches of the fast preset (with ``frames_per_step`` when given), the dense step's time over each, the loader's
    time per batch and the part-local share of work."""
    cfg = replace(PRESETS["fast"], seed=0, frames_per_step=frames_per_step or PRESETS["fast"].frames_per_step)
    stream = FrameStream.from_config([store], cfg, workers=0)
    batches, loader_s = batches_and_loader_time(stream, BATCHES)
    boxes = part_boxes(stream.stores.stores, stream.stores.skeleton.num_joints)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    runs = {}
    for name, (local, gradients) in MODES.items():
        torch.manual_seed(0)
        model = build_model(stream.stores.skeleton, len(stream.stores.subjects), replace(cfg.model, part_support=local))
        if local:
            model.set_support(boxes)
        runs[name] = (model.to(device), torch.optim.Adam(model.parameters(), lr=cfg.lr),
                      loss_for(replace(cfg, gradients=gradients)), [])
    for r in range(rounds):
        for model, opt, loss_fn, times in runs.values():
            for s in range(ROUND):
                split = timed_step(model, opt, loss_fn, batches[(r * ROUND + s) % len(batches)].to(device), sync)
                if r > 0:  # the first round warms up
                    times.append(split)
    result = {}
    for name, (_, _, _, times) in runs.items():
        parts = [statistics.median(t[i] for t in times) for i in range(3)]
        result[name] = {"forward_s": round(parts[0], 4), "backward_s": round(parts[1], 4),
                        "adam_s": round(parts[2], 4), "step_s": round(statistics.median(sum(t) for t in times), 4)}
    dense = result["dense"]["step_s"]
    return {"steps_per_configuration": (rounds - 1) * ROUND, "loader_s": round(loader_s, 4), "configurations": result,
            "dense_over": {name: round(dense / r["step_s"], 3) for name, r in result.items()},
            "support_margin": cfg.model.support_margin,
            "share": evaluated_share(runs["part-support"][0].cpu(), batches)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, help="training store (default: a small generated one)")
    p.add_argument("--rounds", type=int, default=12, help=f"turns of each configuration ({ROUND} steps each)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = compare(args.store or small_store(Path(tmp)), args.rounds)
    write_result("part_support", {
        "commit": commit(), "command": "python -m bench.part_support" + (f" --store {args.store}" if args.store else ""),
        "store": "generated low-poly" if args.store is None else args.store.name, "preset": "fast",
        "threads": args.threads} | result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
