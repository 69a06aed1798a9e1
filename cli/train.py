"""``hipnet-train``: train HIPNet on one or more stores."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--shards", multiple=True, required=True,
              help="Training stores: paths or glob patterns (repeat, or quote a glob: 'data/processed/*/train.zarr').")
@click.argument("more_shards", nargs=-1, type=click.Path(path_type=Path))
@click.option("--config", "config", default="small", show_default=True,
              help="Preset (paper: the paper's sizes; small: a CPU-sized model; fast: small plus three documented "
                   "departures from the paper that converge in minutes on a CPU, used by `make demo`) or a "
                   "YAML/JSON file of overrides ('base: small' picks the preset it overrides).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder (runs/NAME).")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where its checkpoint stopped.")
@click.option("--steps", type=int, default=None, help="Train this many steps in total (overrides --epochs).")
@click.option("--epochs", type=int, default=None, help="Train this many epochs in total.")
@click.option("--max-minutes", type=float, default=None, help="Stop (with a checkpoint) after this much time.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
@click.option("--points-per-frame", type=int, default=None, help="Surface points per frame and step.")
@click.option("--frames-per-step", type=int, default=None, help="Frames per step (batch size in frames).")
@click.option("--workers", "loader_workers", type=int, default=None, help="Loader worker processes per rank.")
@click.option("--seed", type=int, default=None)
def main(shards, more_shards, config, out, resume, steps, epochs, max_minutes, device, points_per_frame,
         frames_per_step, loader_workers, seed) -> None:
    """Train HIPNet on sharded stores written by `hipnet-data preprocess`: per-joint sub-networks along the
    skeleton read from the stores, pose encoder, subject codes (one per subject across all stores), the loss of
    the paper's equation 2. Writes config.json, log.csv, tb/ and an atomic ckpt.pt into --out.

    Multi-GPU: `torchrun --nproc-per-node N -m hipnet.cli.train ...` (the loader splits shards by rank).
    """
    import torch

    from hipnet.model.config import load_config
    from hipnet.model.train import train

    try:
        cfg = load_config(config)
        overrides = {k: v for k, v in dict(steps=steps, epochs=epochs, points_per_frame=points_per_frame,
                                           frames_per_step=frames_per_step, loader_workers=loader_workers,
                                           seed=seed).items() if v is not None}
        if epochs is not None and steps is None:
            overrides["steps"] = None  # an explicit epoch count wins over a preset's step count
        if points_per_frame is not None:
            overrides["eikonal_per_frame"] = points_per_frame
        cfg = replace(cfg, **overrides)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
        run = train(list(shards) + [str(p) for p in more_shards], cfg, out, device=device, resume=resume,
                    max_seconds=None if max_minutes is None else 60 * max_minutes)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{run.out}: step {run.step}, epoch {run.epoch}, loss {run.last_loss:.5f}, "
               f"{run.points_per_s:,.0f} query points/s; checkpoint {run.out / 'ckpt.pt'}")


if __name__ == "__main__":
    sys.exit(main())
