"""Benchmark: HIPNet training throughput on this machine, the depth-batched network against the naive per-joint loop.

Query points per second for one full training step (forward, the loss of equation 2 with its two input-gradient
passes, backward, Adam), batched vs naive with the same parameters, in the same run (a ratio): ``small`` and
``paper`` (few points) on the CPU. The step and its timing are bench/gpu_check.py's, which measures the GPU (every
precision mode, with and without ``torch.compile``) in `make gpu-check`. Writes bench/results/train.json.

Targets: batched >= 3x naive on GPU; ``paper`` on one H100 >= 250,000 surface points/s (+ as many eikonal).
"""

from __future__ import annotations

import torch
from gpu_check import random_batch, step_rate

from bench._results import write_result
from hipnet.model.config import PRESETS
from hipnet.model.hipnet import HIPNet
from hipnet.pipeline.core.skeleton import SMPL22


def measure(preset: str, frames: int, points: int, repeats: int = 3) -> dict:
    batch = random_batch(frames, points, "cpu")
    rates = {}
    for naive in (False, True):
        torch.manual_seed(0)
        model = HIPNet(SMPL22, 4, PRESETS[preset].model)
        rates[naive] = step_rate(model, batch, "fp32", naive, False, "cpu", repeats)["query_points_per_s"]
    return {
        "preset": preset, "device": "cpu", "bf16": False, "frames": frames, "surface_points_per_frame": points,
        "eikonal_points_per_frame": points, "batched_query_points_per_s": rates[False],
        "naive_query_points_per_s": rates[True], "batched_over_naive": rates[False] / rates[True],
        "batched_surface_points_per_s": rates[False] / 2, "peak_memory_gib": None,
    }


def main() -> None:
    results = [measure("small", 4, 2_000), measure("paper", 2, 250, repeats=2)]
    out = {"results": results, "targets": {"batched_over_naive_gpu": 3.0, "paper_h100_surface_points_per_s": 250_000},
           "gpu": "measured by `make gpu-check` (bench/gpu_check.py -> bench/results/gpu.json)"}
    write_result("train", out)


if __name__ == "__main__":
    main()
