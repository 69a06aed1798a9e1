"""Benchmark: the training loader (model/data.py FrameStream) against the trainer's consumption.

Measured in one run on full-resolution Anny training frames (a lossless and a ``--quantise`` store of the same
frames, per-template labels):
- stored bytes per training frame of both layouts                                   [quantised <= 250 KB]
- the distance target's error (``oriented_distance`` over k surface samples, the ``fast`` preset's eikonal points)
  against the exact signed distance to the frame's mesh, for k from 1,000 to all 25,000: what ``SDF_POINTS`` is
  chosen from
- loader frames/s (one process, no workers) and bytes read from the store per step, for the ``fast`` and
  ``paper`` presets' sampling, the full-read loader (``windowed=False``) against the windowed one, on both
  layouts, in the same run (ratios)
- the trainer's consumption in frames/s on this CPU (the preset's model, loss and Adam step on loader batches);
  for ``paper``, whose step on a CPU takes minutes, the query-point rate of a smaller batch divided by the
  preset's points per frame, and a GPU target (250,000 surface points/s for one H100) as a second reference
                                                                          [loader >= 10x the trainer's consumption]

Prints the figures and writes bench/results/loader.json with the machine they ran on.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench._results import write_result
from hipnet.model.checkpoint import build_model
from hipnet.model.config import PRESETS
from hipnet.model.data import SDF_POINTS, FrameStream, oriented_distance
from hipnet.model.losses import Batch, loss_for
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.embedded.body import AnnyBody
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.stages.canonical import canonicalise
from hipnet.pipeline.store.reading import Store

SDF_COUNTS = (1_000, 2_500, 5_000, 10_000, 15_000, 25_000)
PAPER_GPU_SURFACE_POINTS_PER_S = 250_000  # the paper trainer's target on one H100 (bench/train.py)


class ReadCounter:
    """Bytes read from the store's files while installed: what the Zarr local store hands out (compressed chunks
    and shard indexes; not the arrays' metadata) and what the direct shard reader (``pipeline.store.shardread``) reads
    with ``os.pread``."""

    def __init__(self) -> None:
        self.bytes = 0

    def __enter__(self):
        from zarr.storage import LocalStore

        from hipnet.pipeline.store import shardread

        self.cls, self.get = LocalStore, LocalStore.get
        self.shardread, self.pread = shardread, shardread._pread
        counter = self

        async def get(store, key, prototype=None, byte_range=None):
            buf = await counter.get(store, key, prototype, byte_range)
            if not key.endswith("zarr.json"):  # metadata: zarr rereads it per array opened, the direct reader caches it
                counter.bytes += 0 if buf is None else len(buf)
            return buf

        def pread(fd, n, offset):
            buf = counter.pread(fd, n, offset)
            counter.bytes += len(buf)
            return buf

        LocalStore.get = get
        shardread._pread = pread
        return self

    def __exit__(self, *exc) -> None:
        self.cls.get = self.get
        self.shardread._pread = self.pread


@contextmanager
def zarr_reads():
    """Every store read through zarr, as before the direct shard reader (``pipeline.store.shardread``)."""
    import hipnet.pipeline.store.reading as store_module

    saved = store_module.read_frames
    store_module.read_frames = lambda *args, **kwargs: None
    try:
        yield
    finally:
        store_module.read_frames = saved


def stream_for(preset: str, store: Path, windowed: bool, workers: int = 0) -> FrameStream:
    """The preset's training stream (``FrameStream.from_config``: its sampling, part balance included), seed 0."""
    return FrameStream.from_config([store], replace(PRESETS[preset], seed=0), workers=workers, windowed=windowed)


def loader_rate(preset: str, store: Path, windowed: bool, epochs: int) -> dict:
    """Frames/s and bytes read per step of one in-process stream over ``epochs`` epochs."""
    stream = stream_for(preset, store, windowed)
    frames = steps = 0
    with ReadCounter() as counter:
        t = time.perf_counter()
        for epoch in range(epochs):
            stream.set_epoch(epoch)
            for batch in stream:
                frames += len(batch["points"])
                steps += 1
        dt = time.perf_counter() - t
    return {"frames_per_s": frames / dt, "bytes_read_per_step": counter.bytes / steps,
            "bytes_read_per_frame": counter.bytes / frames, "steps": steps}


def loader_rate_workers(preset: str, store: Path, epochs: int) -> dict:
    """Frames/s of the stream as the trainer runs it: a DataLoader with the preset's ``loader_workers`` processes."""
    from torch.utils.data import DataLoader

    cfg = PRESETS[preset]
    stream = stream_for(preset, store, windowed=True, workers=cfg.loader_workers)
    frames = 0
    t = time.perf_counter()
    for epoch in range(epochs):
        stream.set_epoch(epoch)
        for batch in DataLoader(stream, batch_size=None, num_workers=cfg.loader_workers):
            frames += len(batch["points"])
    return {"frames_per_s": frames / (time.perf_counter() - t), "workers": cfg.loader_workers}


def trainer_rate(preset: str, store: Path, repeats: int = 3) -> dict:
    """Frames/s the preset's training step consumes on this CPU (loading excluded: batches are made first)."""
    cfg = PRESETS[preset]
    small = preset == "paper"  # a paper step on a CPU takes minutes: time 1 frame of 1,000 + 1,000 points
    if small:
        cfg = replace(cfg, points_per_frame=1_000, eikonal_per_frame=1_000, frames_per_step=1)
    stream = FrameStream.from_config([store], replace(cfg, seed=0), workers=0)
    batches = [Batch.from_dict(b) for _, b in zip(range(repeats + 1), stream, strict=False)]
    torch.manual_seed(0)
    model = build_model(stream.stores.skeleton, len(stream.stores.subjects), cfg.model)
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=cfg.lr), loss_for(cfg)
    times = []
    for b in batches:
        t = time.perf_counter()
        loss, _ = loss_fn(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    step = float(np.median(times[1:]))
    per_frame = cfg.points_per_frame + cfg.eikonal_per_frame
    query_rate = cfg.frames_per_step * per_frame / step
    full = PRESETS[preset]
    out = {"step_s_median": step, "query_points_per_s": query_rate,
           "frames_per_s": query_rate / (full.points_per_frame + full.eikonal_per_frame)}
    if small:
        out["measured_with"] = "1 frame of 1,000 surface + 1,000 eikonal points; frames/s = query points/s / 50,000"
    return out


def sdf_error(reader: AnnyReader, store: Store, frames: int = 6, draws: int = 4) -> dict:
    """Error (mm) of the distance target over k samples against the exact signed distance to the frame's mesh,
    at eikonal points drawn as the ``fast`` preset's loader draws them."""
    import igl

    cfg = PRESETS["fast"]
    refs = reader.frame_refs()
    errors: dict[int, list[np.ndarray]] = {k: [] for k in SDF_COUNTS}
    near_errors: dict[int, list[np.ndarray]] = {k: [] for k in SDF_COUNTS}
    sign_flips: dict[int, int] = dict.fromkeys(SDF_COUNTS, 0)
    n_queries = 0
    for i in range(frames):
        _, frame = next(iter(reader.load([refs[i * len(refs) // frames]])))
        canon = canonicalise(frame.vertices, frame.joint_transforms)
        v, f = canon.vertices.astype(np.float64), np.asarray(frame.faces, dtype=np.int64)
        pts = store.read("surface/points", i * len(refs) // frames)
        nrm = store.read("surface/normals", i * len(refs) // frames).astype(np.float32)
        for d in range(draws):
            rng = np.random.default_rng([i, d])
            half = cfg.eikonal_per_frame // 2
            uniform = rng.uniform(pts.min(0) - cfg.bbox_margin, pts.max(0) + cfg.bbox_margin, size=(half, 3))
            near = pts[rng.integers(0, len(pts), half)] + rng.normal(0, cfg.eikonal_near_sigma, (half, 3))
            q = np.concatenate([uniform, near])
            exact = igl.signed_distance(q, v, f, sign_type=igl.SIGNED_DISTANCE_TYPE_WINDING_NUMBER)[0]
            n_queries += len(q)
            for k in SDF_COUNTS:
                sub = rng.choice(len(pts), size=k, replace=False) if k < len(pts) else slice(None)
                target = oriented_distance(pts[sub], nrm[sub], q.astype(np.float32))
                err = np.abs(target - exact)
                errors[k].append(err)
                near_errors[k].append(err[half:])
                sign_flips[k] += int(np.count_nonzero(np.sign(target) != np.sign(exact)))
    out = {}
    for k in SDF_COUNTS:
        e, en = np.concatenate(errors[k]) * 1000, np.concatenate(near_errors[k]) * 1000
        out[str(k)] = {"mean_mm": float(e.mean()), "median_mm": float(np.median(e)), "p95_mm": float(np.percentile(e, 95)),
                       "near_mean_mm": float(en.mean()), "near_p95_mm": float(np.percentile(en, 95)),
                       "sign_errors": sign_flips[k] / n_queries}
    return out


def main() -> None:
    torch.set_num_threads(1)
    body = AnnyBody("full")
    manifest = make_anny_manifest(n_realistic=2, n_heldout=0, extremes=(), sequences_per_subject=4,
                                  frames_per_sequence=16, key_every=8, topology="full")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        generate_dataset(manifest, raw, body=body)
        reader = AnnyReader(raw, ("train",))
        stores = {}
        for layout, quantise in (("lossless", False), ("quantised", True)):
            cfg = PreprocessConfig(geodesics="per-template", shard_frames=32, quantise=quantise)
            summary = preprocess_split(reader, Path(tmp) / layout, cfg, "train", workers=1)
            assert summary.complete and not summary.failures, summary
            stores[layout] = summary.store
        opened = {k: Store.open(p) for k, p in stores.items()}
        n_frames = opened["lossless"].n_frames
        bytes_per_frame = {k: s.bytes_on_disk() / n_frames for k, s in opened.items()}
        errors = sdf_error(reader, opened["lossless"])
        loader, ratios, consumption = {}, {}, {}
        for preset in ("fast", "paper"):
            consumption[preset] = trainer_rate(preset, stores["lossless"])
            epochs = 2 if preset == "fast" else 1
            for layout, path in stores.items():
                # previous and current alternate, so a change in the machine's load hits both
                with zarr_reads():
                    before = loader_rate(preset, path, windowed=False, epochs=epochs)
                    via_zarr = loader_rate(preset, path, windowed=True, epochs=epochs)
                after = loader_rate(preset, path, windowed=True, epochs=epochs)
                loader[f"{preset}/{layout}"] = {"previous": before, "current_zarr_reads": via_zarr, "current": after}
                ratios[f"{preset}/{layout}"] = {
                    "frames_per_s": after["frames_per_s"] / before["frames_per_s"],
                    "direct_reads_over_zarr_reads": after["frames_per_s"] / via_zarr["frames_per_s"],
                    "bytes_read": after["bytes_read_per_step"] / before["bytes_read_per_step"],
                    "loader_over_trainer_cpu": after["frames_per_s"] / consumption[preset]["frames_per_s"],
                }
        paper = PRESETS["paper"]
        gpu_frames = PAPER_GPU_SURFACE_POINTS_PER_S / paper.points_per_frame
        consumption["paper"]["gpu_target_frames_per_s"] = gpu_frames
        for layout, path in stores.items():
            ratios[f"paper/{layout}"]["loader_over_trainer_gpu_target"] = (
                loader[f"paper/{layout}"]["current"]["frames_per_s"] / gpu_frames)
            # as the trainer runs it: the preset's loader workers (paper: 2), each its own process
            loader[f"paper/{layout}"]["current_preset_workers"] = loader_rate_workers("paper", path, epochs=2)
            ratios[f"paper/{layout}"]["loader_preset_workers_over_trainer_gpu_target"] = (
                loader[f"paper/{layout}"]["current_preset_workers"]["frames_per_s"] / gpu_frames)

    result = {
        "vertices": body.num_vertices,
        "train_frames": n_frames,
        "bytes_per_train_frame": bytes_per_frame,
        "sdf_points": SDF_POINTS,
        "sdf_target_error_vs_points": errors,
        "loader": loader,
        "trainer_consumption": consumption,
        "ratios": ratios,
        "targets": {"bytes_per_quantised_train_frame_max": 250_000, "loader_over_trainer_min": 10},
        "note": "one process, torch and numpy on 1 thread, no loader workers (a DataLoader with W workers runs W "
                "streams), except current_preset_workers: a DataLoader with the preset's loader_workers; bytes read "
                "counted at the Zarr local store and the direct reader's pread (compressed chunks and shard indexes, "
                "not zarr.json). "
                "previous: the full-read loader (windowed=False: whole frames, distance targets "
                "over all 25,000 samples, every read through zarr); current: chunk windows and SDF_POINTS samples, "
                "frame-major arrays read from the shard files by pipeline.store.shardread; current_zarr_reads: the same "
                "through zarr (direct_reads_over_zarr_reads). Ratios within one run. "
                "sdf error: |target - exact signed distance to the mesh| at the fast preset's eikonal points "
                "(half uniform in the grown box, half near the surface), the exact one by libigl (winding-number "
                "sign); near_*: the near-surface half; sign_errors: fraction of points whose sign differs.",
    }
    write_result("loader", result)


if __name__ == "__main__":
    main()
