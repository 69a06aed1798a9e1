"""What ``Trainer.fit`` does at each step boundary, one concern a callback: the schedule fitted to the time, the
log and its finiteness check, the progress bar, periodic checkpoints, and the stop conditions.

A callback sees the trainer after each optimiser step (``on_step``, with the step's batch and detached loss terms)
and returns whether the run should stop there; ``fit`` calls them in list order, every one each step. None of them
reads a device value except where it says so (the logging step's floats, the schedule's two timing syncs).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

import torch

from hipnet.model.losses import Batch
from hipnet.model.trainlog import TrainLog

if TYPE_CHECKING:
    from hipnet.model.trainer import Trainer

#: steps after the start of ``fit`` between which a fitted schedule times the steps (the first fill the buffer)
PROBE_STEPS = (10, 40)
#: steps between two refits of a fitted plan, each to the step time measured since the one before
REFIT_EVERY = 25


class Callback(Protocol):
    def on_step(self, trainer: Trainer, batch: Batch, terms: dict[str, torch.Tensor]) -> bool:
        """Called after each optimiser step; True stops the run at this step."""
        ...


class FitSchedule:
    """A schedule fitted to the time (``Trainer`` module docstring): the clock starts ``PROBE_STEPS[0]`` steps
    into the run; ``PROBE_STEPS[1]`` steps in, the plan is fitted to the rest of ``max_seconds`` at the step time
    measured since, and then every ``REFIT_EVERY`` steps again at the step time since the last fit, so a machine
    that slows down (or speeds up) partway still ends its decay when the time runs out. One device sync at each."""

    def __init__(self, log: TrainLog | None, started: float, start_step: int, max_seconds: float) -> None:
        self.log, self.started, self.start_step, self.max_seconds = log, started, start_step, max_seconds
        self.mark: tuple[float, int] | None = None  # (time, step) the next fit measures from

    def _due(self, steps: int) -> bool:
        return steps == PROBE_STEPS[1] or (steps > PROBE_STEPS[1] and (steps - PROBE_STEPS[1]) % REFIT_EVERY == 0)

    def on_step(self, trainer: Trainer, batch: Batch, terms: dict[str, torch.Tensor]) -> bool:
        steps = trainer.step - self.start_step
        if steps != PROBE_STEPS[0] and not (self.mark is not None and self._due(steps)):
            return False
        float(terms["total"])  # wait for the step
        now = time.monotonic()
        if self.mark is not None:
            since, at = self.mark
            planned = trainer.fit_plan((now - since) / (trainer.step - at), self.max_seconds - (now - self.started))
            if self.log is not None:
                self.log.replan(planned)
        self.mark = (now, trainer.step)
        return False


class StepLog:
    """Every ``log_every`` steps and the first: the terms read as floats (the one sync), the throughput of the
    query points since the last logging step, the row written (rank 0), the finiteness flags checked."""

    def __init__(self, log: TrainLog | None, started: float) -> None:
        self.log, self.started = log, started
        self.since, self.points, self.rate = started, 0, 0.0

    def on_step(self, trainer: Trainer, batch: Batch, terms: dict[str, torch.Tensor]) -> bool:
        self.points += batch.points.shape[0] * (batch.points.shape[1] + batch.eikonal.shape[1])
        if trainer.step % trainer.cfg.log_every and trainer.step != 1:
            return False
        values = {k: float(v) for k, v in terms.items()}
        now = time.monotonic()
        self.rate = self.points * trainer.world / max(now - self.since, 1e-9)
        if self.log is not None:
            self.log.write(trainer.step, trainer.epoch, values, self.rate, now - self.started)
        trainer.check_finite()  # the flags are ready: the floats above waited for the step
        self.since, self.points = now, 0
        return False

    def final_rate(self, world: int) -> float:
        """The throughput of the steps since the last logging step (after a sync), else the last logged one."""
        if self.points:
            return self.points * world / max(time.monotonic() - self.since, 1e-9)
        return self.rate


class Progress:
    """The progress bar, one step at a time (rank 0)."""

    def __init__(self, log: TrainLog | None) -> None:
        self.log = log

    def on_step(self, trainer: Trainer, batch: Batch, terms: dict[str, torch.Tensor]) -> bool:
        if self.log is not None:
            self.log.advance()
        return False


class PeriodicCheckpoint:
    """A checkpoint every ``checkpoint_every`` steps."""

    def on_step(self, trainer: Trainer, batch: Batch, terms: dict[str, torch.Tensor]) -> bool:
        if trainer.step % trainer.cfg.checkpoint_every == 0:
            trainer.save()
        return False


class StopAt:
    """Stop at ``stop_at_step`` or when ``max_seconds`` since ``started`` have passed (a host clock; under DDP
    every rank stops at the same step); the plan ends there, so the final checkpoint keeps the place."""

    def __init__(self, started: float, max_seconds: float | None, stop_at_step: int | None) -> None:
        self.started, self.max_seconds, self.stop_at_step = started, max_seconds, stop_at_step

    def on_step(self, trainer: Trainer, batch: Batch, terms: dict[str, torch.Tensor]) -> bool:
        if (self.stop_at_step is not None and trainer.step >= self.stop_at_step) or \
                trainer.out_of_time(self.started, self.max_seconds):
            trainer.limit = trainer.step
            return True
        return False
