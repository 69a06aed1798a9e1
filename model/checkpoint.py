"""Checkpoints: atomic save, load with the file named in every error, the model rebuilt from one, and the checks
that decide whether a run may resume from one.

A checkpoint (``ckpt.pt``) holds ``model``, ``optimizer``, ``subjects`` (code names), ``skeleton``, ``config``,
``schema_version`` (of the stores it was trained on), ``step``, ``stores``, ``loader`` (epoch, consumed batches,
world size, loader workers) and ``rank_checksums`` (world x 2 n_params float64: every rank's parameter checksums at
the save, equal under DDP).

``load_checkpoint`` refuses, in one line naming the file, what is not such a checkpoint: an empty or truncated file
(a copy cut short), a file of another kind, a dict without the keys the commands read (``KEYS``), and
``model_from_checkpoint`` weights that do not fit the model the config builds or are not finite.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hipnet.model.config import ModelConfig, TrainConfig
from hipnet.model.hipnet import HIPNet
from hipnet.pipeline.core.skeleton import Skeleton

CKPT = "ckpt.pt"
KEYS = ("model", "subjects", "skeleton", "config", "schema_version", "step", "stores")  # what every command reads
RESUME_KEYS = ("optimizer", "loader")  # what --resume reads besides


def build_model(skeleton: Skeleton, n_subjects: int, cfg: ModelConfig) -> HIPNet:
    return HIPNet(skeleton, n_subjects, cfg)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write through a temporary file and a rename: an interrupted save never leaves a broken checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """The checkpoint dict at ``path``; a one-line error naming the file when it is missing, empty, truncated,
    not a checkpoint or lacks one of ``KEYS``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a checkpoint; was it cut off while being copied?")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file whatever torch raises
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{path}: not a readable checkpoint ({size} bytes; truncated, or not written by "
                         f"hipnet-train): {type(e).__name__}: {first}") from None
    if not isinstance(ck, dict):
        raise ValueError(f"{path}: holds a {type(ck).__name__}, not a hipnet-train checkpoint")
    missing = [k for k in KEYS if k not in ck]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)} (has {', '.join(sorted(map(str, ck)))}); "
                         "not written by this version of hipnet-train")
    return ck


def model_from_checkpoint(ckpt: dict, source: Path | str = "checkpoint") -> HIPNet:
    """The trained model of a checkpoint dict (``load_checkpoint``); ``source`` names it in errors: weights that do
    not fit the model its config builds, or that are not finite (a run that diverged before it was saved)."""
    cfg = TrainConfig.from_dict(ckpt["config"], source=f"{source} config")
    model = build_model(Skeleton.from_attrs(ckpt["skeleton"]), len(ckpt["subjects"]), cfg.model)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # missing, unexpected or misshapen tensors: torch lists them over several lines
        raise ValueError(f"{source}: model weights do not fit the model its config builds: "
                         f"{' '.join(str(e).split())[:300]}") from None
    bad = [name for name, t in ckpt["model"].items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{source}: weights not finite in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
                         "the run diverged before this checkpoint was written")
    return model


def parameter_checksums(model: torch.nn.Module) -> torch.Tensor:
    """(2 n_params,) float64: each parameter tensor's sum and sum of squares, in ``named_parameters`` order."""
    params = [p.detach().double() for p in model.parameters()]
    return torch.stack([p.sum() for p in params] + [(p * p).sum() for p in params])


def check_resumable(ck: dict, path: Path, *, subjects: list[str], world: int, workers: int,
                    schema_version: int) -> None:
    """Refuse (one-line ``ValueError`` naming ``path``) a checkpoint that cannot continue on these stores with this
    world size: other subjects, another store schema, or another ranks x workers split (the sample order is a
    function of both; see ``hipnet.model.data``)."""
    missing = [k for k in RESUME_KEYS if k not in ck]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}, so a run cannot resume from it")
    saved = ck.get("schema_version")
    if saved != schema_version:
        raise ValueError(f"{path}: checkpoint written for store schema_version {saved!r}, these stores have "
                         f"schema_version {schema_version!r}; retrain, or preprocess the stores with the matching "
                         "version")
    if ck["subjects"] != subjects:
        raise ValueError(f"{path}: trained on subjects {ck['subjects'][:5]}..., these stores have "
                         f"{subjects[:5]}...; resume with the same --shards")
    loader = ck["loader"]
    if loader["world"] != world or loader["workers"] != workers:
        raise ValueError(f"{path}: saved with {loader['world']} ranks x {loader['workers']} loader workers; resume "
                         "with the same numbers for the same sample order (the order depends on both)")
