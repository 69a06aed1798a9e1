"""The training loop: streaming batches, Adam, bf16 autocast on GPU, DDP under torchrun, atomic checkpoints and
exact resume, CSV and TensorBoard logs.

A run folder holds ``config.json`` (the resolved config), ``ckpt.pt`` (latest checkpoint: model, optimiser, subject
codes with their names, loader state, config, schema version), ``log.csv`` and ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from hipnet.model.config import ModelConfig, TrainConfig
from hipnet.model.data import FrameStream, expand_shards
from hipnet.model.hipnet import HIPNet
from hipnet.model.losses import Batch, hipnet_loss
from hipnet.pipeline.schema import SCHEMA_VERSION
from hipnet.pipeline.skeleton import Skeleton

CKPT = "ckpt.pt"


@dataclass
class Run:
    out: Path
    step: int
    epoch: int
    last_loss: float
    points_per_s: float


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[int, int]:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return _dist()


def build_model(skeleton: Skeleton, n_subjects: int, cfg: ModelConfig) -> HIPNet:
    return HIPNet(skeleton, n_subjects, cfg)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write through a temporary file and a rename: an interrupted save never leaves a broken checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file whatever torch raises
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e


def model_from_checkpoint(ckpt: dict) -> HIPNet:
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = build_model(Skeleton.from_attrs(ckpt["skeleton"]), len(ckpt["subjects"]), cfg.model)
    model.load_state_dict(ckpt["model"])
    return model


def lr_factor(cfg: TrainConfig, step: int, planned: int) -> float:
    """Learning-rate multiplier at ``step`` (a pure function of the step, so a resumed run continues the curve)."""
    if cfg.lr_schedule == "constant":
        return 1.0
    t = min(step / max(planned, 1), 1.0)  # cosine from 1 to lr_final
    return cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t))


def train(shards: Sequence[str | Path], cfg: TrainConfig, out: Path, device: str = "cpu", resume: bool = False,
          progress: bool = True, max_seconds: float | None = None, stop_at_step: int | None = None) -> Run:
    """Train (or continue) a run in ``out``. ``cfg.steps`` (or ``cfg.epochs``) bounds the run; ``stop_at_step``
    interrupts it at that step with a checkpoint, the learning-rate schedule still planned for the whole run; ``max_seconds``
    stops it early at a step boundary with a checkpoint (for time-boxed demos)."""
    rank, world = init_distributed(device)
    out = Path(out)
    paths = expand_shards(shards)
    stream = FrameStream(paths, points_per_frame=cfg.points_per_frame, eikonal_per_frame=cfg.eikonal_per_frame,
                         frames_per_step=cfg.frames_per_step, near_sigma=cfg.eikonal_near_sigma,
                         bbox_margin=cfg.bbox_margin, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, rank=rank,
                         world=world, workers=cfg.loader_workers, sdf_targets=cfg.lambda_sdf > 0)
    subjects, skeleton = stream.stores.subjects, stream.stores.skeleton
    torch.manual_seed(cfg.seed)
    model = build_model(skeleton, len(subjects), cfg.model).to(device)
    code_params = list(model.codes.parameters()) if model.codes is not None else []
    other = [p for n, p in model.named_parameters() if not n.startswith("codes.")]
    groups = [{"params": other, "lr": cfg.lr}]
    if code_params:
        groups.append({"params": code_params, "lr": cfg.code_lr or cfg.lr})
    opt = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in opt.param_groups]
    step, epoch, consumed = 0, 0, 0  # consumed: batches of the current epoch already trained on
    ckpt_path = out / CKPT
    if resume:
        ck = load_checkpoint(ckpt_path)
        if ck["subjects"] != subjects:
            raise ValueError(f"{ckpt_path}: trained on subjects {ck['subjects'][:5]}..., these stores have "
                             f"{subjects[:5]}...; resume with the same --shards")
        if ck["loader"]["world"] != world or ck["loader"]["workers"] != cfg.loader_workers:
            raise ValueError(f"{ckpt_path}: saved with {ck['loader']['world']} ranks x {ck['loader']['workers']} "
                             f"loader workers; resume with the same numbers for the same sample order")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, epoch, consumed = ck["step"], ck["loader"]["epoch"], ck["loader"]["consumed"]
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.startswith("cuda"))
    total_steps = cfg.steps

    def payload() -> dict:
        return {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "subjects": subjects,
            "skeleton": skeleton.to_attrs(), "config": cfg.to_dict(), "schema_version": SCHEMA_VERSION,
            "step": step, "stores": [str(p) for p in paths],
            "loader": {"epoch": epoch, "consumed": consumed, "world": world, "workers": cfg.loader_workers},
        }

    log_file = csv_writer = writer = None
    if rank == 0:
        new = not (out / "log.csv").exists()
        log_file = open(out / "log.csv", "a", newline="")  # noqa: SIM115 - closed in finally
        csv_writer = csv.writer(log_file)
        if new:
            csv_writer.writerow(["step", "epoch", "total", "surface", "eikonal", "normal", "sub_surface",
                                 "sub_normal", "sdf", "points_per_s", "wall_s"])
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        except ImportError:  # tensorboard is optional at run time
            writer = None
    stream.set_epoch(epoch)
    planned = total_steps if total_steps is not None else cfg.epochs * len(stream)  # epochs differ by a shard at most
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=planned, initial=step, desc="train", unit="step")
    t0 = time.time()
    last = {"total": float("nan")}
    rate = 0.0
    try:
        while (total_steps is None and epoch < cfg.epochs) or (total_steps is not None and step < total_steps):
            stream.set_epoch(epoch, consumed)
            steps_this_epoch = len(stream)
            if world > 1:  # every rank must take the same number of steps
                n = torch.tensor(steps_this_epoch, device=device)
                dist.all_reduce(n, op=dist.ReduceOp.MIN)
                steps_this_epoch = int(n)
            loader = DataLoader(stream, batch_size=None, num_workers=cfg.loader_workers,
                                pin_memory=device.startswith("cuda"))
            for raw in loader:
                if consumed >= steps_this_epoch or (total_steps is not None and step >= total_steps):
                    break
                ts = time.time()
                for g, base in zip(opt.param_groups, base_lrs, strict=True):
                    g["lr"] = base * lr_factor(cfg, step, planned)
                batch = Batch(raw["points"], raw["normals"], raw["labels"], raw["eikonal"], raw["joint_transforms"],
                              raw["subject"], raw.get("eikonal_sdf")).to(device)
                with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu",
                                    dtype=torch.bfloat16, enabled=use_bf16):
                    loss, last = hipnet_loss(ddp, batch, cfg.lambda_eikonal, cfg.lambda_normal, cfg.subnet_losses,
                                             forward=ddp, lambda_sdf=cfg.lambda_sdf)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                dt = time.time() - ts
                npts = batch.points.shape[0] * (batch.points.shape[1] + batch.eikonal.shape[1]) * world
                rate = npts / max(dt, 1e-9)
                step += 1
                consumed += 1
                if rank == 0:
                    if step % cfg.log_every == 0 or step == 1:
                        csv_writer.writerow([step, epoch] + [f"{last.get(k, float('nan')):.6g}" for k in
                                            ("total", "surface", "eikonal", "normal", "sub_surface", "sub_normal", "sdf")]
                                            + [f"{rate:.0f}", f"{time.time() - t0:.1f}"])
                        log_file.flush()
                        if writer is not None:
                            for k, v in last.items():
                                writer.add_scalar(f"loss/{k}", v, step)
                            writer.add_scalar("perf/query_points_per_s", rate, step)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{last['total']:.4f}", pts_s=f"{rate:,.0f}")
                if step % cfg.checkpoint_every == 0 and rank == 0:
                    save_checkpoint(ckpt_path, payload())
                if stop_at_step is not None and step >= stop_at_step:
                    total_steps = step
                    break
                if max_seconds is not None:
                    stop = torch.tensor(float(time.time() - t0 > max_seconds), device=device)
                    if world > 1:  # every rank stops at the same step
                        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
                    if stop.item():
                        total_steps = step  # stop here, checkpoint below
                        break
            if consumed < steps_this_epoch:
                break  # stopped mid-epoch: the checkpoint keeps the epoch and what was consumed
            epoch += 1
            consumed = 0
        if rank == 0:
            save_checkpoint(ckpt_path, payload())
    finally:
        if bar is not None:
            bar.close()
        if log_file is not None:
            log_file.close()
        if writer is not None:
            writer.close()
    return Run(out, step, epoch, float(last.get("total", float("nan"))), rate)
