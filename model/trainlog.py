"""Rank 0's record of a training run: ``log.csv``, TensorBoard (``tb/``) and the progress bar.

The CSV columns are ``step, epoch``, then the loss's own terms in the order its dictionary gives them, then
``points_per_s, wall_s``: a loss that returns a new term gets a new column without any change here. A resumed run
appends to the file; if its terms differ from the file's columns, the file is rewritten once with the union of the
columns (earlier rows keep empty cells for the new ones).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

LOG = "log.csv"


class TrainLog:
    """``write`` one row per logging step; ``advance`` the progress bar every step (no values, no device sync)."""

    def __init__(self, out: Path, *, planned: int, initial_step: int, progress: bool) -> None:
        self.path = Path(out) / LOG
        self.header: list[str] | None = None
        self.file = None
        self.csv: csv.writer | None = None
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tb"))
        except ImportError:  # tensorboard is optional at run time
            self.tb = None
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=planned, initial=initial_step, desc="train", unit="step")

    def _open(self, header: list[str]) -> None:
        old: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                old = next(csv.reader(f), None)
        if old is not None and old != header:  # rewrite with the union of the columns, through a rename
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            tail = ["points_per_s", "wall_s"]
            header = [k for k in old if k not in tail] + [k for k in header if k not in old and k not in tail] + tail
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, header, restval="")
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, self.path)
        self.header = header
        self.file = open(self.path, "a", newline="")  # noqa: SIM115 - closed in close()
        self.csv = csv.writer(self.file)
        if old is None:
            self.csv.writerow(header)

    def write(self, step: int, epoch: int, terms: dict[str, float], points_per_s: float, wall_s: float) -> None:
        """One row of floats (the caller has already read the terms off the device)."""
        if self.header is None:
            self._open(["step", "epoch", *terms, "points_per_s", "wall_s"])
        values = {"step": step, "epoch": epoch, "points_per_s": f"{points_per_s:.0f}", "wall_s": f"{wall_s:.1f}"}
        values |= {k: f"{v:.6g}" for k, v in terms.items()}
        self.csv.writerow([values.get(k, "") for k in self.header])
        self.file.flush()
        if self.tb is not None:
            for k, v in terms.items():
                self.tb.add_scalar(f"loss/{k}", v, step)
            self.tb.add_scalar("perf/query_points_per_s", points_per_s, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{terms.get('total', float('nan')):.4f}", pts_s=f"{points_per_s:,.0f}")

    def replan(self, planned: int) -> None:
        """The run's plan changed (a schedule fitted to the time): the progress bar's total follows."""
        if self.bar is not None:
            self.bar.total = planned
            self.bar.refresh()

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
