"""What ``hipnet-view`` was pointed at: stores and runs, opened once, each failure kept as a one-line problem that
the page and the console show (the viewer starts whatever could be opened, and starts with nothing at all).

- a store: a Zarr folder (``zarr.json``), opened with ``Store.open`` for the arrays the viewer reads (its files
  checked, nothing read but the three id columns: frames are read one at a time);
- a run: a folder with ``log.csv`` and/or ``ckpt.pt``, or the checkpoint file itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hipnet.model.checkpoint import CKPT, load_checkpoint, model_from_checkpoint
from hipnet.model.hipnet import HIPNet
from hipnet.model.trainlog import LOG
from hipnet.pipeline.core.location import as_path
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import SPECS
from hipnet.pipeline.store.zarrstore import open_group
from hipnet.viz.scene import VIEW_ARRAYS, SequenceIndex, read_log


@dataclass
class StoreSource:
    path: Path
    store: Store
    index: SequenceIndex


@dataclass
class RunSource:
    path: Path  # the run folder
    log: dict[str, np.ndarray] | None = None  # log.csv's columns
    checkpoint: Path | None = None
    ckpt: dict | None = None  # load_checkpoint's dict
    model: HIPNet | None = None

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    def code(self, subject: str) -> tuple[torch.Tensor | None, str]:
        """(subject code, note): the subject's trained code, the mean code for a subject the model was not trained
        on, None for a single-subject model."""
        if self.model.codes is None:
            return None, "single-subject model"
        codes = self.model.codes.weight.detach()
        if subject in self.ckpt["subjects"]:
            return codes[self.ckpt["subjects"].index(subject)], f"code of {subject}"
        return codes.mean(0), f"{subject} is not in the checkpoint: the mean code"


@dataclass
class Sources:
    stores: list[StoreSource] = field(default_factory=list)
    runs: list[RunSource] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each, naming the file
    notes: list[str] = field(default_factory=list)


def _one_line(path: Path, e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if str(path) in text else f"{path}: {text}"


def open_view_store(path: Path) -> StoreSource:
    """The store at ``path`` with the arrays the viewer reads (those of its sections) checked; a one-line
    ValueError or OSError naming the store otherwise."""
    sections = open_group(path).attrs.get("sections", [])
    arrays = [a for a in VIEW_ARRAYS if SPECS[a].section in sections]
    store = Store.open(path, arrays=arrays)
    missing = [s for s in ("train",) if s not in store.sections]
    if missing:
        raise ValueError(f"{path}: the store has no {missing[0]} section (surface samples, poses): nothing to show")
    return StoreSource(path, store, SequenceIndex.of(store))


def open_run(path: Path, device: str = "cpu") -> tuple[RunSource | None, list[str]]:
    """A run from its folder or checkpoint file, with whichever of log.csv and ckpt.pt load; the problems of the
    others. None when ``path`` is not a run at all."""
    folder = path.parent if path.is_file() else path
    checkpoint = path if path.is_file() else folder / CKPT
    log_path = folder / LOG
    if not path.is_file() and not checkpoint.exists() and not log_path.exists():
        return None, [f"{path}: neither a store (no zarr.json) nor a run folder (no {LOG} or {CKPT})"]
    run, problems = RunSource(folder), []
    if log_path.exists():
        try:
            run.log = read_log(log_path)
        except (ValueError, OSError) as e:
            problems.append(_one_line(log_path, e))
    if checkpoint.exists():
        try:
            run.ckpt = load_checkpoint(checkpoint)
            run.model = model_from_checkpoint(run.ckpt, checkpoint).to(device).eval()
            run.checkpoint = checkpoint
        except (ValueError, OSError, KeyError, TypeError) as e:
            run.ckpt = None
            problems.append(_one_line(checkpoint, e))
    return run, problems


def load_sources(paths: Sequence[Path], device: str = "cpu", training_stores: bool = True) -> Sources:
    """Open every path; with ``training_stores`` and no store named, the stores a checkpoint was trained on that
    are still where training found them."""
    from hipnet.model.api import pretrained_models, resolve_checkpoint

    out = Sources()
    for path in map(as_path, paths):
        if not path.exists() and str(path) in pretrained_models():  # a bundled model by name (anny)
            path = resolve_checkpoint(str(path))
        if not path.exists():
            out.problems.append(f"{path}: no such file or folder")
        elif (path / "zarr.json").exists():
            try:
                out.stores.append(open_view_store(path))
            except Exception as e:  # noqa: BLE001 - a damaged store is a message in the page, whatever zarr raises
                out.problems.append(_one_line(path, e))
        else:
            run, problems = open_run(path, device)
            out.problems += problems
            if run is not None:
                out.runs.append(run)
    if training_stores and not out.stores:
        for run in out.runs:
            for p in (run.ckpt or {}).get("stores", []):
                if as_path(p).exists() and all(str(s.path) != str(as_path(p)) for s in out.stores):
                    try:
                        out.stores.append(open_view_store(as_path(p)))
                        out.notes.append(f"showing {p}, a store {run.name} was trained on")
                    except Exception as e:  # noqa: BLE001 - as above
                        out.problems.append(_one_line(as_path(p), e))
    return out
