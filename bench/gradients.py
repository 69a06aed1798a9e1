"""Benchmark: one HIPNet training step with the input gradients from autograd (a ``create_graph`` gradient, then a
double backward) against forward-mode derivatives through the sub-networks (``TrainConfig.gradients="forward"``:
the same values, tested equal in float64, and one backward).

Where a step's time goes (``--profile``, on by default): torch's profiler over a few steps of each mode, the
operators' own CPU time grouped as matrix products, softplus and its derivatives (the sigmoids), other elementwise
and copying operators, and the rest (optimiser, reductions, indexing), each as a share of the profiled total; and
the matrix products' rate in GFLOP/s (from their shapes), against a single large matrix product on the same
threads. The profile says what a faster step would have to change. ``--compile`` also times the
forward-mode loss through ``torch.compile`` (which fuses the elementwise operators; autograd's double backward does
not compile): the one-off compile time and the step time after it.

For the ``fast`` preset's step (as the preset has it: 32 frames x (125 surface + 250 eikonal) points now, 32-wide
local-frame sub-networks) and the ``small`` preset's (4 x (2000 + 2000), 64 wide): the two modes alternate step by
step with the same parameters and batch, so machine noise hits both alike; the median step time of each and their
ratio. Writes bench/results/gradients.json.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from gpu_check import random_batch

from bench._results import write_result
from hipnet.model.config import PRESETS
from hipnet.model.hipnet import HIPNet
from hipnet.model.losses import loss_for
from hipnet.pipeline.core.skeleton import SMPL22

# each preset's step: (frames, surface points, eikonal points) per step
CASES = {k: (PRESETS[k].frames_per_step, PRESETS[k].points_per_frame, PRESETS[k].eikonal_per_frame)
         for k in ("fast", "small")}
MATMUL = {"aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm", "aten::matmul"}
SOFTPLUS = {"aten::softplus", "aten::softplus_backward", "aten::sigmoid", "aten::sigmoid_backward"}
ELEMENTWISE = {"aten::mul", "aten::add", "aten::add_", "aten::sub", "aten::div", "aten::copy_", "aten::fill_",
               "aten::lt", "aten::gt", "aten::where", "aten::cat", "aten::neg", "aten::pow", "aten::sqrt",
               "aten::abs", "aten::exp", "aten::mul_", "aten::div_", "aten::zero_", "aten::clone"}


def _flops(name: str, shapes: list) -> float:
    """Multiply-adds x 2 of a matrix product from its input shapes (0 when the shapes are not recorded)."""
    try:
        if name in ("aten::bmm", "aten::baddbmm"):
            a, b = shapes[-2:]
            return 2.0 * a[0] * a[1] * a[2] * b[2]
        if name in ("aten::mm", "aten::addmm"):
            a, b = shapes[-2:]
            return 2.0 * a[0] * a[1] * b[1]
    except (IndexError, TypeError):
        pass
    return 0.0


def setup(preset: str):
    """The preset's config, its model (seed 0), an Adam at a tiny rate and a random batch of its step shape."""
    cfg = PRESETS[preset]
    batch = case_batch(preset)
    torch.manual_seed(0)
    model = HIPNet(SMPL22, 4, cfg.model)
    return cfg, model, torch.optim.Adam(model.parameters(), lr=1e-6), batch


def timed_step(loss_fn, model, batch, opt) -> float:
    """Seconds of one training step: the loss, its backward, the optimiser step."""
    t = time.perf_counter()
    loss, _ = loss_fn(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def profile(loss_fn, model, batch, opt, mode: str, steps: int = 3) -> dict:
    """Share of the operators' own CPU time per category over ``steps`` training steps, and the matrix products'
    GFLOP/s."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    timed_step(loss_fn, model, batch, opt)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            timed_step(loss_fn, model, batch, opt)
    share = {"matrix_products": 0.0, "softplus_and_derivatives": 0.0, "other_elementwise": 0.0, "rest": 0.0}
    flops = matmul_us = 0.0
    ops: dict[str, float] = {}
    for e in prof.key_averages(group_by_input_shape=True):
        us = e.self_cpu_time_total
        if e.key in MATMUL:
            share["matrix_products"] += us
            flops += _flops(e.key, e.input_shapes) * e.count
            matmul_us += us
        elif e.key in SOFTPLUS:
            share["softplus_and_derivatives"] += us
        elif e.key in ELEMENTWISE:
            share["other_elementwise"] += us
        else:
            share["rest"] += us
        ops[e.key] = ops.get(e.key, 0.0) + us
    total = sum(share.values())
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
    return {"mode": mode, "profiled_steps": steps, "share": {k: v / total for k, v in share.items()},
            "top_operators_share": {k: v / total for k, v in top},
            "matrix_product_gflop_per_s": flops / max(matmul_us, 1e-9) / 1e3}


def compiled(preset: str, repeats: int) -> dict:
    """The forward-mode step with the loss through ``torch.compile``: compile seconds (the first step) and the
    median step after it, against the same step uncompiled (alternating, same parameters and batch)."""
    cfg, model, opt, batch = setup(preset)
    loss_fn = loss_for(replace(cfg, gradients="forward"))
    fns = {"eager": loss_fn, "compiled": torch.compile(loss_fn, dynamic=False)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    first = 0.0
    for r in range(repeats + 1):
        for name, fn in fns.items():
            dt = timed_step(fn, model, batch, opt)
            if r:
                times[name].append(dt)
            elif name == "compiled":
                first = dt
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"preset": preset, "compile_s": first, "eager_forward_step_s": med["eager"],
            "compiled_forward_step_s": med["compiled"], "speedup": med["eager"] / med["compiled"],
            "repeats": repeats}


def large_matmul_gflop_per_s() -> float:
    """GFLOP/s of one 2048 x 2048 float32 matrix product on this machine's torch threads (best of 5)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def case_batch(preset: str):
    """A random batch of the preset's step shape (``CASES``)."""
    frames, surface, eikonal = CASES[preset]
    batch = random_batch(frames, max(surface, eikonal), "cpu")
    batch.points, batch.normals, batch.labels = (batch.points[:, :surface], batch.normals[:, :surface],
                                                 batch.labels[:, :surface])
    batch.eikonal = batch.eikonal[:, :eikonal]
    batch.eikonal_sdf = torch.zeros(frames, eikonal) if PRESETS[preset].lambda_sdf else None
    return batch


def measure(preset: str, repeats: int, with_profile: bool = True) -> dict:
    frames, surface, eikonal = CASES[preset]
    cfg, model, opt, batch = setup(preset)
    losses = {mode: loss_for(replace(cfg, gradients=mode)) for mode in ("autograd", "forward")}
    times: dict[str, list[float]] = {mode: [] for mode in losses}
    for r in range(repeats + 1):
        for mode, loss_fn in losses.items():
            dt = timed_step(loss_fn, model, batch, opt)
            if r:  # the first round warms up
                times[mode].append(dt)
    med = {m: float(np.median(t)) for m, t in times.items()}
    out = {"preset": preset, "frames": frames, "surface_points": surface, "eikonal_points": eikonal,
           "autograd_step_s": med["autograd"], "forward_step_s": med["forward"],
           "speedup": med["autograd"] / med["forward"], "repeats": repeats}
    if with_profile:
        out["profile"] = [profile(loss_fn, model, batch, opt, mode) for mode, loss_fn in losses.items()]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                   help="also where each mode's step time goes (torch's profiler)")
    p.add_argument("--compile", action="store_true",
                   help="also the fast preset's forward-mode step through torch.compile (minutes to compile)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = [measure(k, args.repeats, args.profile) for k in CASES]
    write_result("gradients", {"threads": args.threads, "results": results,
                               "large_matmul_gflop_per_s": large_matmul_gflop_per_s(),
                               **({"compiled": compiled("fast", args.repeats)} if args.compile else {})})


if __name__ == "__main__":
    main()
