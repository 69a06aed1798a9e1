"""Benchmark: the training loader reading a store from object storage through the shard cache, against local disk.

A local S3-compatible server (moto's server mode on 127.0.0.1, reached over HTTP by s3fs) holds a copy of a
quantised store of full-resolution Anny training frames. Measured in one run, alternating, with the ``fast``
preset's sampling:
- loader frames/s from local disk, from the server with a cold cache (every shard file downloaded, checked against
  its hash and placed in the cache while the loader reads) and with a warm cache (every file already there), in
  one process (how the ``fast`` preset loads) and through a DataLoader of 2 worker processes;
- the ``fast`` trainer's consumption on this CPU (frames/s of its step on ready batches)
                                                                       [warm cache >= the trainer's consumption]
- bytes downloaded per frame.

Each DataLoader worker reopens a remote store after the fork (fsspec's connections do not survive one): a fixed
cost of a few requests per worker and epoch, which a short epoch shows.

The server is on the same machine, so "cold" has no network latency or bandwidth limit: it measures the cache's own
work (download through s3fs, hash check, placement), not a real network. For a real bucket the cold rate is
bounded by the bandwidth (bytes per frame above); prefetching hides the latency.

It also writes, on paper, what preprocessing all of AMASS would take on N workers at this machine's measured
per-core rates (bench/results/preprocess.json) and what it would store. Writes bench/results/s3.json.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench._results import RESULTS, commit, write_result
from bench.loader import trainer_rate
from hipnet.model.config import PRESETS
from hipnet.model.data import FrameStream
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.core.location import as_path
from hipnet.pipeline.embedded.body import AnnyBody
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.store.reading import Store

# AMASS as its paper describes it (Mahmood et al., ICCV 2019, table 1): 11,265 motions, 42.0 hours, 344 subjects.
# Frames assume the common 120 Hz capture rate (rates vary from 60 to 250 Hz between subsets).
AMASS_HOURS, AMASS_MOTIONS, AMASS_HZ = 42.0, 11_265, 120
WORKERS = (1, 16, 64, 256)
STRIDES = {"every frame (120 Hz)": 1, "every 4th frame (30 Hz)": 4, "3% of frames (the CMU protocol)": 100 / 3}
REPEATS = 2  # local and warm-cache passes alternate, each run this often; the best of each is kept


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> object:
    """A moto S3 server on a free port of 127.0.0.1, with the credentials and the endpoint in the environment."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    return server


def rate(path: str | Path, workers: int, epoch: int = 0) -> dict:
    """Frames/s of one epoch of the ``fast`` preset's stream: in this process (``workers`` 0) or through a
    DataLoader with ``workers`` processes."""
    from torch.utils.data import DataLoader

    stream = FrameStream.from_config([path], replace(PRESETS["fast"], seed=0), workers=workers)
    stream.set_epoch(epoch)
    frames = 0
    t = time.perf_counter()
    for batch in stream if workers == 0 else DataLoader(stream, batch_size=None, num_workers=workers):
        frames += len(batch["points"])
    dt = time.perf_counter() - t
    return {"frames_per_s": frames / dt, "frames": frames, "seconds": dt}


def passes(local: Path, url: str, workers: int, cache: Path) -> dict:
    """Local disk, the server with a cold cache (``cache`` empty), then local and warm passes alternating."""
    os.environ["HIPNET_CACHE"] = str(cache)
    out = {"s3_cold": rate(url, workers)}
    local_runs, warm_runs = [], []
    for k in range(REPEATS):
        local_runs.append(rate(local, workers, epoch=k))
        warm_runs.append(rate(url, workers, epoch=k))
    out["local"] = max(local_runs, key=lambda r: r["frames_per_s"])
    out["s3_warm"] = max(warm_runs, key=lambda r: r["frames_per_s"])
    out["cache_bytes"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return out


def amass_estimate(preprocess: dict, bytes_per_frame: float) -> dict:
    """Hours to preprocess AMASS's training frames on N single-core workers at the measured per-core rates, and
    the bytes it would store, for a few frame strides."""
    frames_all = AMASS_HOURS * 3600 * AMASS_HZ
    per_frame = preprocess["train_per_frame_frames_per_s_per_core"]
    per_template = preprocess["train_per_template_frames_per_s_per_core"]
    out = {"assumptions": {"hours": AMASS_HOURS, "motions": AMASS_MOTIONS, "capture_hz": AMASS_HZ,
                           "rates_from": "bench/results/preprocess.json (full-resolution Anny frames, 12,167 "
                                         "vertices; an SMPL+H frame has 6,890)",
                           "per_frame_geodesics_frames_per_s_per_core": per_frame,
                           "per_template_geodesics_frames_per_s_per_core": per_template,
                           "stored_bytes_per_frame": bytes_per_frame},
           "strides": {}}
    for name, stride in STRIDES.items():
        frames = frames_all / stride
        out["strides"][name] = {
            "frames": round(frames),
            "stored_gb": frames * bytes_per_frame / 1e9,
            "hours_per_frame_geodesics": {str(n): frames / per_frame / n / 3600 for n in WORKERS},
            "hours_per_template_geodesics": {str(n): frames / per_template / n / 3600 for n in WORKERS},
        }
    return out


def main() -> None:
    torch.set_num_threads(1)
    server = start_server()
    manifest = make_anny_manifest(n_realistic=2, n_heldout=0, extremes=(), sequences_per_subject=8,
                                  frames_per_sequence=16, key_every=8, topology="full")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        generate_dataset(manifest, raw, body=AnnyBody("full"))
        cfg = PreprocessConfig(geodesics="per-template", shard_frames=16, quantise=True)
        local = preprocess_split(AnnyReader(raw, ("train",)), Path(tmp) / "local", cfg, "train", workers=1).store
        fs = as_path("s3://bench").fs
        fs.mkdir("bench")
        fs.put(str(local), "bench/anny/train.zarr", recursive=True)
        url = "s3://bench/anny/train.zarr"
        n_frames = Store.open(local).n_frames
        trainer = trainer_rate("fast", local)
        # in this process (the fast preset's loader_workers is 0), and through a DataLoader of 2 worker processes
        runs = {("in_process" if k == 0 else f"{k}_workers"): passes(local, url, k, Path(tmp) / f"cache{k}")
                for k in (0, 2)}
        store_bytes = Store.open(local).bytes_on_disk()
    server.stop()
    preprocess = json.loads((RESULTS / "preprocess.json").read_text())
    trainer_fps = trainer["frames_per_s"]
    result = {
        "commit": commit(),
        "command": "make bench-s3 (python -m bench.s3)",
        "server": "moto ThreadedMotoServer on 127.0.0.1 (no network latency or bandwidth limit)",
        "store": {"frames": n_frames, "bytes": store_bytes, "bytes_per_frame": store_bytes / n_frames,
                  "layout": "quantised, per-template labels, shards of 16 frames"},
        "passes": {"s3_cold": 1, "local": f"best of {REPEATS}", "s3_warm": f"best of {REPEATS}"},
        "loader": runs,
        "fast_trainer_consumption": trainer,
        "ratios": {key: {"s3_warm_over_local": r["s3_warm"]["frames_per_s"] / r["local"]["frames_per_s"],
                         "s3_cold_over_local": r["s3_cold"]["frames_per_s"] / r["local"]["frames_per_s"],
                         "s3_warm_over_trainer": r["s3_warm"]["frames_per_s"] / trainer_fps,
                         "s3_cold_over_trainer": r["s3_cold"]["frames_per_s"] / trainer_fps}
                   for key, r in runs.items()},
        "amass_estimate": amass_estimate(preprocess, store_bytes / n_frames),
    }
    write_result("s3", result)


if __name__ == "__main__":
    main()
