"""Checkpoints: atomic save, load with the file named in every error, the model rebuilt from one, and the checks
that decide whether a run may resume from one.

A checkpoint (``ckpt.pt``) holds ``model``, ``optimizer``, ``subjects`` (code names), ``skeleton``, ``config``,
``schema_version`` (of the stores it was trained on), ``step``, ``stores``, ``loader`` (epoch, consumed batches,
world size, loader workers) and ``rank_checksums`` (world x 2 n_params float64: every rank's parameter checksums at
the save, equal under DDP).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hipnet.model.config import ModelConfig, TrainConfig
from hipnet.model.hipnet import HIPNet
from hipnet.pipeline.skeleton import Skeleton

CKPT = "ckpt.pt"


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
    cfg = TrainConfig.from_dict(ckpt["config"], source="checkpoint config")
    model = build_model(Skeleton.from_attrs(ckpt["skeleton"]), len(ckpt["subjects"]), cfg.model)
    model.load_state_dict(ckpt["model"])
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
