"""Real-world faults around the runs rather than the data: two runs writing one output (real processes), a run
killed while it holds the output, a disk that fills in the middle of a shard, stores that are read-only or still
being written, and a loader worker killed during training. Each ends in one line and leaves everything resumable."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from click.testing import CliRunner
from synthetic import write_amass_body_models, write_amass_smplh

from hipnet.cli.data import main as data_main
from hipnet.pipeline.store.lock import LOCK_NAME, LockedError, writer_lock
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group

BIN = Path(sys.executable).parent
FAST = ["--points", "200", "--eval-points", "50", "--geodesics", "per-template", "--shard-frames", "2"]


def amass_folder(tmp_path: Path, motions: int = 3, frames: int = 3) -> list[str]:
    """An AMASS Transitions folder of one subject and its manifest; the preprocess arguments for it."""
    models = write_amass_body_models(tmp_path / "bm", kinds=("smplh",), genders=("female",))
    folder = tmp_path / "raw" / "Transitions_mocap" / "mazen"
    rng = np.random.default_rng(0)
    betas = rng.normal(size=16)
    names = [f"m{k}" for k in range(motions)]
    for name in names:
        write_amass_smplh(folder / f"{name}_poses.npz", rng, frames=frames, betas=betas)
    np.savez(folder / "shape.npz", betas=betas, gender=np.array("female"))
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"dataset": "rel", "reader": "amass", "subset": "Transitions",
                                 "subjects": [{"name": "mazen"}],
                                 "sequences": [{"subject": "mazen", "name": n, "split": "train"} for n in names]}))
    return ["preprocess", "--dataset", str(m), "--root", str(tmp_path / "raw"), "--body-models", str(models)]


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    return errors[0]


# ------------------------------------------------------------------------------------------------ one writer


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> dict:
    t0 = time.time()
    while time.time() - t0 < seconds:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_a_second_run_on_the_same_output_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path):
    args = amass_folder(tmp_path, motions=6, frames=40)
    out = tmp_path / "out"
    # the first run: slow enough (every frame's evaluation points, one process) to be caught writing
    slow = [*args, "--out", str(out), "--points", "3000", "--eval-points", "3000", "--eval-on-train",
            "--geodesics", "per-frame", "--shard-frames", "4", "--workers", "1"]
    first = subprocess.Popen([str(BIN / "hipnet-data"), *slow], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        holder = _wait_for(out / LOCK_NAME, first)
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        second = subprocess.run([str(BIN / "hipnet-data"), *slow], capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run ended before the second was refused: make it slower"
        assert second.returncode == 1
        line = one_error_line(second.stdout + second.stderr)
        assert f"{out}: another run is writing here: pid {first.pid} on {socket.gethostname()}" in line
        assert "hipnet-data preprocess" in line
        first.send_signal(signal.SIGKILL)  # killed mid-run: its lock file stays behind
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert (out / LOCK_NAME).exists()
    third = subprocess.run([str(BIN / "hipnet-data"), *slow], capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stdout + third.stderr  # the stale lock is taken over, the store finished
    store = Store.open(out / "train.zarr")
    assert store.n_frames == 240 and validate(store.group).ok
    assert not (out / LOCK_NAME).exists()


def test_the_lock_is_reentrant_and_refuses_a_live_holder(tmp_path):
    with writer_lock(tmp_path) as path, writer_lock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()
    # a live process on this host (this test's parent) holds it: refused, naming it
    holder = psutil.Process(os.getppid())
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": 0,
                                                  "pid_started": holder.create_time(), "command": "x"}))
    with pytest.raises(LockedError, match=f"pid {holder.pid} on {socket.gethostname()}"), writer_lock(tmp_path):
        pass
    # the same pid with another start time is a reused pid: stale
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": 0,
                                                  "pid_started": holder.create_time() - 1000, "command": "x"}))
    with writer_lock(tmp_path):
        pass
    # another host's lock holds while its lease is fresh, and is taken over once it is old
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0, "command": "x"}))
    with pytest.raises(LockedError, match="pid 1 on elsewhere"), writer_lock(tmp_path):
        pass
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with writer_lock(tmp_path):
        pass


# ------------------------------------------------------------------------------------------------ a full disk


def test_a_full_disk_mid_shard_stops_with_one_line_and_the_store_resumes(tmp_path, monkeypatch):
    import zarr.storage

    args = [*amass_folder(tmp_path), *FAST, "--workers", "1"]
    out = tmp_path / "out"
    real_set = zarr.storage.LocalStore.set

    async def full_disk(self, key, value):
        if key.startswith("surface/points/c/2/"):  # the third shard's surface points
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(self.root) / key))
        return await real_set(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full_disk)
    result = CliRunner().invoke(data_main, [*args, "--out", str(out)])
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert f"{out / 'train.zarr'}: shard 2 (frames 4-5) could not be written: No space left on device" in line
    assert "rerun the same command" in line
    done = np.asarray(open_group(out / "train.zarr")["done"][:])
    assert not done[4:6].any()  # the shard is not marked done
    monkeypatch.setattr(zarr.storage.LocalStore, "set", real_set)
    again = CliRunner().invoke(data_main, [*args, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert f"skipped as already done {int(done.sum())}," in again.output  # the shards finished before are kept
    clean = CliRunner().invoke(data_main, [*args, "--out", str(tmp_path / "clean")])
    assert clean.exit_code == 0
    a, b = Store.open(out / "train.zarr"), Store.open(tmp_path / "clean" / "train.zarr")
    assert validate(a.group).ok and a.shard_index == b.shard_index  # the same bytes as a run that never failed


# ------------------------------------------------------------------------------------------------ reading stores


@contextlib.contextmanager
def read_only(root: Path):
    """Make every file and folder under ``root`` unwritable for the block: immutable (``chattr +i``) when this is
    root, which file modes do not stop; read-only modes otherwise."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "+i", str(root)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-R", "-i", str(root)], check=True)
        return
    paths = [root, *root.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield
    finally:
        for p in reversed(paths):
            p.chmod(modes[p])


def _tree_state(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_training_and_evaluation_read_a_store_they_cannot_write(balls, tmp_path):
    import shutil

    store, run, _ = balls
    ro = tmp_path / "ro"
    shutil.copytree(store.path.parent, ro, ignore=shutil.ignore_patterns("run"))
    store_path = ro / store.path.name
    before = _tree_state(ro)
    with read_only(ro):
        with pytest.raises(OSError):  # really unwritable
            (store_path / "probe").write_text("x")
        ev = subprocess.run([str(BIN / "hipnet-eval"), "--checkpoint", str(run / "ckpt.pt"), "--shards",
                             str(store_path), "--out", str(tmp_path / "eval"), "--resolution", "32",
                             "--mesh-frames", "0"], capture_output=True, text=True, timeout=600)
        assert ev.returncode == 0, ev.stdout + ev.stderr
        tr = subprocess.run([str(BIN / "hipnet-train"), "--shards", str(store_path), "--out", str(tmp_path / "run"),
                             "--steps", "2", "--frames-per-step", "2", "--points-per-frame", "50",
                             "--eikonal-per-frame", "50", "--device", "cpu", "--workers", "1"],
                            capture_output=True, text=True, timeout=600)
        assert tr.returncode == 0, tr.stdout + tr.stderr
    assert _tree_state(ro) == before  # not a byte, not a timestamp changed
    assert (tmp_path / "eval" / "metrics.json").exists() and (tmp_path / "run" / "ckpt.pt").exists()


def test_an_unfinished_store_is_refused_by_training_and_evaluation_saying_what_is_missing(balls, tmp_path):
    import shutil

    from hipnet.cli.eval import main as eval_main
    from hipnet.cli.train import main as train_main

    store, run, _ = balls
    copy = tmp_path / "train.zarr"
    shutil.copytree(store.path, copy)
    group = open_group(copy, mode="r+")
    done = np.asarray(group["done"][:])
    done[2:4] = False
    group["done"][:] = done
    del group.attrs["complete"]
    for cmd, argv in ((train_main, ["--shards", str(copy), "--out", str(tmp_path / "r"), "--steps", "1"]),
                      (eval_main, ["--checkpoint", str(run / "ckpt.pt"), "--shards", str(copy), "--out",
                                   str(tmp_path / "e")])):
        result = CliRunner().invoke(cmd, argv)
        assert result.exit_code == 1, result.output
        line = one_error_line(result.output)
        assert f"{copy}: store is not complete" in line and "2 of 6 frames not done (first: frame 2" in line
        assert "an interrupted or failed run" in line
    # the same store while a run is writing it (a live process holds its folder's lock): the line names that run
    holder = psutil.Process(os.getppid())
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": 0,
                                                  "pid_started": holder.create_time(), "command": "hipnet-data x"}))
    result = CliRunner().invoke(eval_main, ["--checkpoint", str(run / "ckpt.pt"), "--shards", str(copy), "--out",
                                            str(tmp_path / "e")])
    assert result.exit_code == 1
    assert f"a run is writing it now: pid {holder.pid} on {socket.gethostname()}" in one_error_line(result.output)


# ------------------------------------------------------------------------------------------------ a dead loader worker


@pytest.fixture(scope="module")
def anny_train(tmp_path_factory, tiny_raw) -> Path:
    """The tiny Anny training store (72 frames): an epoch of one frame a step is long enough to kill a worker in."""
    from hipnet.pipeline.core.config import PreprocessConfig
    from hipnet.pipeline.readers.anny import AnnyReader
    from hipnet.pipeline.runner.driver import preprocess_split

    cfg = PreprocessConfig(surface_points=400, eval_points=100, shard_frames=8, geodesics="per-template")
    return preprocess_split(AnnyReader(tiny_raw, ("train",)), tmp_path_factory.mktemp("anny"), cfg, "train").store


def test_a_killed_loader_worker_stops_training_in_one_line_and_resume_continues_exactly(anny_train, tmp_path):
    import torch

    from hipnet.model.checkpoint import load_checkpoint

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "base": "fast", "model": {"hidden": 16, "layers": 4, "skip": 2, "pose_dim": 4, "pose_hidden": 8,
                                  "code_dim": 4, "aggregator_hidden": 8},
        "points_per_frame": 50, "eikonal_per_frame": 50, "frames_per_step": 1, "steps": 120, "shuffle_buffer": 4,
        "loader_workers": 1, "log_every": 1, "checkpoint_every": 5}))
    cmd = [str(BIN / "hipnet-train"), "--shards", str(anny_train), "--config", str(config), "--device", "cpu"]
    run = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = run / "log.csv"
        t0 = time.time()
        while not (log.exists() and len(log.read_text().splitlines()) > 20):  # mid-epoch (72 steps an epoch)
            assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()
            time.sleep(0.05)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 1
        workers[0].send_signal(signal.SIGKILL)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    line = one_error_line(output)
    print(line)
    assert f"{run}: a loader worker process died at step" in line
    # torch names the worker, or the pipe to it says it was cut (which of the two comes first is a race)
    assert str(workers[0].pid) in line or "ConnectionResetError" in line or "EOFError" in line
    assert "rerun with --resume to continue exactly" in line
    # the step the worker died at, or the last checkpoint before it when the death interrupted a step
    stopped = load_checkpoint(run / "ckpt.pt")["step"]
    assert 15 <= stopped < 72 and f"(step {stopped}) is kept" in line
    resumed = subprocess.run([*cmd, "--out", str(run), "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    straight = subprocess.run([*cmd, "--out", str(tmp_path / "straight")], capture_output=True, text=True,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr
    a, b = load_checkpoint(run / "ckpt.pt"), load_checkpoint(tmp_path / "straight" / "ckpt.pt")
    assert a["step"] == b["step"] == 120
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
