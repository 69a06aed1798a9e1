"""Streaming loader and trainer on real stores: exactly-once epochs over ranks x workers, exact mid-epoch resume,
resume of a training run to the same parameters, DDP with two CPU processes (gloo) ending with equal parameters,
log columns that follow the loss's terms, every precision mode, the schema check on resume, and the hipnet-train
CLI."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from hipnet.model.checkpoint import parameter_checksums
from hipnet.model.config import DEFAULT_PRESET, PRESETS
from hipnet.model.data import FrameStream, round_robin
from hipnet.model.losses import LossResult, loss_for
from hipnet.model.train import load_checkpoint, model_from_checkpoint, save_checkpoint, train
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.store.schema import SCHEMA_VERSION


@pytest.fixture(scope="module")
def train_stores(tmp_path_factory, tiny_raw):
    """Two stores (train: 72 frames in 15 shards of 5; test: 24 frames in 5 shards) from the tiny low-poly data."""
    out = tmp_path_factory.mktemp("train_stores")
    cfg = PreprocessConfig(surface_points=400, eval_points=100, shard_frames=5, geodesics="per-template")
    paths = []
    for split in ("train", "test"):
        paths.append(preprocess_split(AnnyReader(tiny_raw, (split,)), out, cfg, split).store)
    return paths


def stream(paths, **kw) -> FrameStream:
    args = dict(points_per_frame=64, eikonal_per_frame=32, frames_per_step=3, shuffle_buffer=8, seed=7)
    return FrameStream(paths, **(args | kw))


def frames_of(loader) -> list[tuple[int, int]]:
    return [tuple(f.tolist()) for batch in loader for f in batch["frame"]]


def test_round_robin_drops_empty_workers():
    assert round_robin([2, 1, 3]) == [0, 1, 2, 0, 2, 2]


def test_every_frame_once_per_epoch_over_two_ranks_and_two_workers(train_stores):
    seen = []
    for rank in range(2):
        ds = stream(train_stores, rank=rank, world=2, workers=2)
        ds.set_epoch(3)
        batches = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert len(batches) == len(ds)
        seen += frames_of(batches)
    counts = Counter(seen)
    assert len(counts) == 72 + 24 and set(counts.values()) == {1}
    assert {s for s, _ in counts} == {0, 1}


def test_one_worker_process_and_the_training_process_itself_yield_the_same_batches(train_stores):
    """The fast preset loads in the training process (loader_workers 0: on 2 cores a worker process beside torch's
    two threads did not make steps faster, bench/results/loader_workers.json); 0 and 1 are one stream, so it trains
    on the batches a worker gave."""
    ds = stream(train_stores, workers=0, sdf_targets=True, part_balance=0.5)
    ds.set_epoch(2, skip_batches=3)
    here = list(DataLoader(ds, batch_size=None, num_workers=0))
    there = list(DataLoader(ds, batch_size=None, num_workers=1))
    assert len(here) == len(there) == len(ds) - 3 and PRESETS["fast"].loader_workers == 0
    for a, b in zip(here, there, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_order_depends_on_epoch_and_resume_reproduces_the_rest(train_stores):
    ds = stream(train_stores, workers=2)
    ds.set_epoch(0)
    full = list(DataLoader(ds, batch_size=None, num_workers=2))
    ds.set_epoch(1)
    other = frames_of(DataLoader(ds, batch_size=None, num_workers=2))
    assert other != frames_of(full) and sorted(other) == sorted(frames_of(full))
    for k in (1, 4, 7, len(full) - 1):  # resume after k batches, both workers' parities, near the end
        ds.set_epoch(0, skip_batches=k)
        rest = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert len(rest) == len(full) - k
        for a, b in zip(rest, full[k:], strict=True):
            for key in ("frame", "points", "eikonal", "labels", "subject"):
                assert torch.equal(a[key], b[key]), (k, key)


def test_subject_codes_span_all_stores_and_labels_are_in_range(train_stores):
    ds = stream(train_stores)
    names = ds.stores.subjects
    assert len(names) == len(set(names)) == 4  # the test split's subjects are the training subjects
    batch = next(iter(DataLoader(ds, batch_size=None)))
    assert batch["points"].shape == (3, 64, 3) and batch["eikonal"].shape == (3, 32, 3)
    assert batch["labels"].max() < 22 and batch["joint_transforms"].shape == (3, 22, 4, 4)
    assert torch.allclose(batch["normals"].norm(dim=-1), torch.ones(3, 64), atol=2e-3)


def tiny_config(**kw):
    cfg = PRESETS["small"]
    model = replace(cfg.model, hidden=16, layers=4, skip=2, pose_dim=8, pose_hidden=16, code_dim=8, aggregator_hidden=16)
    return replace(cfg, model=model, points_per_frame=64, eikonal_per_frame=64, frames_per_step=4, loader_workers=0,
                   checkpoint_every=1000, log_every=1, **kw)


@pytest.mark.parametrize("fast", [False, True, "part_support"], ids=["small", "fast", "part-support"])
def test_resume_gives_the_same_parameters_as_a_straight_run(train_stores, tmp_path, fast):
    cfg = tiny_config(steps=25, lr=1e-3)  # 72 train frames / 4 = 18 steps per epoch: crosses an epoch boundary
    if fast:  # the fast preset's departures: local frames, soft-min union, distance term, cosine schedule
        cfg = replace(cfg, model=replace(cfg.model, local_frames=True, aggregation="softmin",
                                         part_support=fast == "part_support"), lambda_sdf=1.0, lr_schedule="cosine")
    straight = train(train_stores[:1], cfg, tmp_path / "straight", progress=False)
    part = train(train_stores[:1], cfg, tmp_path / "resumed", progress=False, stop_at_step=11)  # an interruption
    assert part.step == 11
    resumed = train(train_stores[:1], cfg, tmp_path / "resumed", resume=True, progress=False)
    assert straight.step == resumed.step == 25 and straight.epoch == resumed.epoch == 1
    a = load_checkpoint(tmp_path / "straight" / "ckpt.pt")
    b = load_checkpoint(tmp_path / "resumed" / "ckpt.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["loader"] == b["loader"] and a["subjects"] == b["subjects"]
    rows = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 25  # header + one row per step (log_every 1), continued across the resume
    with pytest.raises(FileExistsError, match="--resume"):
        train(train_stores[:1], cfg, tmp_path / "straight", progress=False)


def test_training_lowers_the_loss_on_real_frames(train_stores, tmp_path):
    cfg = tiny_config(steps=60, lr=3e-3)
    train(train_stores[:1], cfg, tmp_path / "run", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    first = sum(float(r["total"]) for r in rows[:5]) / 5
    last = sum(float(r["total"]) for r in rows[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert (tmp_path / "run" / "config.json").exists() and any((tmp_path / "run" / "tb").iterdir())


def test_ddp_two_cpu_processes_end_with_equal_parameters(train_stores, tmp_path):
    """torchrun with 2 processes (gloo): the ranks split the shards and train 6 steps; at every checkpoint each rank
    contributes a float64 checksum vector of its own parameters, which the checkpoint keeps. Both ranks' vectors are
    equal (they read different frames, so only the gradient averaging makes them equal) and rank 0's is the
    checksum of the saved parameters."""
    out = tmp_path / "ddp"
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text("base: small\nmodel: {hidden: 16, layers: 4, skip: 2, pose_dim: 8, pose_hidden: 16, "
                        "code_dim: 8, aggregator_hidden: 16}\nloader_workers: 0\npoints_per_frame: 64\n"
                        "eikonal_per_frame: 64\nframes_per_step: 2\nlog_every: 1\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "hipnet.cli.train", "--shards", str(train_stores[0]), "--config", str(cfg_file), "--out", str(out),
           "--steps", "6", "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ck = load_checkpoint(out / "ckpt.pt")
    assert ck["step"] == 6 and ck["loader"]["world"] == 2
    sums = ck["rank_checksums"]
    assert sums.dtype == torch.float64 and sums.shape[0] == 2
    assert torch.equal(sums[0], sums[1])
    assert torch.equal(sums[0], parameter_checksums(model_from_checkpoint(ck)))


def test_train_cli_names_a_missing_store(tmp_path):
    from hipnet.cli.train import main

    result = CliRunner().invoke(main, ["--shards", str(tmp_path / "nope*.zarr"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "no store matches" in result.output


def test_train_cli_runs_and_reports(train_stores, tmp_path):
    from hipnet.cli.train import main

    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["--shards", str(Path(train_stores[0]).parent / "*.zarr"), "--out", str(out),
                                       "--steps", "3", "--points-per-frame", "50", "--eikonal-per-frame", "30",
                                       "--frames-per-step", "2", "--device", "cpu", "--workers", "0", "--amp", "fp32"])
    assert result.exit_code == 0, result.output
    assert "step 3" in result.output and (out / "ckpt.pt").exists()
    ck = load_checkpoint(out / "ckpt.pt")
    assert len(ck["stores"]) == 2 and ck["config"]["points_per_frame"] == 50
    assert ck["config"]["eikonal_per_frame"] == 30 and ck["config"]["amp"] == "fp32"
    result = CliRunner().invoke(main, ["--shards", str(train_stores[0]), "--out", str(out), "--points-per-frame", "50",
                                       "--resume", "--steps", "4", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output  # --points-per-frame alone leaves the preset's eikonal count
    assert load_checkpoint(out / "ckpt.pt")["config"]["eikonal_per_frame"] == PRESETS[DEFAULT_PRESET].eikonal_per_frame


@pytest.mark.parametrize("amp", ["fp32", "tf32", "bf16", "auto"])
def test_a_step_under_each_precision_mode_gives_a_finite_loss(train_stores, tmp_path, amp):
    """On CPU tf32 is plain fp32, auto is fp32 and bf16 is bf16 autocast."""
    run = train(train_stores[:1], tiny_config(steps=2, amp=amp), tmp_path / amp, progress=False)
    assert run.step == 2 and math.isfinite(run.last_loss) and run.last_loss < 10


def test_a_new_loss_term_reaches_the_log_without_a_trainer_edit(train_stores, tmp_path):
    """A loss with one more term: log.csv gets a column for it; a resumed run that adds it to an existing log
    rewrites the header once, the earlier rows with an empty cell."""
    cfg = tiny_config(steps=4)
    equation_2 = loss_for(cfg)

    def with_spread(module, batch):
        total, terms = equation_2(module, batch)
        spread = batch.points.std().detach()
        return LossResult(total, terms | {"spread": spread})

    out = tmp_path / "run"
    train(train_stores[:1], cfg, out, progress=False, stop_at_step=2)
    train(train_stores[:1], cfg, out, progress=False, resume=True, loss_fn=with_spread)
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["step", "epoch", "total"] and list(rows[0])[-2:] == ["points_per_s", "wall_s"]
    assert "spread" in rows[0] and "sub_normal" in rows[0]
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["spread"] == rows[1]["spread"] == ""
    assert all(0.05 < float(r["spread"]) < 1.0 for r in rows[2:])


def test_resume_refuses_a_checkpoint_of_another_schema_version(train_stores, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(steps=2)
    train(train_stores[:1], cfg, out, progress=False, stop_at_step=1)
    ck = load_checkpoint(out / "ckpt.pt")
    save_checkpoint(out / "ckpt.pt", ck | {"schema_version": 0})
    with pytest.raises(ValueError, match=rf"ckpt\.pt: .*schema_version 0.*schema_version {SCHEMA_VERSION}") as e:
        train(train_stores[:1], cfg, out, progress=False, resume=True)
    assert "\n" not in str(e.value)


def test_loader_workers_bench_names_a_missing_store(tmp_path, capsys):
    from bench_scripts import load_bench

    assert load_bench("loader_workers").main(["--store", str(tmp_path / "none.zarr")]) == 1
    assert "none.zarr is not a store" in capsys.readouterr().err


class StepClock:
    """A host clock for ``model.trainer`` that advances ``per_step`` seconds in each training step (``slow_after``:
    ``(step, seconds)``, from that step on each step takes ``seconds``): the timings a fitted schedule reads are then
    exact."""

    def __init__(self, trainer, per_step: float, slow_after: tuple[int, float] | None = None) -> None:
        self.now, self.per_step, step = 0.0, per_step, trainer.train_step

        def timed_step(batch):
            slow = slow_after is not None and trainer.step >= slow_after[0]
            self.now += slow_after[1] if slow else self.per_step
            return step(batch)

        trainer.train_step = timed_step

    def monotonic(self) -> float:
        return self.now


def fitted_run(train_stores, out, cfg, monkeypatch, resume=False, stop_at_step=None, slow_after=None,
               max_seconds=30.0):
    from types import SimpleNamespace

    from hipnet.model import callbacks as callbacks_module
    from hipnet.model import trainer as trainer_module

    t = trainer_module.Trainer(train_stores[:1], cfg, out)
    t.setup(resume=resume)
    clock = SimpleNamespace(monotonic=StepClock(t, 0.5, slow_after).monotonic)
    monkeypatch.setattr(trainer_module, "time", clock)
    monkeypatch.setattr(callbacks_module, "time", clock)
    return t, t.fit(progress=False, max_seconds=max_seconds, stop_at_step=stop_at_step, fit_schedule=True)


def test_a_schedule_fitted_to_the_time_ends_its_decay_with_it_and_resumes_on_the_same_plan(train_stores, tmp_path,
                                                                                            monkeypatch):
    from hipnet.model.callbacks import PROBE_STEPS
    from hipnet.model.trainer import TIME_MARGIN, lr_factor

    cfg = replace(tiny_config(steps=1000, lr=1e-3, lr_schedule="cosine"), checkpoint_every=25)
    # 0.5 s a step, 30 s: timed over steps 10-40 (20 s gone), the 10 s left hold 19 steps at a margin of 0.97
    trainer, run = fitted_run(train_stores, tmp_path / "straight", cfg, monkeypatch)
    expected = PROBE_STEPS[1] + int(TIME_MARGIN * (30.0 - 0.5 * PROBE_STEPS[1]) / 0.5)
    assert expected == 59 and run.step == trainer.planned == expected  # ended on its plan, before the cap
    ck = load_checkpoint(tmp_path / "straight" / "ckpt.pt")
    assert ck["schedule"] == {"planned": 59, "fitted": True}
    # the last step ran at the end of the decay, not at the 6% of the way a 1,000-step plan would have been
    last = trainer.optimizer.param_groups[0]["lr"]
    assert last == pytest.approx(1e-3 * lr_factor(cfg, 58, 59)) and last < 1e-3 * (cfg.lr_final + 1e-3)
    # an interruption at step 50 and a resume (with its own clock from zero) continue the same plan, not a new one
    fitted_run(train_stores, tmp_path / "resumed", cfg, monkeypatch, stop_at_step=50)
    again, resumed = fitted_run(train_stores, tmp_path / "resumed", cfg, monkeypatch, resume=True)
    assert resumed.step == again.planned == 59
    b = load_checkpoint(tmp_path / "resumed" / "ckpt.pt")
    for k in ck["model"]:
        assert torch.equal(ck["model"][k], b["model"][k]), k


def test_a_machine_that_slows_down_partway_still_completes_the_decay(train_stores, tmp_path, monkeypatch):
    """0.5 s a step, then 1 s from step 60, 100 s in all: the plan fitted at step 40 (195 steps) no longer fits; the
    refits every REFIT_EVERY steps shorten it, so the run ends on its plan with the decay complete, inside the time.
    Without the refits it would stop at about step 130 by the clock, with the learning rate still at a fifth of its
    start."""
    from hipnet.model import callbacks
    from hipnet.model.trainer import lr_factor

    cfg = replace(tiny_config(steps=1000, lr=1e-3, lr_schedule="cosine"), checkpoint_every=1000)
    trainer, run = fitted_run(train_stores, tmp_path / "slow", cfg, monkeypatch, slow_after=(60, 1.0),
                              max_seconds=100.0)
    assert run.step == trainer.planned < 135  # ended on its (shortened) plan, not cut off by the clock
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor(cfg, run.step - 1, run.step))
    assert lr_factor(cfg, run.step - 1, run.step) < cfg.lr_final + 1e-3  # the decay is complete
    monkeypatch.setattr(callbacks, "REFIT_EVERY", 10**9)  # one fit only: the old behaviour
    trainer, cut = fitted_run(train_stores, tmp_path / "once", cfg, monkeypatch, slow_after=(60, 1.0),
                              max_seconds=100.0)
    assert cut.step < trainer.planned and lr_factor(cfg, cut.step, trainer.planned) > 0.15


def test_fit_plan_keeps_within_the_configured_steps_and_one_step_ahead(train_stores, tmp_path):
    from hipnet.model.trainer import Trainer

    t = Trainer(train_stores[:1], tiny_config(steps=100), tmp_path / "r")
    t.step = 40
    assert t.fit_plan(0.01, 1000.0) == 100 and t.limit == 100  # the time holds more: the configured steps
    assert t.fit_plan(1.0, -5.0) == 41  # no time left: one more step
    with pytest.raises(ValueError, match="--max-minutes"):
        t.fit(progress=False, fit_schedule=True)


def test_cli_fit_schedule_needs_a_time_budget(train_stores, tmp_path):
    from hipnet.cli.train import main

    r = CliRunner().invoke(main, ["--shards", str(train_stores[0]), "--config", "small", "--out", str(tmp_path / "r"),
                                  "--fit-schedule", "--steps", "3"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1] == "Error: a schedule fitted to the time needs a time budget (--max-minutes)"
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def test_part_support_boxes_hold_every_labelled_point_and_travel_with_the_checkpoint(train_stores, tmp_path):
    from hipnet.model.support import part_boxes
    from hipnet.pipeline.store.reading import Store

    store = Store.open(train_stores[0])
    boxes = part_boxes([store], 22, frames_per_store=1000).double()  # every frame
    points, labels = store.read("surface/points"), store.read("surface/labels")
    transforms = torch.as_tensor(store.read("pose/joint_transforms")).double()
    for f in range(0, store.n_frames, 7):
        x, lab = torch.as_tensor(points[f]).double(), torch.as_tensor(labels[f]).long()
        own = transforms[f, lab]  # S, 4, 4: each point's joint
        local = torch.einsum("sji,sj->si", own[:, :3, :3], x - own[:, :3, 3])
        assert (local >= boxes[lab, 0] - 1e-5).all() and (local <= boxes[lab, 1] + 1e-5).all()
    empty = sorted(set(range(22)) - set(labels.reshape(-1).tolist()))
    assert all(torch.equal(boxes[j], torch.zeros(2, 3, dtype=torch.float64)) for j in empty)
    cfg = tiny_config(steps=3)
    cfg = replace(cfg, model=replace(cfg.model, local_frames=True, aggregation="softmin", part_support=True))
    train(train_stores[:1], cfg, tmp_path / "run", progress=False)
    ck = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    torch.testing.assert_close(ck["model"]["support"], part_boxes([store], 22))  # the trainer's boxes, saved
    model = model_from_checkpoint(ck)
    assert torch.equal(model.support, ck["model"]["support"])
