"""Benchmark: HIPNet training throughput, the depth-batched network against the naive per-joint loop.

Query points per second for one full training step (forward, the loss of equation 2 with its two input-gradient
passes, backward, Adam), batched vs naive with the same parameters, in the same run (a ratio). Presets: ``small``
on CPU, ``paper`` on CPU with few points, and on GPU (when one is present) ``paper`` in fp32 and bf16 with peak
memory. Prints the figures and writes bench/results/train[_gpu].json with the machine.

Targets (issue): batched >= 3x naive on GPU; ``paper`` on one H100 >= 250,000 surface points/s (+ as many eikonal).
"""

from __future__ import annotations

import time
from functools import partial

import torch
from _results import write_result

from hipnet.model.config import PRESETS
from hipnet.model.hipnet import HIPNet, naive_forward
from hipnet.model.losses import Batch, hipnet_loss
from hipnet.pipeline.skeleton import SMPL22


def make_batch(frames: int, points: int, device: str) -> Batch:
    g = torch.Generator().manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(frames, points, 3, generator=g), dim=-1)
    jt = torch.eye(4).repeat(frames, 22, 1, 1)
    jt[:, :, :3, 3] = torch.randn(frames, 22, 3, generator=g) * 0.3
    labels = torch.randint(0, 22, (frames, points), generator=g)
    eikonal = torch.rand(frames, points, 3, generator=g) - 0.5
    return Batch(0.4 * n, n, labels, eikonal, jt, torch.arange(frames) % 4).to(device)


def step_rate(model, batch: Batch, naive: bool, device: str, bf16: bool, repeats: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fwd = partial(naive_forward, model) if naive else model

    def step():
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                            enabled=bf16):
            loss, _ = hipnet_loss(model, batch, forward=fwd)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    n_points = batch.points.shape[0] * (batch.points.shape[1] + batch.eikonal.shape[1])
    return n_points / min(times)


def measure(preset: str, frames: int, points: int, device: str, bf16: bool, repeats: int = 3) -> dict:
    cfg = PRESETS[preset].model
    model = HIPNet(SMPL22, 4, cfg).to(device)
    batch = make_batch(frames, points, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    batched = step_rate(model, batch, False, device, bf16, repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    naive = step_rate(model, batch, True, device, bf16, repeats)
    return {
        "preset": preset, "device": device, "bf16": bf16, "frames": frames, "surface_points_per_frame": points,
        "eikonal_points_per_frame": points, "batched_query_points_per_s": batched, "naive_query_points_per_s": naive,
        "batched_over_naive": batched / naive, "batched_surface_points_per_s": batched / 2,
        "peak_memory_gib": peak,
    }


def main() -> None:
    torch.manual_seed(0)
    results = []
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        for bf16 in (False, True):
            results.append(measure("paper", 8, 25_000, "cuda", bf16))
        results.append(measure("small", 8, 2_000, "cuda", False))
    else:
        results.append(measure("small", 4, 2_000, "cpu", False))
        results.append(measure("paper", 2, 250, "cpu", False, repeats=2))
    out = {"results": results, "targets": {"batched_over_naive_gpu": 3.0, "paper_h100_surface_points_per_s": 250_000}}
    write_result("train_gpu" if on_gpu else "train", out)


if __name__ == "__main__":
    main()
