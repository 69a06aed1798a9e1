"""``hipnet-train``: train HIPNet on one or more stores.

The config override options are built from ``TrainConfig``'s fields (``OVERRIDES``, ``params.config_options``):
type, choices and help come from the field; none has a default of its own (an option left out keeps the preset's
value).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hipnet.cli.params import config_options
from hipnet.model.config import DEFAULT_PRESET, TrainConfig

# TrainConfig fields that hipnet-train can override, with the option name when it is not --field-name
OVERRIDES = {"steps": None, "epochs": None, "points_per_frame": None, "eikonal_per_frame": None,
             "frames_per_step": None, "loader_workers": "--workers", "seed": None, "amp": None}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--shards", multiple=True, required=True,
              help="Training stores: paths, URLs or glob patterns (repeat, or quote a glob: 'data/processed/*/train.zarr', "
                   "'s3://bucket/prefix/*/train.zarr'; a store on object storage streams through a local cache).")
@click.argument("more_shards", nargs=-1)
@click.option("--config", "config", default=DEFAULT_PRESET, show_default=True,
              help="Preset or a YAML/JSON file of overrides ('base: fast' picks the preset it overrides; fast when "
                   "absent). fast: 32-wide sub-networks with the documented departures from the paper (local joint "
                   "frames, soft-min union, oriented-distance term), 1,000 steps; it learns on a CPU (make demo, 20 "
                   "minutes on 2 cores) and on a GPU. long: fast "
                   "trained 6,000 steps (at most 2 hours on 2 cores). small: fast's sizes without the departures. "
                   "paper: the paper's sizes and loss (8 x 256 sub-networks, 25k + 25k points a frame, Adam 1e-4), "
                   "for GPUs and long runs; its formulation does not learn on a CPU budget (at 32 wide: 9% uniform "
                   "mIoU after 250 steps, 17% after 2,400; bench/results/accuracy.json and "
                   "accuracy_paper_long.json, paper-full).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder (runs/NAME).")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where its checkpoint stopped.")
@click.option("--max-minutes", type=float, default=None, help="Stop (with a checkpoint) after this much time.")
@click.option("--fit-schedule", is_flag=True,
              help="With --max-minutes: time the first steps, then shorten the plan (--steps at most) to what the "
                   "time holds, so the learning-rate decay ends when the time does (kept on --resume).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
@config_options(TrainConfig, OVERRIDES, flags={k: v for k, v in OVERRIDES.items() if v}, with_defaults=False,
                note_default=False)
def main(shards, more_shards, config, out, resume, max_minutes, fit_schedule, device, **overrides) -> None:
    """Train HIPNet on sharded stores written by `hipnet-data preprocess`: per-joint sub-networks along the
    skeleton read from the stores, pose encoder, subject codes (one per subject across all stores), the loss of
    the paper's equation 2. Writes config.json, log.csv, tb/ and an atomic ckpt.pt into --out. Options after
    --device override fields of the config.

    Multi-GPU: `torchrun --nproc-per-node N -m hipnet.cli.train ...` (the loader splits shards by rank).
    """
    import torch

    from hipnet.model.config import load_config, parse_overrides
    from hipnet.model.train import LoaderWorkerDied, TrainingDiverged, train

    try:
        cfg = load_config(config)
        given = {k: v for k, v in overrides.items() if v is not None}
        if "epochs" in given and "steps" not in given:
            given["steps"] = None  # an explicit epoch count wins over a preset's step count
        cfg = parse_overrides(cfg, given, "command line")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
        run = train(list(shards) + [str(p) for p in more_shards], cfg, out, device=device, resume=resume,
                    max_seconds=None if max_minutes is None else 60 * max_minutes, fit_schedule=fit_schedule)
    except (ValueError, OSError, TrainingDiverged, LoaderWorkerDied) as e:  # DataError is a ValueError: one line
        raise click.ClickException(str(e)) from e
    click.echo(f"{run.out}: step {run.step}, epoch {run.epoch}, loss {run.last_loss:.5f}, "
               f"{run.points_per_s:,.0f} query points/s; checkpoint {run.out / 'ckpt.pt'}")


if __name__ == "__main__":
    sys.exit(main())
