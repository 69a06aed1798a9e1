"""Benchmark: one HIPNet training step with the input gradients from autograd (a ``create_graph`` gradient, then a
double backward) against forward-mode derivatives through the sub-networks (``TrainConfig.gradients="forward"``:
the same values, tested equal in float64, and one backward).

For the ``fast`` preset's step (8 frames x (500 surface + 1000 eikonal) points, 32-wide local-frame sub-networks)
and the ``small`` preset's (4 x (2000 + 2000), 64 wide): the two modes alternate step by step with the same
parameters and batch, so machine noise hits both alike; the median step time of each and their ratio. Writes
bench/results/gradients.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _results import write_result
from gpu_check import random_batch

from hipnet.model.config import PRESETS
from hipnet.model.hipnet import HIPNet
from hipnet.model.losses import hipnet_loss
from hipnet.pipeline.skeleton import SMPL22

CASES = {"fast": (8, 500, 1000), "small": (4, 2000, 2000)}


def measure(preset: str, repeats: int) -> dict:
    frames, surface, eikonal = CASES[preset]
    cfg = PRESETS[preset]
    batch = random_batch(frames, max(surface, eikonal), "cpu")
    batch.points, batch.normals, batch.labels = (batch.points[:, :surface], batch.normals[:, :surface],
                                                 batch.labels[:, :surface])
    batch.eikonal = batch.eikonal[:, :eikonal]
    batch.eikonal_sdf = torch.zeros(frames, eikonal) if cfg.lambda_sdf else None
    torch.manual_seed(0)
    model = HIPNet(SMPL22, 4, cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    times: dict[str, list[float]] = {"autograd": [], "forward": []}
    for r in range(repeats + 1):
        for mode in times:
            t = time.perf_counter()
            loss, _ = hipnet_loss(model, batch, lambda_eikonal=cfg.lambda_eikonal, lambda_normal=cfg.lambda_normal,
                                  subnet_losses=cfg.subnet_losses, lambda_sdf=cfg.lambda_sdf, gradients=mode)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if r:  # the first round warms up
                times[mode].append(time.perf_counter() - t)
    med = {m: float(np.median(t)) for m, t in times.items()}
    return {"preset": preset, "frames": frames, "surface_points": surface, "eikonal_points": eikonal,
            "autograd_step_s": med["autograd"], "forward_step_s": med["forward"],
            "speedup": med["autograd"] / med["forward"], "repeats": repeats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    write_result("gradients", {"threads": args.threads, "results": [measure(k, args.repeats) for k in CASES]})


if __name__ == "__main__":
    main()
