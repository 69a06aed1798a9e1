"""Streaming training data over one or more stores (docs/architecture.md section 7).

- The shard order of an epoch is a pure function of (seed, epoch): a permutation of every shard of every store.
- Shard ``i`` of that order goes to rank ``i % world``; a rank's shards go to its loader workers the same way.
  Each worker reads whole shards and passes their frames through a seeded shuffle buffer, then batches them.
- A DataLoader over W workers returns their batches round robin (a worker that runs out drops out of the turn),
  so the epoch's batch sequence is a pure function of (seed, epoch, rank, world, W). Resuming after k batches
  recomputes that sequence, skips each worker's consumed batches, and rotates which physical worker plays which
  logical one so the DataLoader's turn starts where the interrupted run stopped: the rest of the epoch is exactly
  the uninterrupted one.
- Each frame's point subsample and eikonal points come from a generator seeded by (seed, epoch, store, frame).
- Limitation: docs/architecture.md asks for a sample order independent of the number of ranks and workers; this loader's is
  not. Shards are dealt round robin to ranks and then to workers, and each worker shuffles within its own buffer,
  so the order is a function of (seed, epoch, world, workers), and ``--resume`` refuses another world size or
  worker count. An elastic order would need canonical partitions in the manner of mosaicml-streaming (the sample
  space cut into a fixed number of canonical nodes whose order and shuffle do not depend on the physical ranks and
  workers, which are then mapped onto them); that is not implemented.
- Read volume: the surface samples of a stored frame are in random order, so any set of them is a
  uniform sample of the surface. Each shard's frames are read as a window of whole surface chunks (the same
  chunks for every frame of the shard, starting at a chunk drawn from (seed, epoch, store, shard)) large enough
  for a step: ``points_per_frame`` samples, and ``sdf_points`` samples for the distance targets. A quantised store
  chunks the samples by 2,500 (``schema.QUANTISED_CHUNK_POINTS``) and stores each frame's box, so the ``fast``
  preset reads 4 chunks of 10 (``SDF_POINTS`` samples); a lossless store keeps a frame per chunk and is read
  whole (its box is the points'). Within the window, the step's samples, the near-surface eikonal points' bases
  and the distance targets' samples are drawn as the full-read path (``windowed=False``, kept for the
  comparison in tests/test_loader.py and bench/loader.py) draws them from the whole frame:
  the same distributions (the distance targets excepted: they use ``sdf_points`` samples, not every one).
- With ``sdf_targets`` each eikonal point also gets the signed distance to the nearest of ``sdf_points`` of the
  frame's oriented surface samples (``oriented_distance``), for the optional distance term of the loss.
  ``SDF_POINTS`` is chosen from bench/loader.py's measurement of the target's error against the exact signed
  distance on full-resolution Anny frames.
- Stores are opened through ``Store.open`` with the arrays read here (``STORE_ARRAYS``): a damaged or unfinished
  store is refused before training. Every shard's float arrays are checked for NaN and inf when it is read (one
  ``np.isfinite`` pass over what was just decoded); a frame holding one stops the run with a ``DataError`` naming
  the store and the frame. Raised in a loader worker, it still reaches the user as that one line (``DataError``).

The store layout comes from ``pipeline.store.schema`` through ``pipeline.store.reading.Store``; nothing here knows
file names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from hipnet.model.config import TrainConfig
from hipnet.pipeline.core.location import as_path, glob_paths
from hipnet.pipeline.store.reading import Store

SURFACE_ARRAYS = ("surface/points", "surface/normals", "surface/labels")
TRAIN_ARRAYS = (*SURFACE_ARRAYS, "pose/joint_transforms", "frame/subject")
#: Surface samples behind each frame's distance targets (``sdf_targets``). bench/loader.py measures the targets'
#: error against the exact signed distance on full-resolution Anny frames at the ``fast`` preset's eikonal points
#: (bench/results/loader.json): mean 2.3 mm (median 0.8, sign wrong at 0.7% of points) with 10,000 samples, against
#: 0.9 mm (0.4, 0.5%) with all 25,000 and 4.8 mm (1.3, 1.4%) with 5,000. In a quantised store 10,000 samples are
#: 4 of a frame's 10 chunks.
SDF_POINTS = 10_000
#: Shards a loader worker asks a remote store's cache to fetch ahead of the one it reads (``pipeline.store.cache``).
PREFETCH_SHARDS = 4
FINITE_ARRAYS = ("surface/points", "surface/normals", "pose/joint_transforms")  # of TRAIN_ARRAYS, must be finite
STORE_ARRAYS = (*TRAIN_ARRAYS, "frame/sequence", "frame/index")  # checked on open (the ids name a bad frame)


class DataError(ValueError):
    """A store's content that cannot be trained or evaluated on (NaN or inf in a frame's arrays), in one line that
    names the store and the frame.

    Raised in a DataLoader worker process, torch re-raises it in the main process as ``DataError(text)`` where
    ``text`` is the worker's whole traceback; the one-line message is then taken back from its last line."""

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__name__}: "
        if "Traceback" in message and marker in message:
            message = message.strip().splitlines()[-1].split(marker, 1)[1]
        super().__init__(message)


def nonfinite_text(name: str, a: np.ndarray) -> str | None:
    """``"surface/points has 1 NaN (of 1200 values)"`` when ``a`` holds NaN or inf, else None."""
    if np.isfinite(a).all():
        return None
    counts = [(int(np.isnan(a).sum()), "NaN"), (int(np.isinf(a).sum()), "inf")]
    return f"{name} has " + " and ".join(f"{n} {kind}" for n, kind in counts if n) + f" (of {a.size} values)"


def frame_error(store: Store, frame: int, problem: str) -> DataError:
    return DataError(f"{store.path}: frame {frame} ({store.frame_key(frame)}): {problem}")


def finite(store: Store, frame: int, name: str, a: np.ndarray) -> np.ndarray:
    """``a`` (frame ``frame``'s array ``name``), refused with a ``DataError`` naming the store and the frame when
    it holds NaN or inf."""
    problem = nonfinite_text(name, a)
    if problem:
        raise frame_error(store, frame, problem)
    return a


def read_finite(store: Store, name: str, frame: int) -> np.ndarray:
    """Frame ``frame``'s ``name`` array, checked by ``finite``: what evaluation and the applications read."""
    return finite(store, frame, name, store.read(name, frame))


def check_finite_shard(store: Store, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Refuse (``DataError``) the first frame of a shard block (frames from ``start``) whose float arrays hold NaN
    or inf; one vectorised pass when the block is clean."""
    for name, a in arrays.items():
        if a.dtype.kind != "f" or np.isfinite(a).all():
            continue
        k = int(np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0])
        raise frame_error(store, start + k, nonfinite_text(name, a[k]))


def expand_shards(patterns: Sequence[str | Path]) -> list[Path]:
    """Store paths from paths, URLs or glob patterns (``data/processed/*/train.zarr``,
    ``s3://bucket/prefix/*/train.zarr``), in a stable order."""
    out: list[Path] = []
    for p in patterns:
        matches = glob_paths(str(p)) if any(c in str(p) for c in "*?[") else [as_path(p)]
        if not matches:
            raise FileNotFoundError(f"{p}: no store matches")
        out += matches
    if len({str(p) for p in out}) != len(out):
        raise ValueError(f"a store is listed twice: {[str(p) for p in out]}")
    return out


@dataclass(frozen=True)
class ShardRef:
    store: int
    shard: int
    frames: int


class StoreSet:
    """Stores opened for training, with one subject table across them (subjects keyed by name)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [as_path(p) for p in paths]
        if not self.paths:
            raise ValueError("no stores given")
        self.stores = [Store.open(p, arrays=STORE_ARRAYS) for p in self.paths]
        sk = self.stores[0].skeleton
        for p, s in zip(self.paths, self.stores, strict=True):
            if s.skeleton != sk:
                raise ValueError(f"{p}: skeleton differs from {self.paths[0]}'s; one model needs one skeleton")
        self.skeleton = sk
        self.subjects: list[str] = []
        for s in self.stores:
            self.subjects += [n for n in s.subjects if n not in self.subjects]
        self.subject_maps = [np.array([self.subjects.index(n) for n in s.subjects]) for s in self.stores]
        self.shards = [ShardRef(i, k, len(range(*s.shard_slice(k).indices(s.n_frames))))
                       for i, s in enumerate(self.stores) for k in range(s.n_shards)]

    @property
    def n_frames(self) -> int:
        return sum(s.frames for s in self.shards)

    @property
    def schema_version(self) -> int:
        """The stores' schema version, read from their attributes (one model reads one schema)."""
        versions = {s.attrs.get("schema_version") for s in self.stores}
        if len(versions) != 1:
            raise ValueError(f"stores of several schema versions {sorted(map(str, versions))}: {self.paths}")
        return versions.pop()


def round_robin(counts: Sequence[int]) -> list[int]:
    """Worker id of each batch when workers with ``counts`` batches take turns and drop out when empty (the order
    in which ``torch.utils.data.DataLoader`` returns an IterableDataset's batches)."""
    left, seq = list(counts), []
    while any(left):
        for w in range(len(left)):
            if left[w]:
                seq.append(w)
                left[w] -= 1
    return seq


def epoch_order(n_shards: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n_shards)


def assigned_shards(n_shards: int, seed: int, epoch: int, rank: int, world: int, worker: int, workers: int) -> list[int]:
    """Shards (indices into ``StoreSet.shards``) read by one (rank, worker) in an epoch, in reading order."""
    order = epoch_order(n_shards, seed, epoch)
    return list(order[rank::world][worker::workers])


def window_chunks(n_points: int, chunk: int, need: int) -> int:
    """How many consecutive whole chunks (of ``chunk`` of ``n_points`` samples, the last one possibly shorter) any
    window must span to hold at least ``need`` samples; all of them when ``need`` is the whole frame or more."""
    n_chunks = -(-n_points // chunk)
    k = -(-need // chunk) + (1 if n_points % chunk else 0)
    return min(n_chunks, max(1, k))


def frame_boxes(points: np.ndarray) -> np.ndarray:
    """(F, 2, 3) min and max corner of each frame's points (F, S, 3). Reduced over a contiguous (F, 3, S) copy:
    numpy's reduction over the middle axis of (F, S, 3) is about 50 times slower (bench/loader.py's paper rate)."""
    xyz_last = np.ascontiguousarray(points.transpose(0, 2, 1))
    return np.stack([xyz_last.min(axis=2), xyz_last.max(axis=2)], axis=1)


def part_weights(labels: np.ndarray, power: float) -> np.ndarray | None:
    """Sampling probabilities of surface samples that weight each one by its part's sample count to the power
    ``-power`` (``TrainConfig.part_balance``): 0 = uniform over the surface (None: the plain draw), 1 = every part
    (joint label) drawn equally often, whatever its area, so hands and feet get as many points as the torso."""
    if power == 0.0:
        return None
    # one power per label (a label with no samples is never gathered), then gathered: the same numbers as powering
    # every sample's count, 7x faster for 25k samples
    w = (np.maximum(np.bincount(labels), 1).astype(np.float64) ** -power)[labels]
    return w / w.sum()


def oriented_distance(points: np.ndarray, normals: np.ndarray, queries: np.ndarray,
                      band: float | None = None) -> np.ndarray:
    """Signed distance estimate of ``queries`` (Q, 3) from oriented surface samples: the distance to the nearest
    sample, negative where the query lies behind that sample's normal. Exact for a closed surface up to the sample
    spacing (the nearest surface point of an off-surface query lies along the normal there). With ``band`` (m),
    queries farther than that from every sample get NaN (no target): on partial observations (depth views, scans
    with holes) the sign far from the observed surface can be wrong."""
    from scipy.spatial import cKDTree

    # an unbalanced, uncompacted tree builds about 1.5x faster and finds the same nearest samples
    dist, idx = cKDTree(points, balanced_tree=False, compact_nodes=False).query(queries, k=1)
    behind = np.einsum("qi,qi->q", queries - points[idx], normals[idx].astype(np.float32)) < 0
    out = np.where(behind, -dist, dist).astype(np.float32)
    if band is not None:
        out[dist > band] = np.nan
    return out


class FrameStream(IterableDataset):
    """Batches of ``frames_per_step`` frames for one rank; use with ``DataLoader(batch_size=None)``.

    ``workers`` must equal the DataLoader's ``num_workers`` (0 and 1 both mean one stream). ``set_epoch(e, k)``
    makes the next iteration yield epoch ``e`` without its first ``k`` batches.
    """

    def __init__(self, paths: Sequence[Path], *, points_per_frame: int, eikonal_per_frame: int, frames_per_step: int,
                 near_sigma: float = 0.03, bbox_margin: float = 0.1, shuffle_buffer: int = 64, seed: int = 0,
                 rank: int = 0, world: int = 1, workers: int = 0, sdf_targets: bool = False,
                 sdf_band: float | None = None, sdf_points: int = SDF_POINTS, windowed: bool = True,
                 part_balance: float = 0.0) -> None:
        self.stores = StoreSet(paths)
        self.part_balance = part_balance
        self.sdf_targets, self.sdf_band, self.sdf_points, self.windowed = sdf_targets, sdf_band, sdf_points, windowed
        self.points_per_frame, self.eikonal_per_frame = points_per_frame, eikonal_per_frame
        self.frames_per_step, self.near_sigma, self.bbox_margin = frames_per_step, near_sigma, bbox_margin
        self.shuffle_buffer, self.seed, self.rank, self.world = shuffle_buffer, seed, rank, world
        self.workers = max(1, workers)
        self.epoch = 0
        self.skip = 0

    @classmethod
    def from_config(cls, paths: Sequence[Path], cfg: TrainConfig, *, workers: int | None = None, rank: int = 0,
                    world: int = 1, windowed: bool = True) -> FrameStream:
        """The stream a run of ``cfg`` trains on: its sample counts, sampling and targets; ``workers`` defaults to
        ``cfg.loader_workers``."""
        return cls(paths, points_per_frame=cfg.points_per_frame, eikonal_per_frame=cfg.eikonal_per_frame,
                   frames_per_step=cfg.frames_per_step, near_sigma=cfg.eikonal_near_sigma, bbox_margin=cfg.bbox_margin,
                   shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, rank=rank, world=world,
                   workers=cfg.loader_workers if workers is None else workers, sdf_targets=cfg.lambda_sdf > 0,
                   sdf_band=cfg.sdf_target_band, windowed=windowed, part_balance=cfg.part_balance)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def batches_per_worker(self, epoch: int | None = None) -> list[int]:
        """Number of batches each (logical) worker of this rank yields in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        out = []
        for w in range(self.workers):
            mine = assigned_shards(len(self.stores.shards), self.seed, epoch, self.rank, self.world, w,
                                   self.workers)
            frames = sum(self.stores.shards[i].frames for i in mine)
            out.append(-(-frames // self.frames_per_step))
        return out

    def __len__(self) -> int:
        return sum(self.batches_per_worker())

    def resume_plan(self) -> tuple[dict[int, int], int]:
        """(batches each logical worker skips, logical id of physical worker 0) after ``self.skip`` batches."""
        seq = round_robin(self.batches_per_worker())
        k = min(self.skip, len(seq))
        skips = {w: seq[:k].count(w) for w in range(self.workers)}
        return skips, (seq[k] if k < len(seq) else 0)

    def _window(self, store: Store, ref: ShardRef) -> tuple[int, int] | None:
        """(first sample, count) of the shard's surface window this epoch, whole chunks; None: whole frames."""
        n, chunk = store.dims.S, store.array("surface/labels").chunks[1]
        need = max(self.points_per_frame, self.sdf_points if self.sdf_targets else 0)
        k = window_chunks(n, chunk, need) if self.windowed and store.quantised else -(-n // chunk)
        n_chunks = -(-n // chunk)
        if k == n_chunks:
            return None
        first = int(np.random.default_rng([self.seed, self.epoch, ref.store, ref.shard, 0x3A7]).integers(n_chunks))
        return first * chunk, sum(min(chunk, n - c * chunk) for c in (np.arange(first, first + k) % n_chunks))

    def _read(self, store: Store, ref: ShardRef) -> dict[str, np.ndarray]:
        """The training arrays of one shard, the surface ones over this epoch's window, with ``box`` (F, 2, 3)."""
        window = self._window(store, ref)
        others = [n for n in TRAIN_ARRAYS if n not in SURFACE_ARRAYS]
        data = store.read_shard(ref.shard, others if window else TRAIN_ARRAYS)
        if window:
            data |= store.read_window(store.shard_slice(ref.shard), *window, SURFACE_ARRAYS)
        if store.quantised:
            data["box"] = store.read("surface/box", store.shard_slice(ref.shard))
        else:  # a whole frame: its box is its points'
            data["box"] = frame_boxes(data["surface/points"])
        return data

    def _frames(self, shard_ids: list[int], rng: np.random.Generator) -> Iterator[tuple[int, int, dict]]:
        """(store, frame, arrays) through the shuffle buffer."""
        buffer: list[tuple[int, int, dict]] = []
        for j, i in enumerate(shard_ids):
            for ahead in shard_ids[j:j + 1 + PREFETCH_SHARDS]:  # a remote store's next shards, fetched meanwhile
                r = self.stores.shards[ahead]
                self.stores.stores[r.store].prefetch([r.shard], (*TRAIN_ARRAYS, "surface/box"))
            ref = self.stores.shards[i]
            store = self.stores.stores[ref.store]
            data = self._read(store, ref)
            start = store.shard_slice(ref.shard).start
            check_finite_shard(store, start, {name: data[name] for name in FINITE_ARRAYS})
            for k in range(ref.frames):
                buffer.append((ref.store, start + k, {name: a[k] for name, a in data.items()}))
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))

    def _sample(self, store: int, frame: int, arrays: dict) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, store, frame])
        if not self.windowed:
            return self._sample_full(rng, store, frame, arrays)
        pts, nrm, lab = arrays["surface/points"], arrays["surface/normals"], arrays["surface/labels"]
        # 1. the step's samples, 2. eikonal points (uniform in the grown box, near the window's samples),
        # 3. the distance targets' samples: draws from the window, itself a uniform sample of the surface; 1 and the
        # near bases of 2 weighted by part when part_balance > 0 (the full-read reference path ignores it)
        weights = part_weights(lab, self.part_balance)
        if self.points_per_frame == len(pts) and weights is None:  # every sample (the loss takes them in any order)
            idx = slice(None)
        else:
            idx = rng.choice(len(pts), size=self.points_per_frame, replace=self.points_per_frame > len(pts), p=weights)
        n_uniform = self.eikonal_per_frame // 2
        box = arrays["box"].astype(np.float64)
        uniform = rng.uniform(box[0] - self.bbox_margin, box[1] + self.bbox_margin, size=(n_uniform, 3))
        n_near = self.eikonal_per_frame - n_uniform
        near = pts[rng.integers(0, len(pts), n_near) if weights is None else rng.choice(len(pts), n_near, p=weights)]
        near = near + rng.normal(0.0, self.near_sigma, size=near.shape)
        eikonal = np.concatenate([uniform, near]).astype(np.float32)
        extra = {}
        if self.sdf_targets:
            k = rng.choice(len(pts), size=self.sdf_points, replace=False) if len(pts) > self.sdf_points else slice(None)
            extra["eikonal_sdf"] = oriented_distance(pts[k], nrm[k], eikonal, self.sdf_band)
        return extra | self._record(store, frame, arrays, pts[idx], nrm[idx], lab[idx], eikonal)

    def _sample_full(self, rng: np.random.Generator, store: int, frame: int, arrays: dict) -> dict[str, np.ndarray]:
        """The full-read sampling (whole frames, every sample in the distance targets)."""
        pts, nrm, lab = arrays["surface/points"], arrays["surface/normals"], arrays["surface/labels"]
        idx = rng.choice(len(pts), size=self.points_per_frame, replace=self.points_per_frame > len(pts))
        n_uniform = self.eikonal_per_frame // 2
        lo, hi = pts.min(0) - self.bbox_margin, pts.max(0) + self.bbox_margin
        uniform = rng.uniform(lo, hi, size=(n_uniform, 3))
        near = pts[rng.integers(0, len(pts), self.eikonal_per_frame - n_uniform)]
        near = near + rng.normal(0.0, self.near_sigma, size=near.shape)
        eikonal = np.concatenate([uniform, near]).astype(np.float32)
        extra = {"eikonal_sdf": oriented_distance(pts, nrm, eikonal, self.sdf_band)} if self.sdf_targets else {}
        return extra | self._record(store, frame, arrays, pts[idx], nrm[idx], lab[idx], eikonal)

    def _record(self, store: int, frame: int, arrays: dict, p: np.ndarray, n: np.ndarray, lab: np.ndarray,
                eikonal: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "points": p.astype(np.float32),
            "normals": n.astype(np.float32),
            "labels": lab.astype(np.int64),
            "eikonal": eikonal,
            "joint_transforms": arrays["pose/joint_transforms"].astype(np.float32),
            "subject": np.int64(self.stores.subject_maps[store][int(arrays["frame/subject"])]),
            "frame": np.array([store, frame], dtype=np.int64),
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        physical, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers:
            raise ValueError(f"FrameStream built for {self.workers} workers runs in a loader with {workers}")
        skips, offset = self.resume_plan()
        worker = (physical + offset) % workers  # the logical stream this process plays
        shard_ids = assigned_shards(len(self.stores.shards), self.seed, self.epoch, self.rank, self.world, worker,
                                    workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 0xB0F])
        skip = skips[worker]
        batch: list[dict] = []
        index = 0

        def emit(items):
            out = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
            out["worker"] = torch.tensor(worker)
            out["index"] = torch.tensor(index)
            return out

        for store, frame, arrays in self._frames(shard_ids, rng):
            batch.append((store, frame, arrays))
            if len(batch) == self.frames_per_step:
                if index >= skip:
                    yield emit([self._sample(*b) for b in batch])
                index += 1
                batch = []
        if batch and index >= skip:
            yield emit([self._sample(*b) for b in batch])
