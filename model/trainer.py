"""The trainer: set-up, one training step, checkpoint state, and the loop that ties them to logging.

``Trainer(shards, cfg, out, device=, loss_fn=)`` builds the loader, the model and the optimiser; ``setup(resume)``
restores a checkpoint (or refuses to overwrite one), writes ``config.json`` and wraps the model in DDP under
torchrun; ``train_step(batch)`` is one optimiser step; ``state_dict`` / ``load_state_dict`` / ``save`` are the
checkpoint; ``fit(...)`` runs the epochs and returns a ``Run``.

No host synchronisation inside a step: the loss returns detached 0-d tensors, read as floats only on logging steps
(every ``log_every`` steps and the first), where the throughput is also measured (points since the last log over
the wall time since, so no per-step ``cuda.synchronize``). The ``max_seconds`` check reads a host clock; under DDP
its verdict is all-reduced so every rank stops at the same step.

Divergence: each step folds "was the loss finite, was the gradient norm finite" into a small device tensor that
keeps the first bad step (no host sync); it is read on logging steps and before every checkpoint, where the
parameters' checksums (computed for the DDP check anyway) also prove them finite. A bad step stops the run with
``TrainingDiverged`` naming the step and the last good checkpoint, which is kept: parameters that went non-finite
are never saved. A frame the loader refuses (``DataError``) stops the run with a checkpoint of the steps trained
so far (one process; under DDP the last periodic checkpoint is the one kept).

A schedule fitted to the time (``fit(max_seconds=..., fit_schedule=True)``, ``hipnet-train --max-minutes M
--fit-schedule``): the run times its steps ``callbacks.PROBE_STEPS`` after it starts (the first ones fill the shuffle
buffer), then shortens its plan (``cfg.steps`` at most) to the steps the rest of the time holds at that rate, less
``TIME_MARGIN``, and fits it again every ``callbacks.REFIT_EVERY`` steps to the step time since, so the cosine decay
reaches ``lr_final`` when the time runs out instead of being cut off on a slow machine or one that slows down
partway; on a fast one a larger ``--steps`` lets it use the whole time. Before the plan is fitted the schedule is
the configured one (at step 40 of 1,000 the two differ by under 0.3%). The plan is kept in the checkpoint
(``schedule``): a resumed run continues the same curve and does not fit again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from hipnet.model import precision
from hipnet.model.callbacks import Callback, FitSchedule, PeriodicCheckpoint, Progress, StepLog, StopAt
from hipnet.model.checkpoint import (
    CKPT,
    build_model,
    check_resumable,
    load_checkpoint,
    parameter_checksums,
    save_checkpoint,
)
from hipnet.model.config import TrainConfig
from hipnet.model.data import DataError, FrameStream, expand_shards
from hipnet.model.losses import Batch, LossFn, loss_for
from hipnet.model.support import part_boxes
from hipnet.model.trainlog import TrainLog

#: share of the remaining time a fitted schedule plans steps for (the rest absorbs a slower stretch later on)
TIME_MARGIN = 0.97


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


def lr_factor(cfg: TrainConfig, step: int, planned: int) -> float:
    """Learning-rate multiplier at ``step`` (a pure function of the step, so a resumed run continues the curve)."""
    if cfg.lr_schedule == "constant":
        return 1.0
    t = min(step / max(planned, 1), 1.0)  # cosine from 1 to lr_final
    return cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t))


@contextlib.contextmanager
def _quiet_sigchld():
    """SIGCHLD at its default (ignored, children not reaped) for the block: torch's loader installs a handler that
    raises whenever a worker has died, which would interrupt the checkpoint written after a worker's death."""
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)


class LoaderWorkerDied(RuntimeError):
    """A loader worker process died (killed, or out of memory); the steps trained so far are kept."""


class TrainingDiverged(RuntimeError):
    """The loss, a gradient or the parameters went NaN or inf: one line naming the run, the step and the
    checkpoint that is kept."""


class Trainer:
    """One training run in ``out`` on the stores ``shards``; ``loss_fn`` defaults to equation 2 with ``cfg``'s
    weights (``losses.loss_for``). Its terms, whatever they are, become the columns of ``log.csv``."""

    def __init__(self, shards: Sequence[str | Path], cfg: TrainConfig, out: Path, *, device: str = "cpu",
                 loss_fn: LossFn | None = None) -> None:
        self.cfg, self.out, self.device = cfg, Path(out), device
        self.rank, self.world = init_distributed(device)
        self.paths = expand_shards(shards)
        self.stream = FrameStream.from_config(self.paths, cfg, rank=self.rank, world=self.world)
        self.subjects, self.skeleton = self.stream.stores.subjects, self.stream.stores.skeleton
        self.schema_version = self.stream.stores.schema_version
        torch.manual_seed(cfg.seed)
        self.model = build_model(self.skeleton, len(self.subjects), cfg.model).to(device)
        if cfg.model.part_support:  # every rank reads the same frames, so the boxes agree without a broadcast
            self.model.set_support(part_boxes(self.stream.stores.stores, self.skeleton.num_joints).to(device))
        codes = list(self.model.codes.parameters()) if self.model.codes is not None else []
        other = [p for n, p in self.model.named_parameters() if not n.startswith("codes.")]
        groups = [{"params": other, "lr": cfg.lr}] + ([{"params": codes, "lr": cfg.code_lr or cfg.lr}] if codes else [])
        self.optimizer = torch.optim.Adam(groups)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.module: torch.nn.Module = self.model  # what the loss runs: the model, or its DDP wrapper
        self.loss_fn = loss_fn or loss_for(cfg)
        self.precision = precision.resolve(cfg.amp, device)
        self.step, self.epoch, self.consumed = 0, 0, 0  # consumed: batches of the current epoch trained on
        self.limit = cfg.steps  # last step of the run; None: run cfg.epochs epochs
        self.planned = cfg.steps if cfg.steps is not None else sum(self._epoch_steps(range(cfg.epochs)))
        self.fitted = False  # the plan was fitted to a time budget (fit_schedule), kept in the checkpoint
        self.plan_cap = self.planned  # the configured plan: a fitted one never goes beyond it
        self.saved_step: int | None = None  # step of the checkpoint in ``out`` (written or resumed from)
        self.verified_step = 0  # last step whose parameters were checked finite (a checkpoint, or the start)
        # first step whose loss (0) or gradient (1) was not finite, -1 while none: updated on the device each step
        self.first_bad = torch.full((2,), -1, dtype=torch.long, device=device)

    @property
    def ckpt_path(self) -> Path:
        return self.out / CKPT

    # -- set-up ------------------------------------------------------------------------------------------------

    def setup(self, resume: bool = False) -> None:
        """Restore ``out/ckpt.pt`` when ``resume`` (refusing one from other stores, schema or world size), refuse to
        overwrite an existing run otherwise; write ``config.json``; wrap the model in DDP when world > 1."""
        if resume:
            ck = load_checkpoint(self.ckpt_path)
            check_resumable(ck, self.ckpt_path, subjects=self.subjects, world=self.world,
                            workers=self.cfg.loader_workers, schema_version=self.schema_version)
            self.load_state_dict(ck)
            self.saved_step = self.verified_step = self.step
        elif self.ckpt_path.exists():
            raise FileExistsError(f"{self.ckpt_path} exists: pass --resume to continue it, or choose another --out")
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        if self.world > 1:
            self.module = torch.nn.parallel.DistributedDataParallel(self.model)

    def _epoch_steps(self, epochs: Sequence[int]) -> list[int]:
        """Steps of each of ``epochs``: this rank's batches, the minimum over ranks under DDP (every rank must take
        the same number of steps)."""
        n = [sum(self.stream.batches_per_worker(e)) for e in epochs]
        if self.world > 1 and n:
            t = torch.tensor(n, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            n = t.tolist()
        return n

    # -- checkpoint ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "subjects": self.subjects,
            "skeleton": self.skeleton.to_attrs(), "config": self.cfg.to_dict(), "schema_version": self.schema_version,
            "step": self.step, "stores": [str(p) for p in self.paths],
            "loader": {"epoch": self.epoch, "consumed": self.consumed, "world": self.world,
                       "workers": self.cfg.loader_workers},
            "schedule": {"planned": self.planned, "fitted": self.fitted},
        }

    def load_state_dict(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.step, self.epoch, self.consumed = ck["step"], ck["loader"]["epoch"], ck["loader"]["consumed"]
        schedule = ck.get("schedule", {})  # absent in checkpoints written before fitted schedules
        if schedule.get("fitted"):
            self.planned, self.limit, self.fitted = schedule["planned"], schedule["planned"], True

    def rank_checksums(self) -> torch.Tensor:
        """(world, 2 n_params) float64: every rank's parameter checksums (a collective under DDP: all ranks call)."""
        mine = parameter_checksums(self.model)
        if self.world == 1:
            return mine[None].cpu()
        rows = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(rows, mine)
        return torch.stack(rows).cpu()

    def save(self) -> None:
        """Checkpoint (every rank calls it; rank 0 writes), only of finite parameters after finite steps
        (``check_finite``). Under DDP the ranks' parameters must be equal: a difference means the gradient averaging
        failed, and the run stops with an error."""
        sums = self.rank_checksums()
        self.check_finite(sums)
        if not torch.equal(sums, sums[:1].expand_as(sums)):
            raise RuntimeError(f"step {self.step}: the {self.world} ranks' parameters differ (DDP out of step)")
        if self.rank == 0:
            save_checkpoint(self.ckpt_path, self.state_dict() | {"rank_checksums": sums})
        self.saved_step = self.verified_step = self.step

    # -- divergence ----------------------------------------------------------------------------------------------

    def kept_text(self) -> str:
        """Which checkpoint a stopped run leaves, for its error message."""
        if self.saved_step is None:
            return (f"no checkpoint was written (the first is due at step {self.cfg.checkpoint_every}); nothing to "
                    "resume")
        return f"the last good checkpoint {self.ckpt_path} (step {self.saved_step}) is kept and usable"

    def check_finite(self, sums: torch.Tensor | None = None) -> None:
        """Raise ``TrainingDiverged`` when a step so far had a non-finite loss or gradient, or when the parameter
        checksums ``sums`` (``rank_checksums``; None: not checked) are not finite. Reads the device: call it where
        the loop waits for the device anyway (logging and checkpoint steps). Under DDP every rank calls it."""
        first = self.first_bad.clone()
        if self.world > 1:
            dist.all_reduce(first, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        loss_step, grad_step = first.tolist()
        if loss_step >= 0 and not 0 <= grad_step < loss_step:  # the first of the two (a bad loss spoils both)
            problem = f"the loss is not finite at step {loss_step}"
        elif grad_step >= 0:
            problem = f"a gradient is not finite at step {grad_step} (the loss is finite)"
        elif sums is not None and not torch.isfinite(sums).all():
            problem = (f"the parameters are not finite at step {self.step} (finite at step {self.verified_step}): "
                       f"they went wrong in steps {self.verified_step + 1}-{self.step}")
        else:
            return
        raise TrainingDiverged(f"{self.out}: training stopped at step {self.step}: {problem}; parameters after step "
                               f"{self.saved_step or 0} are not saved; {self.kept_text()}")

    # -- one step ------------------------------------------------------------------------------------------------

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One optimiser step at ``self.step``'s learning rate; returns the loss terms (detached tensors, on the
        device: nothing here waits for it)."""
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * lr_factor(self.cfg, self.step, self.planned)
        with precision.matmul_precision(self.precision, self.device):
            with precision.autocast(self.precision, self.device):
                loss, terms = self.loss_fn(self.module, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
            bad = torch.stack([~torch.isfinite(loss.detach()), ~torch.isfinite(norm)])
            self.first_bad = torch.where(bad & (self.first_bad < 0), self.step + 1, self.first_bad)  # on the device
            self.optimizer.step()
        return terms

    # -- the loop ------------------------------------------------------------------------------------------------

    def _done(self) -> bool:
        return self.epoch >= self.cfg.epochs if self.limit is None else self.step >= self.limit

    def out_of_time(self, started: float, max_seconds: float | None) -> bool:
        """Whether ``max_seconds`` have passed since ``started`` (every rank's verdict the same under DDP)."""
        if max_seconds is None:
            return False
        over = time.monotonic() - started > max_seconds  # a host clock: no device sync
        if self.world == 1:
            return over
        flag = torch.tensor(float(over), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        return bool(flag.item())

    @staticmethod
    def check_fit_schedule(max_seconds: float | None, fit_schedule: bool) -> None:
        """Refuse (``ValueError``) a fitted schedule without a time budget to fit it to."""
        if fit_schedule and max_seconds is None:
            raise ValueError("a schedule fitted to the time needs a time budget (--max-minutes)")

    def fit_plan(self, seconds_per_step: float, seconds_left: float) -> int:
        """Fit the plan to the time left: the steps ``TIME_MARGIN`` of ``seconds_left`` holds at
        ``seconds_per_step``, at most the configured ones, at least one more. Under DDP every rank takes the
        smallest plan. Returns the new plan."""
        fits = self.step + int(TIME_MARGIN * max(seconds_left, 0.0) / max(seconds_per_step, 1e-9))
        planned = max(self.step + 1, min(self.plan_cap, fits))
        if self.world > 1:
            t = torch.tensor(planned, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            planned = int(t.item())
        self.planned, self.limit, self.fitted = planned, planned, True
        return planned

    def _epoch_loader(self) -> tuple[DataLoader, int]:
        """The loader of the current epoch, from where it stands (``consumed``), and the epoch's step count."""
        self.stream.set_epoch(self.epoch, self.consumed)
        (steps_this_epoch,) = self._epoch_steps([self.epoch])
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.cfg.loader_workers,
                            pin_memory=self.device.startswith("cuda"))
        return loader, steps_this_epoch

    def _bad_frame(self, e: DataError) -> DataError:
        """A frame the loader refused: the steps trained so far saved (one process), the error saying where."""
        if self.world == 1 and self.step > (self.saved_step or 0):
            self.save()  # the steps trained so far are good: keep them (may raise TrainingDiverged)
        return DataError(f"{e}; training stopped at step {self.step}; {self.kept_text()}")

    def _worker_death(self, e: Exception, mid_step: bool) -> LoaderWorkerDied | None:
        """``LoaderWorkerDied`` when ``e`` says a loader worker vanished (torch's "DataLoader worker (pid(s) N)
        ...", or the pipe to it reset), after saving the steps so far when it came between steps; else None."""
        if not ("DataLoader worker" in str(e) or (isinstance(e, ConnectionError | EOFError)
                                                  and self.cfg.loader_workers > 0)):
            return None
        # the loader is abandoned: torch's handler would raise again at the next SIGCHLD, inside the save below or
        # while the log closes; SIGCHLD stays quiet until ``fit`` has closed the log
        self._after_death.enter_context(_quiet_sigchld())
        if self.world == 1 and not mid_step and self.step > (self.saved_step or 0):
            self.save()  # between steps: every step so far had its whole batch; --resume goes on here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        return LoaderWorkerDied(f"{self.out}: a loader worker process died at step {self.step} ({type(e).__name__}: "
                                f"{first}); {self.kept_text()}; rerun with --resume to continue exactly")

    def fit(self, progress: bool = True, max_seconds: float | None = None, stop_at_step: int | None = None,
            fit_schedule: bool = False) -> Run:
        """Train until ``cfg.steps`` (or ``cfg.epochs``) are done, checkpoint every ``checkpoint_every`` steps and at
        the end. ``stop_at_step`` interrupts at that step (the schedule still planned for the whole run);
        ``max_seconds`` stops early at a step boundary. Both leave a checkpoint that ``--resume`` continues.
        ``fit_schedule`` (with ``max_seconds``) fits the plan to the time (module docstring). What happens between
        steps is ``model/callbacks.py``'s, in this order: the fitted schedule, the log, the progress bar, the
        periodic checkpoint, the stop conditions."""
        self.check_fit_schedule(max_seconds, fit_schedule)
        log = TrainLog(self.out, planned=self.planned, initial_step=self.step,
                       progress=progress) if self.rank == 0 else None
        started = time.monotonic()
        step_log = StepLog(log, started)
        callbacks: list[Callback] = [step_log, Progress(log), PeriodicCheckpoint(),
                                     StopAt(started, max_seconds, stop_at_step)]
        if fit_schedule and not self.fitted:
            callbacks.insert(0, FitSchedule(log, started, self.step, max_seconds))
        terms: dict[str, torch.Tensor] = {}
        self._after_death = contextlib.ExitStack()  # what a dead loader worker quiets until the end (_worker_death)
        try:
            terms = self._loop(callbacks)
            self.save()
        finally:
            if log is not None:
                log.close()
            self._after_death.close()
        last = float(terms["total"]) if "total" in terms else float("nan")
        return Run(self.out, self.step, self.epoch, last, step_log.final_rate(self.world))

    def _loop(self, callbacks: Sequence[Callback]) -> dict[str, torch.Tensor]:
        """The epochs and their steps, each followed by the callbacks, until the plan is done or one stops the run;
        a frame the loader refuses or a dead loader worker become their one-line errors. Returns the last step's
        terms."""
        terms: dict[str, torch.Tensor] = {}
        # torch reports a dead loader worker from a SIGCHLD handler, which raises wherever the main thread is: maybe
        # inside a step, between its optimiser update and the step count; then the state is not a step's state
        mid_step = False
        try:
            while not self._done():
                loader, steps_this_epoch = self._epoch_loader()
                for raw in loader:
                    if self.consumed >= steps_this_epoch or self._done():
                        break
                    batch = Batch.from_dict(raw).to(self.device)
                    mid_step = True
                    terms = self.train_step(batch)
                    self.step += 1
                    self.consumed += 1
                    mid_step = False
                    stop = False
                    for callback in callbacks:
                        stop |= callback.on_step(self, batch, terms)
                    if stop:
                        break
                if self.consumed < steps_this_epoch:
                    break  # stopped mid-epoch: the checkpoint keeps the epoch and what was consumed
                self.epoch += 1
                self.consumed = 0
        except DataError as e:
            raise self._bad_frame(e) from None
        except (RuntimeError, ConnectionError, EOFError) as e:
            died = self._worker_death(e, mid_step)
            if died is None:
                raise
            raise died from None
        return terms
