"""Stores end to end on real generated Anny frames: layout, round trip, resume after a killed worker, validation,
corrupt inputs, relabelling. Real Zarr stores on disk, real dask process pools, real heat geodesics."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hipnet.cli.data import main
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.runner.frame import PreprocessConfig, SubjectGeometry, process_frame
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import SCHEMA_VERSION, validate
from hipnet.pipeline.store.zarrstore import mark_complete, open_group, write_shard

SMALL = dict(surface_points=600, eval_points=500)


def store_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, tiny_raw):
    """The tiny low-poly test split (24 frames) in shards of 5: 5 shards, the last one holding 4 frames."""
    out = tmp_path_factory.mktemp("stores")
    cfg = PreprocessConfig(**SMALL, shard_frames=5, geodesics="per-template")
    summary = preprocess_split(AnnyReader(tiny_raw, ("test",)), out, cfg, "test", workers=1)
    return summary, cfg


def test_store_layout_and_round_trip(small_store, tiny_raw):
    summary, cfg = small_store
    store = Store.open(summary.store)
    assert summary.complete and summary.written == store.n_frames == 24 and not summary.failures
    assert store.n_shards == math.ceil(24 / 5) == 5
    a = store.attrs
    assert a["schema_version"] == SCHEMA_VERSION and a["complete"] and a["split"] == "test"
    assert a["config"] == cfg.to_attrs() and store.sections == ["train", "eval", "mesh"]
    pts = store.group["surface/points"]
    assert pts.chunks == (1, 600, 3) and pts.shards == (5, 600, 3)
    assert str(store.group["surface/normals"].dtype) == "float16"
    # shard files on disk: one per shard (the last one is partial), never one file per frame
    assert len(list((summary.store / "surface" / "points" / "c").iterdir())) == 5

    reader = AnnyReader(tiny_raw, ("test",))
    refs = reader.frame_refs()
    for i in (0, 7, 23):  # first, middle, last (in the partial shard)
        ref, frame = next(iter(reader.load([refs[i]])))
        geom = SubjectGeometry.build(reader.subject(frame.subject), "per-template", "test")
        expect = process_frame(frame, geom, cfg, tuple(store.sections), "anny")
        for name, value in expect.items():
            np.testing.assert_array_equal(store.read(name, i), value, err_msg=name)
        assert store.frame_key(i) == ref.key
    # the canonical frame undoes to the source frame
    w = store.read("pose/world_from_canonical", 23).astype(np.float64)
    back = store.read("mesh/vertices", 23).astype(np.float64) @ w[:3, :3].T + w[:3, 3]
    np.testing.assert_allclose(back, frame.vertices, atol=2e-5)
    np.testing.assert_array_equal(store.read("subject/rest_joints", store.subjects.index(frame.subject)),
                                  frame.rest_joints)


def test_validate_names_an_injected_nan_and_an_out_of_range_label(small_store, tmp_path):
    src = small_store[0].store
    path = tmp_path / "broken.zarr"
    shutil.copytree(src, path)
    assert validate(open_group(path)).ok
    # a writer that produced a NaN and an out-of-range label: written through write_shard, so the shard hashes
    # match the bad values (a shard changed behind the writer's back is tests/test_store_integrity.py's case)
    g = open_group(path, mode="r+")
    pts = np.asarray(g["surface/points"][0:5])
    pts[3, 10, 1] = np.nan
    write_shard(g, 0, {"surface/points": pts}, np.ones(5, bool))
    labels = np.asarray(g["surface/labels"][15:20])
    labels[2, 5] = 30
    write_shard(g, 3, {"surface/labels": labels}, np.ones(5, bool))
    assert mark_complete(g)
    rep = validate(open_group(path))
    problems = {(p.array, p.frame) for p in rep.problems}
    assert problems == {("surface/points", 3), ("surface/labels", 17)}, rep.problems
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert "surface/points frame 3: contains NaN" in result.output
    assert "surface/labels frame 17: label >= 22" in result.output


def test_rerun_with_another_config_is_refused(small_store, tiny_raw):
    summary, cfg = small_store
    other = PreprocessConfig(**{**SMALL, "surface_points": 700}, shard_frames=5, geodesics="per-template")
    with pytest.raises(FileExistsError, match="surface|config"):
        preprocess_split(AnnyReader(tiny_raw, ("test",)), summary.store.parent, other, "test")
    again = preprocess_split(AnnyReader(tiny_raw, ("test",)), summary.store.parent, cfg, "test")
    assert again.skipped == 24 and again.written == 0 and again.complete


def test_corrupt_input_is_reported_and_the_store_is_not_marked_complete(tmp_path, tiny_raw):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_raw, raw)
    reader = AnnyReader(raw, ("train",))
    bad = Path(reader.frame_refs()[20].source)
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 3])  # truncated npz
    out = tmp_path / "out"
    args = ["preprocess", "--dataset", "anny", "--root", str(raw), "--out", str(out), "--splits", "train",
            "--points", "300", "--shard-frames", "8", "--geodesics", "per-template", "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    n_bad = sum(r.source == str(bad) for r in reader.frame_refs())
    assert f"failed {n_bad};" in result.output and str(bad) in result.output
    store = Store.open(out / "train.zarr", allow_incomplete=True)
    done = store.read("done")
    assert (~done).sum() == n_bad and not store.attrs.get("complete")
    with pytest.raises(ValueError, match="not complete"):
        Store.open(out / "train.zarr")
    # a chunk write that a killed worker left unfinished (zarr writes <chunk>.<uuid>.partial, then renames)
    stray = out / "train.zarr" / "surface" / "points" / "c" / "0" / "0" / "0.0123abcd.partial"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"torn")
    # the input repaired, the same command finishes only the shards with missing frames
    bad.write_bytes(good_bytes)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert not list((out / "train.zarr").rglob("*.partial")) and "1 unfinished chunk write" in result.output
    assert "skipped as already done" in result.output and Store.open(out / "train.zarr").read("done").all()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from hipnet.cli.data import main; main()", *args]


def test_killing_a_worker_mid_run_then_resuming_equals_an_uninterrupted_run(tmp_path, tiny_raw_full):
    """Full-resolution frames with per-frame heat geodesics, two worker processes, shards of 2 frames: one worker is
    SIGKILLed once the first shard is done; rerunning the command gives the same bytes as an uninterrupted run."""
    import psutil

    common = ["--dataset", "anny", "--root", str(tiny_raw_full), "--splits", "heldout", "--points", "2000",
              "--eval-points", "1000", "--shard-frames", "2", "--geodesics", "per-frame"]
    ref = tmp_path / "ref"
    subprocess.run(_cli("preprocess", *common, "--out", str(ref), "--workers", "1"), check=True, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli("preprocess", *common, "--out", str(out), "--workers", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = out / "heldout.zarr"
    killed = None
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if (store / "zarr.json").exists() and np.asarray(open_group(store)["done"][:]).any():
            workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "spawn" in " ".join(c.cmdline())]
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.02)
    output = proc.communicate(timeout=120)[0].decode()
    assert killed is not None, f"the run finished before a worker could be killed:\n{output}"
    assert proc.returncode != 0 and "worker process died" in output, output
    partial = np.asarray(open_group(store)["done"][:])
    assert 0 < partial.sum() < len(partial), "the kill should leave the store part-done"
    assert not open_group(store).attrs.get("complete")

    resumed = subprocess.run(_cli("preprocess", *common, "--out", str(out), "--workers", "2"), capture_output=True)
    assert resumed.returncode == 0, resumed.stdout.decode() + resumed.stderr.decode()
    assert f"skipped as already done {partial.sum()}" in resumed.stdout.decode()
    a, b = store_files(ref / "heldout.zarr"), store_files(store)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []  # the hash records and the shard index too
    assert {"hashes/0/zarr.json", "hashes/static/zarr.json"} <= a.keys() and Store.open(store).shard_index


def test_frame_every_keeps_every_kth_frame_of_each_sequence_with_the_bytes_of_the_full_store(small_store, tiny_raw,
                                                                                            tmp_path):
    """--frame-every 4 (the demo's test store keeps only the frames it scores): positions 0 and 4 of each 6-frame
    sequence, each frame's arrays equal to the same frame's in the store of every frame (a frame's draws depend on
    its name, not its row); recorded in the config, so a rerun with another stride is refused; relabelling lists
    the same frames."""
    from hipnet.pipeline.runner.driver import relabel_store

    full = Store.open(small_store[0].store)
    cfg = PreprocessConfig(**SMALL, shard_frames=5, geodesics="per-template", frame_every=4)
    summary = preprocess_split(AnnyReader(tiny_raw, ("test",)), tmp_path, cfg, "test", workers=1)
    thin = Store.open(summary.store)
    keys = [thin.frame_key(i) for i in range(thin.n_frames)]
    every = [full.frame_key(i) for i in range(full.n_frames)]
    sequences = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in every))
    assert summary.complete and len(sequences) == 4 and keys == [f"{q}/{i}" for q in sequences for i in (0, 4)]
    assert thin.attrs["config"]["frame_every"] == 4 and full.attrs["config"]["frame_every"] == 1
    for i, key in enumerate(keys):
        j = every.index(key)
        for name in ("surface/points", "surface/normals", "surface/labels", "pose/joint_transforms",
                     "eval/uniform_points", "eval/uniform_occupancy", "eval/near_points", "eval/near_labels",
                     "mesh/vertices"):
            np.testing.assert_array_equal(thin.read(name, i), full.read(name, j), err_msg=f"{name} {key}")
    with pytest.raises(FileExistsError, match="frame list|config"):
        preprocess_split(AnnyReader(tiny_raw, ("test",)), tmp_path, replace(cfg, frame_every=2), "test")
    relabelled = relabel_store(AnnyReader(tiny_raw, ("test",)), summary.store, "per-frame")
    assert relabelled.complete and relabelled.written == 8 and not relabelled.failures
    with pytest.raises(ValueError, match="frame_every must be positive"):
        PreprocessConfig(frame_every=0)


def test_frame_every_with_an_excluded_frame_keeps_the_other_frames_on_a_rerun(tmp_path, tiny_raw):
    """--frame-every 2 --exclude-failed with frame 2 of one sequence not finite: that frame is left out, frames 0 and
    4 of its sequence stay, and the same command again finds the store's frame list (the stride counts every listed
    frame, so leaving one out moves no other)."""
    raw = tmp_path / "raw"
    shutil.copytree(tiny_raw, raw)
    ref = AnnyReader(raw, ("test",)).frame_refs()[2]
    with np.load(ref.source) as f:
        arrays = dict(f)
    arrays["vertices"][2] = np.nan
    np.savez(ref.source, **arrays)
    args = ["preprocess", "--dataset", "anny", "--root", str(raw), "--out", str(tmp_path / "out"), "--splits", "test",
            "--points", "300", "--eval-points", "300", "--geodesics", "per-template", "--workers", "1",
            "--frame-every", "2", "--exclude-failed"]
    for _ in range(2):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    store = Store.open(tmp_path / "out" / "test.zarr")
    keys = [store.frame_key(i) for i in range(store.n_frames)]
    sequence = ref.key.rsplit("/", 1)[0]
    assert [k for k in keys if k.startswith(sequence + "/")] == [f"{sequence}/0", f"{sequence}/4"]
    assert len(keys) == 4 * 3 - 1 and [e["key"] for e in store.attrs["excluded"]] == [ref.key]
    assert "skipped as already done 11" in result.output


def test_geodesics_command_relabels_in_place_like_a_fresh_run(tmp_path, tiny_raw_full):
    common = ["--dataset", "anny", "--root", str(tiny_raw_full), "--splits", "heldout", "--points", "3000",
              "--eval-points", "500", "--shard-frames", "8", "--workers", "1"]
    runner = CliRunner()
    for mode, out in (("per-template", tmp_path / "a"), ("per-frame", tmp_path / "b")):
        result = runner.invoke(main, ["preprocess", *common, "--geodesics", mode, "--out", str(out)])
        assert result.exit_code == 0, result.output
    a, b = Store.open(tmp_path / "a" / "heldout.zarr"), Store.open(tmp_path / "b" / "heldout.zarr")
    agreement = (a.read("surface/labels") == b.read("surface/labels")).mean()
    assert 0.85 < agreement < 1.0  # two modes, mostly the same labels
    result = runner.invoke(main, ["geodesics", "--store", str(a.path), "--mode", "per-frame", "--workers", "1"])
    assert result.exit_code == 0, result.output
    a = Store.open(a.path)
    assert a.attrs["config"]["geodesics"] == "per-frame" and "relabel" not in a.attrs
    for name in ("surface/labels", "eval/near_labels", "surface/points"):
        np.testing.assert_array_equal(a.read(name), b.read(name), err_msg=name)
    assert "geodesics_done" not in a.group
    assert a.shard_index is not None and validate(a.group).ok  # the relabelled shards' hashes were rewritten


def test_relabel_refuses_a_store_from_other_raw_data(tmp_path, tiny_raw, small_store):
    from hipnet.pipeline.runner.driver import relabel_store

    path = tmp_path / "s.zarr"
    shutil.copytree(small_store[0].store, path)
    g = open_group(path, mode="r+")
    pts = np.asarray(g["surface/points"][0])
    g["surface/points"][0] = pts + 0.01
    summary = relabel_store(AnnyReader(tiny_raw, ("test",)), path, "per-frame")
    assert len(summary.failures) == 1 and "differ from the stored ones" in summary.failures[0].reason
    assert not summary.complete and not open_group(path).attrs.get("complete")


def test_inspect_prints_a_summary_and_draws_the_labels(small_store, tmp_path):
    png = tmp_path / "labels.png"
    result = CliRunner().invoke(main, ["inspect", str(small_store[0].store), "--frame", "2", "--png", str(png)])
    assert result.exit_code == 0, result.output
    assert "frames 24 (24 done) in 5 shards of 5" in result.output and "KB per frame" in result.output
    assert png.stat().st_size > 10_000


def test_a_dask_distributed_cluster_writes_the_same_store(tmp_path, tiny_raw, small_store):
    """--scheduler tcp://...: the same task graph on a dask.distributed cluster (a local one with 2 worker
    processes) gives the same bytes as the in-process run."""
    from dask.distributed import LocalCluster

    summary, cfg = small_store
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        other = preprocess_split(AnnyReader(tiny_raw, ("test",)), tmp_path, cfg, "test",
                                 scheduler=cluster.scheduler_address)
    assert other.complete and other.written == 24
    a, b = store_files(summary.store), store_files(other.store)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []


def test_a_rest_mesh_in_two_pieces_is_refused_before_the_heat_solver():
    import trimesh

    from hipnet.pipeline.core.frames import Subject

    a, b = trimesh.creation.icosphere(2, radius=0.1), trimesh.creation.icosphere(2, radius=0.1)
    b.apply_translation([0.5, 0, 0])
    both = trimesh.util.concatenate([a, b])
    subj = Subject("twins", np.zeros((2, 3), np.float32), np.asarray(both.faces, np.int32),
                   np.asarray(both.vertices, np.float32))
    with pytest.raises(ValueError, match="subject twins: rest mesh has 2 connected components"):
        SubjectGeometry.build(subj, "per-frame", "subject twins")
