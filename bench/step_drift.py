"""Benchmark: does the `fast` preset's training step slow down as a run goes on, and what do denormal numbers cost?

One in-process run of the `fast` preset's step (its model, loss and Adam update) on ready batches of a small
quantised store of generated Anny frames, so the loader's time is left out. A second run trains the same way with
the batches made as the preset makes them (the in-process loader, ``loader_workers`` 0), timing the loader's part
and the step's part of each step apart. The first run alternates, window by window
(``WINDOW`` steps each), between the CPU's default arithmetic and flushing denormal numbers to zero
(``torch.set_flush_denormal``): both modes see the same machine at nearly the same time, so their ratio is measured
in one run. Writes bench/results/step_drift.json: per window, the mode and its mean step time; per mode, the first
and the last windows' step time (the drift of the step itself); and the median ratio of neighbouring windows.
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
from hipnet.model.checkpoint import build_model
from hipnet.model.config import PRESETS
from hipnet.model.data import FrameStream
from hipnet.model.losses import Batch, loss_for
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split

WINDOW = 25
BATCHES = 40  # ready batches, cycled: the step's inputs stay the same kind all run


def small_store(folder: Path) -> Path:
    """A quantised training store of generated low-poly Anny frames (a few seconds to build)."""
    manifest = make_anny_manifest(seed=0, n_realistic=2, n_heldout=0, extremes=("tall_male", "slim_female"),
                                  sequences_per_subject=4, frames_per_sequence=6, key_every=3, topology="lowpoly")
    generate_dataset(manifest, folder / "raw")
    cfg = PreprocessConfig(surface_points=12_500, shard_frames=8, geodesics="per-template", quantise=True)
    return preprocess_split(AnnyReader(folder / "raw", ("train",)), folder / "stores", cfg, "train").store


def run(store: Path, steps: int) -> list[tuple[bool, float]]:
    """(flushing denormals, mean step time) of each window of ``steps`` training steps."""
    cfg = replace(PRESETS["fast"], seed=0)
    stream = FrameStream.from_config([store], cfg, workers=0)
    batches, epoch = [], 0
    while len(batches) < BATCHES:
        stream.set_epoch(epoch)
        batches += [Batch.from_dict(b) for b in stream]
        epoch += 1
    torch.manual_seed(0)
    model = build_model(stream.stores.skeleton, len(stream.stores.subjects), cfg.model)
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=cfg.lr), loss_for(cfg)
    windows = []
    for w in range(steps // WINDOW):
        flush = w % 2 == 1
        torch.set_flush_denormal(flush)
        t = time.perf_counter()
        for s in range(w * WINDOW, (w + 1) * WINDOW):
            loss, _ = loss_fn(model, batches[s % len(batches)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        windows.append((flush, (time.perf_counter() - t) / WINDOW))
    torch.set_flush_denormal(False)
    return windows


def run_with_loader(store: Path, steps: int) -> list[dict]:
    """Per window of ``steps`` steps trained from the live in-process stream: mean seconds a step spends making its
    batch (the loader) and in the step (model, loss, Adam)."""
    cfg = replace(PRESETS["fast"], seed=0)
    stream = FrameStream.from_config([store], cfg, workers=0)
    torch.manual_seed(0)
    model = build_model(stream.stores.skeleton, len(stream.stores.subjects), cfg.model)
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=cfg.lr), loss_for(cfg)
    data_s, step_s, epoch, it, out = 0.0, 0.0, 0, None, []
    for s in range(steps):
        t = time.perf_counter()
        raw = next(it, None) if it is not None else None
        while raw is None:  # a new epoch
            stream.set_epoch(epoch)
            epoch += 1
            it = iter(stream)
            raw = next(it, None)
        batch = Batch.from_dict(raw)
        t1 = time.perf_counter()
        loss, _ = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        data_s, step_s = data_s + t1 - t, step_s + time.perf_counter() - t1
        if (s + 1) % WINDOW == 0:
            out.append({"loader_s": round(data_s / WINDOW, 4), "step_s": round(step_s / WINDOW, 4)})
            data_s = step_s = 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400, help="training steps (windows of 25 alternate the modes)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = small_store(Path(tmp))
        windows = run(store, args.steps)
        with_loader = run_with_loader(store, args.steps)
    keep = [s for f, s in windows if not f]
    flush = [s for f, s in windows if f]
    ratios = [windows[i][1] / windows[i - 1][1] for i in range(1, len(windows), 2)]  # flush / the keep before it
    write_result("step_drift", {
        "commit": commit(), "command": "python -m bench.step_drift", "preset": "fast", "threads": args.threads,
        "window_steps": WINDOW, "windows": [{"flush_denormal": f, "step_s": round(s, 4)} for f, s in windows],
        "default_first_last_s": [round(keep[0], 4), round(keep[-1], 4)],
        "flush_first_last_s": [round(flush[0], 4), round(flush[-1], 4)],
        "flush_over_default_median": round(statistics.median(ratios), 3),
        "with_loader_windows": with_loader,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
