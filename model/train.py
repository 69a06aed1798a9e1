"""Training entry point: ``train(shards, cfg, out, ...)`` runs a ``Trainer`` (``model/trainer.py``) in a run folder.

A run folder holds ``config.json`` (the resolved config), ``ckpt.pt`` (latest checkpoint: model, optimiser, subject
codes with their names, loader state, config, schema version; ``model/checkpoint.py``), ``log.csv`` (one column per
loss term; ``model/trainlog.py``) and ``tb/`` (TensorBoard).

The checkpoint helpers, ``lr_factor`` and ``Run`` are re-exported here for the commands and tests that import them
from this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hipnet.model.checkpoint import CKPT, build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from hipnet.model.config import TrainConfig
from hipnet.model.losses import LossFn
from hipnet.model.trainer import LoaderWorkerDied, Run, Trainer, TrainingDiverged, init_distributed, lr_factor

__all__ = ["CKPT", "LoaderWorkerDied", "Run", "Trainer", "TrainingDiverged", "build_model", "init_distributed",
           "load_checkpoint", "lr_factor", "model_from_checkpoint", "save_checkpoint", "train"]


def train(shards: Sequence[str | Path], cfg: TrainConfig, out: Path, device: str = "cpu", resume: bool = False,
          progress: bool = True, max_seconds: float | None = None, stop_at_step: int | None = None,
          loss_fn: LossFn | None = None, fit_schedule: bool = False) -> Run:
    """Train (or continue, with ``resume``) a run in ``out``. ``cfg.steps`` (or ``cfg.epochs``) bounds the run;
    ``stop_at_step`` interrupts it at that step with a checkpoint, the learning-rate schedule still planned for the
    whole run; ``max_seconds`` stops it early at a step boundary with a checkpoint (for time-boxed demos), and with
    ``fit_schedule`` the run fits its plan (at most ``cfg.steps``) to that time so the cosine decay ends with it
    (``model/trainer.py``).
    ``loss_fn(module, batch) -> LossResult`` replaces equation 2 (``losses.loss_for(cfg)``); every term it returns
    is logged."""
    Trainer.check_fit_schedule(max_seconds, fit_schedule)  # before the run folder is made
    trainer = Trainer(shards, cfg, out, device=device, loss_fn=loss_fn)
    trainer.setup(resume=resume)
    return trainer.fit(progress=progress, max_seconds=max_seconds, stop_at_step=stop_at_step,
                       fit_schedule=fit_schedule)
