"""Faults on the training and evaluation side: each fault class, injected into a tiny store or
checkpoint, through the commands that meet it. Every one must end with exit code 1 and one line naming the store
or file and the frame or step, never a traceback; a run that diverges keeps its last good checkpoint.

The store faults are written the way a buggy preprocessing run would write them: through the store's own writer
(``write_shard``, then ``mark_complete``), so the shard index and hashes agree with the bad values and only the
values themselves are wrong; or on disk after the fact (a shard file deleted, ``done`` cleared under ``complete``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from synthetic import BallsReader

from hipnet.cli.apps import animate_main, fit_main, sample_main
from hipnet.cli.eval import main as eval_main
from hipnet.cli.train import main as train_main
from hipnet.model.config import PRESETS
from hipnet.model.losses import LossResult, loss_for
from hipnet.model.train import load_checkpoint, model_from_checkpoint, train
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import SPECS, shard_key
from hipnet.pipeline.store.zarrstore import mark_complete, mark_incomplete, open_group, write_shard

RADII = BallsReader.RADII
TINY_MODEL = dict(hidden=16, layers=4, skip=2, pose_dim=4, pose_hidden=8, code_dim=4, aggregator_hidden=8)


@dataclass(frozen=True)
class Base:
    store: Path  # train.zarr with evaluation points and meshes (4 frames, shards of 2)
    ckpt: Path  # a tiny model trained 2 steps on it
    config: Path  # the tiny training config, as a file for hipnet-train


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    out = tmp_path_factory.mktemp("faults")
    cfg = PreprocessConfig(surface_points=200, eval_points=300, shard_frames=2, geodesics="per-template",
                           eval_on_train=True)
    store = preprocess_split(BallsReader(frames=2, subdivisions=2), out / "data", cfg, "train").store
    small = PRESETS["small"]
    tcfg = replace(small, model=replace(small.model, **TINY_MODEL), points_per_frame=50, eikonal_per_frame=50,
                   frames_per_step=2, steps=2, loader_workers=0)
    train([store], tcfg, out / "run", progress=False)
    config = out / "tiny.yaml"
    config.write_text("base: small\nmodel: {" + ", ".join(f"{k}: {v}" for k, v in TINY_MODEL.items()) + "}\n"
                      "points_per_frame: 50\neikonal_per_frame: 50\nframes_per_step: 2\nlog_every: 100\n"
                      "checkpoint_every: 2\nloader_workers: 0\n")
    return Base(Path(store), out / "run" / "ckpt.pt", config)


# ------------------------------------------------------------------------------------------- the faults


def _copy(base: Base, tmp: Path) -> Path:
    dst = tmp / "bad" / "train.zarr"
    shutil.copytree(base.store, dst)
    return dst


def _write_nan(name: str, frame: int) -> Callable[[Base, Path], Path]:
    """A store whose frame ``frame`` has one NaN in ``name``, written through the store's writer (hashes match)."""

    def make(base: Base, tmp: Path) -> Path:
        path = _copy(base, tmp)
        group = open_group(path, mode="r+")
        store = Store.open(path)
        shard = frame // store.shard_frames
        sl = store.shard_slice(shard)
        block = np.array(group[name][sl])
        block[frame - sl.start].reshape(-1)[0] = np.nan
        mark_incomplete(group)
        write_shard(group, shard, {name: block}, np.ones(sl.stop - sl.start, dtype=bool))
        assert mark_complete(group)
        Store.open(path)  # the store itself is whole: only its values are wrong
        return path

    return make


def _delete_shard(name: str, shard: int) -> Callable[[Base, Path], Path]:
    def make(base: Base, tmp: Path) -> Path:
        path = _copy(base, tmp)
        (path / shard_key(SPECS[name], shard)).unlink()
        return path

    return make


def _done_cleared(base: Base, tmp: Path) -> Path:
    path = _copy(base, tmp)
    open_group(path, mode="r+")["done"][1] = False  # complete stays true
    return path


def _truncated(base: Base, tmp: Path) -> Path:
    blob = base.ckpt.read_bytes()
    (tmp / "cut.pt").write_bytes(blob[: len(blob) // 2])
    return tmp / "cut.pt"


def _empty(base: Base, tmp: Path) -> Path:
    (tmp / "empty.pt").write_bytes(b"")
    return tmp / "empty.pt"


def _without_skeleton(base: Base, tmp: Path) -> Path:
    ck = load_checkpoint(base.ckpt)
    del ck["skeleton"]
    torch.save(ck, tmp / "old.pt")
    return tmp / "old.pt"


def _run_with(ckpt_fault: Callable[[Base, Path], Path]) -> Callable[[Base, Path], Path]:
    """A run folder whose ckpt.pt has the fault (for --resume)."""

    def make(base: Base, tmp: Path) -> Path:
        run = tmp / "run"
        run.mkdir()
        ckpt_fault(base, tmp).rename(run / "ckpt.pt")
        return run

    return make


def _train(base: Base, tmp: Path, store: Path | None = None, *extra: str, out: Path | None = None):
    return train_main, ["--shards", str(store or base.store), "--config", str(base.config), "--out",
                        str(out or tmp / "out"), "--steps", "6", "--device", "cpu", *extra]


def _eval(base: Base, tmp: Path, store: Path | None = None, ckpt: Path | None = None):
    return eval_main, ["--checkpoint", str(ckpt or base.ckpt), "--shards", str(store or base.store), "--mesh-frames",
                       "0", "--resolution", "16", "--device", "cpu", "--out", str(tmp / "out")]


def _fit(base: Base, tmp: Path, store: Path | None = None, ckpt: Path | None = None, frame: int = 0):
    return fit_main, ["--checkpoint", str(ckpt or base.ckpt), "--store", str(store or base.store), "--frame",
                      str(frame), "--n-points", "50", "--iters", "1", "--resolution", "16", "--out", str(tmp / "out")]


def _sample(base: Base, tmp: Path, store: Path, frame: int):
    return sample_main, ["--checkpoint", str(base.ckpt), "--n", "2", "--pose", f"{store}:{frame}", "--resolution", "16",
                         "--out", str(tmp / "out")]


def _animate(base: Base, tmp: Path, store: Path, motion: str):
    return animate_main, ["--checkpoint", str(base.ckpt), "--subject", "small", "--motion", f"{store}:{motion}",
                          "--resolution", "16", "--out", str(tmp / "out")]


# (fault class, how to make it, the command given the faulty path, what the line must say besides the path)
CASES = {
    "nan-surface-points/train-in-a-loader-worker": (
        _write_nan("surface/points", 3), lambda b, t, p: _train(b, t, p, "--workers", "1"),
        ["frame 3 (large/still/1)", "surface/points has 1 NaN", "no checkpoint was written"]),
    "nan-joint-transforms/train": (
        _write_nan("pose/joint_transforms", 2), lambda b, t, p: _train(b, t, p),
        ["frame 2 (large/still/0)", "pose/joint_transforms has 1 NaN"]),
    "nan-joint-transforms/eval": (
        _write_nan("pose/joint_transforms", 2), lambda b, t, p: _eval(b, t, store=p),
        ["frame 2 (large/still/0)", "pose/joint_transforms has 1 NaN"]),
    "nan-joint-transforms/fit": (
        _write_nan("pose/joint_transforms", 2), lambda b, t, p: _fit(b, t, store=p, frame=2),
        ["frame 2 (large/still/0)", "pose/joint_transforms has 1 NaN"]),
    "nan-joint-transforms/sample": (
        _write_nan("pose/joint_transforms", 2), lambda b, t, p: _sample(b, t, p, 2),
        ["frame 2 (large/still/0)", "pose/joint_transforms has 1 NaN"]),
    "nan-joint-transforms/animate": (
        _write_nan("pose/joint_transforms", 2), lambda b, t, p: _animate(b, t, p, "large/still"),
        ["frame 2 (large/still/0)", "pose/joint_transforms has 1 NaN"]),
    "nan-eval-points/eval": (
        _write_nan("eval/near_points", 1), lambda b, t, p: _eval(b, t, store=p),
        ["frame 1 (small/still/1)", "eval/near_points has 1 NaN"]),
    "shard-file-deleted/train": (
        _delete_shard("surface/points", 1), lambda b, t, p: _train(b, t, p),
        ["surface/points shard 1", "damaged"]),
    "shard-file-deleted/eval": (
        _delete_shard("eval/near_points", 0), lambda b, t, p: _eval(b, t, store=p),
        ["eval/near_points shard 0", "damaged"]),
    "done-vs-complete/train": (
        _done_cleared, lambda b, t, p: _train(b, t, p), ["marked complete but 1 frames are not done", "frame 1"]),
    "done-vs-complete/fit": (
        _done_cleared, lambda b, t, p: _fit(b, t, store=p), ["marked complete but 1 frames are not done", "frame 1"]),
    "truncated-checkpoint/eval": (
        _truncated, lambda b, t, p: _eval(b, t, ckpt=p), ["not a readable checkpoint", "truncated"]),
    "truncated-checkpoint/fit": (
        _truncated, lambda b, t, p: _fit(b, t, ckpt=p), ["not a readable checkpoint", "truncated"]),
    "truncated-checkpoint/train-resume": (
        _run_with(_truncated), lambda b, t, p: _train(b, t, None, "--resume", out=p),
        ["ckpt.pt: not a readable checkpoint", "truncated"]),
    "zero-byte-checkpoint/eval": (_empty, lambda b, t, p: _eval(b, t, ckpt=p), ["empty file (0 bytes)"]),
    "zero-byte-checkpoint/fit": (_empty, lambda b, t, p: _fit(b, t, ckpt=p), ["empty file (0 bytes)"]),
    "checkpoint-missing-keys/eval": (_without_skeleton, lambda b, t, p: _eval(b, t, ckpt=p), ["lacks skeleton"]),
}


def assert_one_line_error(result, *says: str) -> str:
    """Exit code 1 through click (not an uncaught exception), no traceback, the error on one line that says all of
    ``says``. Progress bars may come before it."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exception, result.output)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    for s in says:
        assert s in errors[0], (s, errors[0])
    return errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_a_fault_stops_the_command_with_one_line(base, tmp_path, case):
    make, command, says = CASES[case]
    bad = make(base, tmp_path)
    cli, argv = command(base, tmp_path, bad)
    result = CliRunner().invoke(cli, argv)
    assert_one_line_error(result, str(bad), *says)
    assert not (tmp_path / "out" / "ckpt.pt").exists()


class FailsAtStep:
    """Equation 2, except that the loss (``where="loss"``) or only its gradient (``"gradient"``: the value stays
    finite) is NaN from call ``step`` on."""

    def __init__(self, cfg, step: int, where: str) -> None:
        self.inner, self.step, self.where, self.calls = loss_for(cfg), step, where, 0

    def __call__(self, module, batch) -> LossResult:
        self.calls += 1
        total, terms = self.inner(module, batch)
        if self.calls >= self.step:
            zero = (total * 0).abs()
            total = total + (zero * np.nan if self.where == "loss" else zero.sqrt())  # sqrt'(0) = inf, x 0 = NaN
            terms = terms | {"total": total.detach()}
        return LossResult(total, terms)


@pytest.mark.parametrize("where, says", [("loss", "the loss is not finite at step 3"),
                                         ("gradient", "a gradient is not finite at step 3 (the loss is finite)")])
def test_a_non_finite_loss_or_gradient_keeps_the_last_good_checkpoint(base, tmp_path, monkeypatch, where, says):
    """Checkpoints every 2 steps, NaN from step 3: the run stops at the check of step 4 (nothing waits for the
    device in between), names step 3 and keeps the checkpoint of step 2, which loads and is finite."""
    monkeypatch.setattr("hipnet.model.trainer.loss_for", lambda cfg: FailsAtStep(cfg, 3, where))
    cli, argv = _train(base, tmp_path)
    line = assert_one_line_error(CliRunner().invoke(cli, argv), str(tmp_path / "out"), says,
                                 "training stopped at step 4", f"{tmp_path / 'out' / 'ckpt.pt'} (step 2) is kept")
    assert "parameters after step 2 are not saved" in line
    ck = load_checkpoint(tmp_path / "out" / "ckpt.pt")
    assert ck["step"] == 2
    model = model_from_checkpoint(ck, "kept")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_bad_frame_met_after_some_steps_keeps_them_in_a_checkpoint(base, tmp_path):
    """Frames one at a time (shuffle buffer 1) and a seed whose first shard is the clean one: step 1 trains on
    shard 0, then shard 1's NaN frame stops the run, which saves step 1 first (the bad frame was never used)."""
    from hipnet.model.config import load_config
    from hipnet.model.data import DataError, epoch_order

    bad = _write_nan("pose/joint_transforms", 2)(base, tmp_path)
    seed = next(s for s in range(100) if list(epoch_order(2, s, 0)) == [0, 1])
    cfg = replace(load_config(str(base.config)), shuffle_buffer=1, seed=seed, steps=6)
    with pytest.raises(DataError) as e:
        train([bad], cfg, tmp_path / "out", progress=False)
    line = str(e.value)
    assert "\n" not in line and f"{bad}: frame 2 (large/still/0)" in line, line
    assert f"training stopped at step 1; the last good checkpoint {tmp_path / 'out' / 'ckpt.pt'} (step 1)" in line
    assert load_checkpoint(tmp_path / "out" / "ckpt.pt")["loader"]["consumed"] == 1


def test_a_checkpoint_with_non_finite_weights_is_refused(base, tmp_path):
    ck = load_checkpoint(base.ckpt)
    name = next(iter(ck["model"]))
    ck["model"][name] = torch.full_like(ck["model"][name], float("nan"))
    torch.save(ck, tmp_path / "nan.pt")
    cli, argv = _eval(base, tmp_path, ckpt=tmp_path / "nan.pt")
    assert_one_line_error(CliRunner().invoke(cli, argv), str(tmp_path / "nan.pt"), "not finite", name)
