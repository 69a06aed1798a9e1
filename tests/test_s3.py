"""Stores on object storage, against a real S3-compatible server (moto's server mode on 127.0.0.1, spoken to over
HTTP by s3fs): a dask cluster of worker processes writing one store, a killed run resumed, the writer lock, a
training run streaming through the shard cache, and stores altered on the server refused."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.core.location import as_path, sizes_under
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.store.cache import CacheError, ShardCache
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.zarrstore import open_group

SMALL = dict(surface_points=600, eval_points=300, shard_frames=5, geodesics="per-template")
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with a bucket ``hipnet``; the credentials and endpoint in the environment, so
    subprocesses and dask workers reach it too; the shard cache in a temporary folder. Yields the fsspec
    filesystem."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "HIPNET_CACHE": str(tmp_path_factory.mktemp("cache"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs = as_path("s3://hipnet").fs
    fs.mkdir("hipnet")
    yield fs
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, tiny_raw):
    """The tiny test split (24 frames, shards of 5) on local disk: the reference."""
    out = tmp_path_factory.mktemp("local")
    return preprocess_split(AnnyReader(tiny_raw, ("test",)), out, PreprocessConfig(**SMALL), "test").store


def local_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def remote_files(url: str) -> dict[str, bytes]:
    path = as_path(url)
    return {key: (path / key).read_bytes() for key in sizes_under(path)}


def data(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / "hipnet-data"), *args], capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_a_dask_cluster_writes_a_store_to_s3_with_the_bytes_of_a_local_run(s3, tiny_raw, local_store):
    """Three worker processes of a dask LocalCluster write one store to the server: every object equals the local
    run's file of the same name, the store opens, and the commands read it by URL."""
    from dask.distributed import LocalCluster

    url = "s3://hipnet/cluster"
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = preprocess_split(AnnyReader(tiny_raw, ("test",)), url, PreprocessConfig(**SMALL), "test",
                                   scheduler=cluster.scheduler_address)
    assert summary.complete and summary.written == 24 and str(summary.store) == f"{url}/test.zarr"
    a, b = local_files(local_store), remote_files(f"{url}/test.zarr")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    store = Store.open(f"{url}/test.zarr")
    assert store.cache is not None and store.shard_index == Store.open(local_store).shard_index
    inspect = data("inspect", f"{url}/test.zarr")
    assert "24 (24 done) in 5 shards" in inspect.stdout
    assert "ok (24 frames)" in data("validate", f"{url}/test.zarr").stdout
    assert not s3.exists("hipnet/cluster/.hipnet-writer.lock")  # released


def test_a_run_killed_on_s3_resumes_to_the_same_store_and_a_second_writer_is_refused(s3, tiny_raw, local_store):
    """The preprocess command writing to the server is SIGKILLed after its first shard: the store is not complete
    and does not open; a second command is refused while the first lives; the killed run's lock is taken over;
    the rerun skips the finished frames and ends with the bytes of the uninterrupted run."""
    url = "s3://hipnet/killed"
    args = ["preprocess", "--dataset", "anny", "--root", str(tiny_raw), "--splits", "test", "--points", "600",
            "--eval-points", "300", "--shard-frames", "5", "--geodesics", "per-template", "--workers", "1",
            "--out", url]
    proc = subprocess.Popen([str(BIN / "hipnet-data"), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.time() + 120
        done = np.zeros(0, bool)
        while proc.poll() is None and time.time() < deadline and not done.any():
            time.sleep(0.1)
            if s3.exists("hipnet/killed/test.zarr/done/zarr.json"):
                done = np.asarray(open_group(f"{url}/test.zarr")["done"][:])
        assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.communicate()[0]
        second = data(*args, check=False)
        assert second.returncode != 0 and "another run is writing here" in second.stderr, second.stderr
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    group = open_group(f"{url}/test.zarr")
    partial = np.asarray(group["done"][:])
    assert 0 < partial.sum() < 24 and not group.attrs.get("complete")
    with pytest.raises(ValueError, match="store is not complete"):
        Store.open(f"{url}/test.zarr")
    assert s3.exists("hipnet/killed/.hipnet-writer.lock")  # left behind by the killed run

    resumed = data(*args)
    assert f"skipped as already done {partial.sum()}" in resumed.stdout
    a, b = local_files(local_store), remote_files(f"{url}/test.zarr")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []


def test_a_creation_interrupted_before_its_attributes_is_not_a_store_and_is_redone(s3, tiny_raw, local_store):
    """On object storage a store is created in place; until its root attributes are written it is not a store: a
    leftover of an interrupted creation is cleared and the store created anew."""
    from hipnet.pipeline.store.zarrstore import store_exists

    url = "s3://hipnet/half/test.zarr"
    s3.pipe_file("hipnet/half/test.zarr/zarr.json", json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {}}).encode())
    s3.pipe_file("hipnet/half/test.zarr/surface/points/zarr.json", b"{}")
    assert not store_exists(url)
    summary = preprocess_split(AnnyReader(tiny_raw, ("test",)), "s3://hipnet/half", PreprocessConfig(**SMALL), "test")
    assert summary.complete and store_exists(url)
    assert remote_files(url) == local_files(local_store)


def test_training_streams_from_s3_with_the_loss_of_a_local_run_and_a_warm_cache_fetches_nothing(s3, local_store,
                                                                                                   tmp_path):
    """The same training run on the local store and on its copy on the server (through the shard cache, two
    loader workers) logs the same loss at every step; afterwards every shard file is cached, so a second
    stream reads the whole epoch without a download."""
    from dataclasses import replace

    from hipnet.model.config import PRESETS
    from hipnet.model.data import FrameStream
    from hipnet.model.train import train

    url = "s3://hipnet/train/test.zarr"
    s3.put(str(local_store), "hipnet/train/test.zarr", recursive=True)
    cfg = PRESETS["small"]
    model = replace(cfg.model, hidden=16, layers=4, skip=2, pose_dim=8, pose_hidden=16, code_dim=8,
                    aggregator_hidden=16)
    cfg = replace(cfg, model=model, points_per_frame=64, eikonal_per_frame=64, frames_per_step=4, loader_workers=2,
                  checkpoint_every=1000, log_every=1, steps=8, lr=1e-3)
    train([local_store], cfg, tmp_path / "local", progress=False)
    train(["s3://hipnet/train/*.zarr"], cfg, tmp_path / "s3", progress=False)
    logs = [(tmp_path / run / "log.csv").read_text().splitlines() for run in ("local", "s3")]
    columns = logs[0][0].split(",")
    keep = [i for i, c in enumerate(columns) if c not in ("points_per_s", "wall_s")]  # timings differ
    rows = [[[r.split(",")[i] for i in keep] for r in log[1:]] for log in logs]
    assert len(rows[0]) == 8 and rows[0] == rows[1]
    assert torch.load(tmp_path / "s3" / "ckpt.pt", weights_only=False)["stores"] == [url]

    from click.testing import CliRunner

    from hipnet.cli.eval import main as eval_main
    from hipnet.viz.sources import load_sources

    scored = {}
    for name, where in (("local", str(local_store)), ("s3", url)):
        result = CliRunner().invoke(eval_main, ["--checkpoint", str(tmp_path / "s3" / "ckpt.pt"), "--shards", where,
                                                "--mesh-frames", "0", "--max-frames", "4", "--out",
                                                str(tmp_path / f"eval_{name}")])
        assert result.exit_code == 0, (result.output, __import__("traceback").format_exception(*result.exc_info))
        scored[name] = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())
    assert scored["s3"]["summary"] == scored["local"]["summary"] and scored["s3"]["summary"]["frames"] == 4
    sources = load_sources([as_path(url)], training_stores=False)
    assert not sources.problems and sources.stores[0].store.n_frames == 24

    store = Store.open(url)
    stream = FrameStream([url], points_per_frame=64, eikonal_per_frame=32, frames_per_step=3, seed=1)
    stream.stores.stores[0].cache.downloaded = 0
    frames = sum(len(b["frame"]) for b in stream)
    assert frames == 24 and stream.stores.stores[0].cache.downloaded == 0
    for name in ("surface/points", "surface/labels", "pose/joint_transforms"):  # what training read is mirrored
        assert all(store.cache.cached(name, i) for i in range(store.n_shards)), name
    local = Store.open(local_store)
    for name in ("surface/points", "surface/labels", "pose/joint_transforms", "eval/uniform_occupancy"):
        assert np.array_equal(store.read(name), local.read(name)), name


def test_geodesics_relabel_a_store_on_s3_in_place_like_a_local_one(s3, local_store, tmp_path):
    """``hipnet-data geodesics --store s3://...``: the labels recomputed per frame in place on the server, the
    store complete again with the bytes of the same relabelling of a local copy."""
    import shutil

    from hipnet.pipeline.runner.driver import relabel_store

    copy = tmp_path / "copy" / "test.zarr"
    shutil.copytree(local_store, copy)
    s3.put(str(local_store), "hipnet/relabel/test.zarr", recursive=True)
    reader = AnnyReader(Path(Store.open(local_store).attrs["source"]["root"]), ("test",))
    assert relabel_store(reader, copy, "per-frame").complete
    data("geodesics", "--store", "s3://hipnet/relabel/test.zarr", "--mode", "per-frame", "--workers", "1")
    a, b = local_files(copy), remote_files("s3://hipnet/relabel/test.zarr")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    assert Store.open("s3://hipnet/relabel/test.zarr").attrs["config"]["geodesics"] == "per-frame"


def test_the_cache_stays_within_its_limit_and_refetches_what_it_evicted(s3, local_store, tmp_path):
    url = "s3://hipnet/bounded/test.zarr"
    s3.put(str(local_store), "hipnet/bounded/test.zarr", recursive=True)
    store = Store.open(url)
    one_shard = max(size for size, _ in store.shard_index["arrays"]["surface/points"])
    cache = ShardCache(url, store.shard_index, store.n_frames, store.shard_frames, root=tmp_path / "c",
                       limit=3 * one_shard)
    store.cache = cache
    full = store.read("surface/points")
    assert np.array_equal(full, Store.open(local_store).read("surface/points"))
    assert sum(f.stat().st_size for f in (tmp_path / "c").rglob("c/*/*") if f.is_file()) <= 3 * one_shard
    before = cache.downloaded
    store.read("surface/points", slice(0, 5))  # shard 0 was evicted first (least recently used)
    assert cache.downloaded > before


def test_a_store_altered_on_the_server_is_refused_on_open_and_by_the_cache(s3, local_store):
    """A shard object replaced with another size: ``Store.open`` refuses the store naming the shard and its
    frames. Replaced with the same size (a byte flipped): the cache's hash check refuses it before anyone reads
    it, and ``hipnet-data validate`` names it."""
    for name in ("resized", "flipped"):
        s3.put(str(local_store), f"hipnet/{name}/test.zarr", recursive=True)
    key = "surface/points/c/2/0/0"
    original = s3.cat_file(f"hipnet/resized/test.zarr/{key}")
    s3.pipe_file(f"hipnet/resized/test.zarr/{key}", original + b"junk")
    with pytest.raises(ValueError, match=r"surface/points shard 2 \(frames 10-14\) has \d+ bytes, the shard index"):
        Store.open("s3://hipnet/resized/test.zarr")

    flipped = bytearray(original)
    flipped[40] ^= 0xFF
    s3.pipe_file(f"hipnet/flipped/test.zarr/{key}", bytes(flipped))
    store = Store.open("s3://hipnet/flipped/test.zarr")  # sizes match: open passes
    assert np.array_equal(store.read("surface/points", slice(0, 10)), Store.open(local_store).read("surface/points",
                                                                                                    slice(0, 10)))
    with pytest.raises(CacheError, match=r"surface/points shard 2 \(frames 10-14\).*(differs|does not decode)"):
        store.read("surface/points", slice(10, 15))
    assert not list(store.cache.mirror.rglob("surface/points/c/2/0/0"))  # never placed in the cache
    out = data("validate", "s3://hipnet/flipped/test.zarr", check=False)
    assert out.returncode != 0 and "surface/points shard 2" in out.stderr, out.stdout + out.stderr


def test_the_writer_lock_on_s3_refuses_a_live_holder_elsewhere_and_takes_over_an_expired_one(s3, monkeypatch):
    """A lock object written by a run on another host is honoured while its lease runs and taken over once it has
    not been refreshed for ``LEASE_S``; the lock is created with a conditional PUT, so only one of two creators
    wins."""
    from hipnet.pipeline.core.location import create_exclusive
    from hipnet.pipeline.store import lock

    other = {"pid": 1, "host": "elsewhere", "started": time.time(), "command": "hipnet-data preprocess"}
    s3.pipe_file(f"hipnet/locked/{lock.LOCK_NAME}", json.dumps(other).encode())
    with pytest.raises(lock.LockedError, match="another run is writing here: pid 1 on elsewhere"):
        with lock.writer_lock("s3://hipnet/locked"):
            pass
    monkeypatch.setattr(lock, "LEASE_S", 0.0)  # the lease has run out
    with lock.writer_lock("s3://hipnet/locked"):
        mine = json.loads(s3.cat_file(f"hipnet/locked/{lock.LOCK_NAME}"))
        assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
        assert not create_exclusive(as_path(f"s3://hipnet/locked/{lock.LOCK_NAME}"), b"{}")
    assert not s3.exists(f"hipnet/locked/{lock.LOCK_NAME}")
