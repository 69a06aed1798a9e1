"""The paper's figure 6 (seed 000, section 5.1): test-time fitting of held-out subjects from 0 (the mean code), 1k,
5k, 10k and 1k front-only observed points, scored with uniform and near-surface IoU."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hipnet.model.config import FIT
from hipnet.model.fitting import fit_observation, observe_store
from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import Mesh, save_mesh
from hipnet.model.report import mesh_rows_png
from hipnet.pipeline.store.reading import Store


@dataclass(frozen=True)
class Setting:
    name: str  # the column of the table
    points: int
    front_only: bool

    @property
    def stem(self) -> str:
        return f"{self.name.split()[0]}{'_front' if self.front_only else ''}"


SETTINGS = (Setting("0 (mean code)", 0, False), Setting("1k", 1000, False), Setting("5k", 5000, False),
            Setting("10k", 10_000, False), Setting("1k front-only", 1000, True))


@dataclass
class Figure6:
    store: Path
    iters: int
    lr: float
    frames: list[str]  # frame keys, one per row
    table: list[dict]  # per frame and setting: frame, setting, uniform_iou, near_iou, loss
    rows: list[list[Mesh]]  # per frame: ground truth, then one fitted mesh per setting

    def mean(self) -> dict[str, dict[str, float]]:
        return {s.name: {k: float(np.mean([t[k] for t in self.table if t["setting"] == s.name]))
                         for k in ("uniform_iou", "near_iou")} for s in SETTINGS}


def figure6_frames(store: Store, per_subject: int = 1) -> list[int]:
    """``per_subject`` frames of each subject of the store, spread over its frames (the first when one)."""
    subj = store.read("frame/subject")
    frames = []
    for s in sorted(set(subj.tolist())):
        mine = np.flatnonzero(subj == s)
        frames += [int(mine[round(k * (len(mine) - 1) / max(1, per_subject - 1))]) for k in range(per_subject)]
    return frames


def run_figure6(model: HIPNet, store: Store, per_subject: int = 1, iters: int = FIT.iters, lr: float = FIT.lr,
                resolution: int = FIT.resolution, seed: int = 0, device: str = "cpu",
                progress: Callable[[int], None] | None = None) -> Figure6:
    """Every setting of ``SETTINGS`` on ``figure6_frames``; ``progress(1)`` after each fit."""
    if "eval" not in store.sections or "mesh" not in store.sections:
        raise ValueError(f"{store.path}: figure 6 needs ground-truth meshes and evaluation points (an evaluation store)")
    result = Figure6(store.path, iters, lr, [], [], [])
    for i in figure6_frames(store, per_subject):
        key, row = store.frame_key(i), []
        for s in SETTINGS:
            fit = fit_observation(model, observe_store(store, i, s.points, s.front_only, seed), iters, lr, resolution,
                                  s.front_only, device)
            row = row or [fit.truth]
            row.append(fit.mesh)
            result.table.append({"frame": key, "setting": s.name, "uniform_iou": fit.report["uniform_iou"],
                                 "near_iou": fit.report["near_iou"], "loss": fit.report["loss_last"]})
            if progress is not None:
                progress(1)
        result.frames.append(key)
        result.rows.append(row)
    return result


def write_figure6(out: Path, fig: Figure6) -> list[str]:
    """``figure6.md``, ``figure6.json``, ``figure6.png`` and the fitted meshes; returns the table's lines."""
    out.mkdir(parents=True, exist_ok=True)
    for key, row in zip(fig.frames, fig.rows, strict=True):
        for s, mesh in zip(SETTINGS, row[1:], strict=True):
            save_mesh(out / f"{key.replace('/', '_')}_{s.stem}.ply", mesh)
    mean = fig.mean()
    (out / "figure6.json").write_text(json.dumps({"store": str(fig.store), "iters": fig.iters, "lr": fig.lr,
                                                  "frames": fig.table, "mean": mean}, indent=2) + "\n")
    table = ["| points | uniform mIoU (%) | near-surface mIoU (%) |", "|---|---|---|"]
    table += [f"| {s.name} | {100 * mean[s.name]['uniform_iou']:.2f} | {100 * mean[s.name]['near_iou']:.2f} |"
              for s in SETTINGS]
    lines = ["# Test-time fitting of held-out subjects (seed 000, figure 6)", "",
             f"Store `{fig.store}`, {len(fig.frames)} frames; code from the mean training code, {fig.iters} iterations "
             f"of Adam at lr {fig.lr}, loss mean |F| over the points.", "", *table]
    (out / "figure6.md").write_text("\n".join(lines) + "\n")
    mesh_rows_png(out / "figure6.png", fig.rows, fig.frames, ["ground truth", *(s.name for s in SETTINGS)],
                  "test-time fitting (figure 6)")
    return table
