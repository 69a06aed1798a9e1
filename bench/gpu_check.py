"""Every GPU check in one run (`make gpu-check`; `--device cpu --tiny` runs the same code end to end on a CPU).

1. `pytest -m gpu` (tests/test_gpu.py: batched = naive on CUDA; CPU and CUDA agree in fp32 on values and input
   gradients; a training step under each precision mode), counted.
2. Training throughput of the `paper` preset: fp32, tf32 and bf16 x batched and naive x eager and `torch.compile`;
   query points (surface + eikonal) per second for a full step (forward, the equation-2 loss with its input
   gradients, backward, Adam) and peak memory. A combination that does not run is recorded with its error.
3. The `fast` preset's step, dense against part-local evaluation (``bench.part_support.compare``: forward,
   backward and Adam apart, both input-gradient modes) on batches of the train store.
4. A short `paper`-size training run on the embedded stores (as many minutes as `--train-minutes`), evaluated with
   the standard metrics (`hipnet.model.evaluate`) on the test store.
5. The SDF and input-gradient error of tf32 and bf16 against fp32 on that trained checkpoint, at the test
   store's near-surface points.

Writes bench/results/gpu.json (or `--out`) and prints a summary. Stores: `--data` holds `train.zarr` and
`test.zarr` (`make gpu-prepare` builds small ones and downloads the Python 3.12 wheels the GPU machine lacks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench._results import machine
from hipnet.model import precision
from hipnet.model.config import PRESETS
from hipnet.model.hipnet import HIPNet, naive_forward
from hipnet.model.losses import Batch, hipnet_loss
from hipnet.pipeline.core.skeleton import SMPL22

ROOT = Path(__file__).resolve().parents[1]
MODES = ("fp32", "tf32", "bf16")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_batch(frames: int, points: int, device: str) -> Batch:
    g = torch.Generator().manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(frames, points, 3, generator=g), dim=-1)
    jt = torch.eye(4).repeat(frames, 22, 1, 1)
    jt[:, :, :3, 3] = torch.randn(frames, 22, 3, generator=g) * 0.3
    return Batch(points=0.4 * n, normals=n, labels=torch.randint(0, 22, (frames, points), generator=g),
                 eikonal=torch.rand(frames, points, 3, generator=g) - 0.5, joint_transforms=jt,
                 subject=torch.arange(frames) % 4).to(device)


def step_rate(model: HIPNet, batch: Batch, mode: str, naive: bool, compiled: bool, device: str, repeats: int) -> dict:
    fwd = partial(naive_forward, model) if naive else model
    if compiled:
        fwd = torch.compile(fwd)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with precision.matmul_precision(mode, device), precision.autocast(mode, device):
            loss, _ = hipnet_loss(model, batch, forward=fwd)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()  # warm-up (and compilation)
    sync(device)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    n = batch.points.shape[0] * (batch.points.shape[1] + batch.eikonal.shape[1])
    return {"query_points_per_s": n / float(np.median(times)), "step_s_median": float(np.median(times)),
            "first_step_s": warm,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None}


def throughput(device: str, tiny: bool, compile_modes: tuple[bool, ...] = (False, True)) -> list[dict]:
    cfg = PRESETS["small" if tiny else "paper"].model
    frames, points, repeats = (2, 128, 2) if tiny else (8, 25_000, 5)
    batch = random_batch(frames, points, device)
    rows = []
    for mode in MODES:
        for naive in (False, True):
            for compiled in compile_modes:
                torch.manual_seed(0)
                model = HIPNet(SMPL22, 4, cfg).to(device)
                row = {"preset": "small" if tiny else "paper", "mode": mode, "forward": "naive" if naive else "batched",
                       "compile": compiled, "frames": frames, "points_per_frame": points}
                try:
                    row |= step_rate(model, batch, mode, naive, compiled, device, repeats)
                except Exception as e:  # noqa: BLE001 - a combination that does not run is a result, not a crash
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                rows.append(row)
                print(f"  {row}", flush=True)
    return rows


def part_local(data: Path, device: str, tiny: bool) -> dict:
    """The fast preset's dense and part-local steps on the train store's batches (an error is recorded, not raised:
    the other stages' figures stand)."""
    from bench.part_support import compare

    try:
        return compare(data / "train.zarr", 2 if tiny else 12, device, frames_per_step=2 if tiny else None)
    except Exception as e:  # noqa: BLE001 - a result, not a crash
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}


def run_pytest() -> dict:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_gpu.py")], capture_output=True, text=True, cwd=ROOT)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]
    return {"returncode": proc.returncode, "summary": tail, "wall_s": round(time.time() - t0, 1)}


def short_training(data: Path, out: Path, device: str, tiny: bool, minutes: float) -> tuple[Path, dict]:
    from hipnet.model.train import train

    cfg = PRESETS["paper"]
    if tiny:
        small = PRESETS["small"]
        cfg = replace(small, points_per_frame=64, eikonal_per_frame=64, frames_per_step=2, steps=3, loader_workers=0)
    else:
        cfg = replace(cfg, steps=100_000, loader_workers=4, log_every=50, checkpoint_every=500)
    t0 = time.time()
    run = train([data / "train.zarr"], cfg, out, device=device, progress=False, max_seconds=60 * minutes)
    return out / "ckpt.pt", {"steps": run.step, "epochs": run.epoch, "last_loss": run.last_loss,
                             "query_points_per_s_last": run.points_per_s, "wall_s": round(time.time() - t0, 1),
                             "amp": cfg.amp, "precision": precision.resolve(cfg.amp, device)}


def evaluate(ckpt: Path, data: Path, device: str, tiny: bool) -> dict:
    from hipnet.model.evaluate import evaluate_store
    from hipnet.model.query import model_sdf
    from hipnet.model.train import load_checkpoint, model_from_checkpoint
    from hipnet.pipeline.store.reading import Store

    ck = load_checkpoint(ckpt)
    model = model_from_checkpoint(ck).to(device).eval()
    names = list(ck["subjects"])
    store = Store.open(data / "test.zarr")
    codes = model.codes.weight.detach() if model.codes is not None else None
    jts, subj = store.read("pose/joint_transforms"), store.read("frame/subject")

    def sdf_of(i):
        if codes is None:
            return model_sdf(model, jts[i], None, device)
        name = store.subjects[int(subj[i])]
        code = codes[names.index(name)] if name in names else codes.mean(0)
        return model_sdf(model, jts[i], code, device)

    frames = list(range(0, store.n_frames, max(1, store.n_frames // (2 if tiny else 8))))
    t0 = time.time()
    ev = evaluate_store(store, sdf_of, frames, frames[:2], 32 if tiny else 128, 2000 if tiny else 100_000)
    s = ev.summary(store.skeleton.names)
    return {k: s[k] for k in ("frames", "uniform_miou", "near_miou", "chamfer_mm", "normal_consistency") if k in s} | {
        "wall_s": round(time.time() - t0, 1)}


def precision_error(ckpt: Path, data: Path, device: str, points: int) -> dict:
    """SDF (mm) and input-gradient errors of tf32 and bf16 against fp32, at near-surface points of test frames."""
    from hipnet.model.train import load_checkpoint, model_from_checkpoint
    from hipnet.pipeline.store.reading import Store

    model = model_from_checkpoint(load_checkpoint(ckpt)).to(device).eval()
    store = Store.open(data / "test.zarr")
    frames = np.arange(min(4, store.n_frames))
    x = torch.as_tensor(np.stack([store.read("eval/near_points", int(i))[:points] for i in frames]), device=device)
    jt = torch.as_tensor(store.read("pose/joint_transforms", frames), device=device)
    subject = torch.zeros(len(frames), dtype=torch.long, device=device)

    def sdf_and_grad(mode):
        xr = x.clone().requires_grad_(True)
        with precision.matmul_precision(mode, device), precision.autocast(mode, device):
            sdf = model(xr, jt, subject).sdf
        sdf = sdf.float()
        (grad,) = torch.autograd.grad(sdf.sum(), xr)
        return sdf.detach(), grad.float()

    ref_sdf, ref_grad = sdf_and_grad("fp32")
    out = {}
    for mode in ("tf32", "bf16"):
        sdf, grad = sdf_and_grad(mode)
        d = (sdf - ref_sdf).abs() * 1000
        cos = torch.nn.functional.cosine_similarity(grad, ref_grad, dim=-1).clamp(-1, 1)
        out[mode] = {"sdf_mean_abs_mm": float(d.mean()), "sdf_max_abs_mm": float(d.max()),
                     "grad_mean_angle_deg": float(torch.rad2deg(torch.acos(cos)).mean()),
                     "grad_norm_mean_rel": float(((grad.norm(dim=-1) - ref_grad.norm(dim=-1)).abs()
                                                  / ref_grad.norm(dim=-1).clamp_min(1e-9)).mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the same code, end to end)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: the plumbing in seconds (CPU tests)")
    p.add_argument("--data", type=Path, default=ROOT / ".gpu" / "data", help="folder with train.zarr and test.zarr")
    p.add_argument("--train-minutes", type=float, default=3.0, help="the short training run's wall-time budget")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    p.add_argument("--run", type=Path, default=None, help="run folder of the training (default: a temporary one)")
    p.add_argument("--skip-pytest", action="store_true")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows (slow to build on a CPU)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no CUDA device (use --device cpu --tiny on a CPU)")
    torch.manual_seed(0)
    t0 = time.time()
    result: dict = {"machine": machine(), "device": args.device, "tiny": args.tiny,
                    "commit": os.environ.get("HIPNET_COMMIT", "unknown")}
    stages = [("pytest", lambda: run_pytest() if not args.skip_pytest else {"skipped": "--skip-pytest"}),
              ("throughput", lambda: throughput(args.device, args.tiny, (False,) if args.no_compile else (False, True)))]
    stages.append(("part_local", lambda: part_local(args.data, args.device, args.tiny)))
    run = args.run or Path(os.environ.get("TMPDIR", "/tmp")) / f"hipnet_gpu_check_{os.getpid()}"
    for name, fn in stages:
        print(f"gpu_check: {name}", flush=True)
        result[name] = fn()
    print("gpu_check: training", flush=True)
    try:
        ckpt, result["training"] = short_training(args.data, run, args.device, args.tiny, args.train_minutes)
        result["evaluation"] = evaluate(ckpt, args.data, args.device, args.tiny)
        result["precision_error"] = precision_error(ckpt, args.data, args.device, 256 if args.tiny else 20_000)
    except Exception as e:  # noqa: BLE001 - record why, keep the throughput figures
        result["training_error"] = "".join(traceback.format_exception_only(e)).strip()
    result["wall_s"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ok = [r for r in result["throughput"] if "error" not in r]
    best = max(ok, key=lambda r: r["query_points_per_s"]) if ok else None
    print(f"gpu_check: {args.out}; pytest: {result['pytest'].get('summary', result['pytest'])}")
    if best:
        print(f"  fastest step: {best['mode']} {best['forward']} compile={best['compile']}: "
              f"{best['query_points_per_s']:,.0f} query points/s")
    print(f"  training: {result.get('training', result.get('training_error'))}")
    print(f"  evaluation: {result.get('evaluation')}; precision error: {result.get('precision_error')}")
    return 1 if "training_error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
