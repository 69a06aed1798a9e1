"""Training stores from simulated depth sensors: every mesh frame of a source is rendered by a rig of
virtual depth cameras (``pipeline.stages.depth``: the rig, the sensor model, normals from the depth image) and
the back-projected oriented points go through the point-cloud path of ``preprocess`` (``pipeline.stages.
pointcloud``: samples drawn from the depth points, point-cloud heat labels from per-frame proxies). The store has
the schema's ``train`` and ``observed`` sections and records the sensor in its ``depth_sensor`` attribute.

Evaluation stays on the meshes: score a model trained on a depth store with the evaluation stores ``preprocess``
writes from the same source (same frame keys ``subject/sequence/index``), which hold the full ground truth.

``DepthReader`` wraps any reader of meshes (or ``MeshStoreReader``, the meshes of an existing store), so the
preprocess driver does the rest: shards in worker processes, one failure per bad frame naming its file, resumable
reruns that give the same bytes (the sensor noise is seeded per frame from ``(sensor.seed, dataset/frame)``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.readers.base import CheckReport, Listing, Reader, ReaderInfo
from hipnet.pipeline.readers.common import FRAME_ERRORS, frame_error
from hipnet.pipeline.readers.meshstore import MeshStoreReader
from hipnet.pipeline.runner.driver import SplitSummary, preprocess_split
from hipnet.pipeline.stages.canonical import canonicalise
from hipnet.pipeline.stages.depth import DepthSensor, DepthView, render_depth


def sensor_rng(sensor: DepthSensor, dataset: str, key: str) -> np.random.Generator:
    """The sensor's generator for one frame: a pure function of (sensor seed, dataset/subject/sequence/index)."""
    return np.random.default_rng(np.random.SeedSequence([sensor.seed, zlib.crc32(f"depth/{dataset}/{key}".encode())]))


def observe(canonical_vertices: np.ndarray, faces: np.ndarray, sensor: DepthSensor, rng: np.random.Generator,
            heading: np.ndarray) -> DepthView:
    """The rig's view of a mesh in its canonical frame, points and normals in that frame. ``heading`` (3, 3): the
    frame's rotation from canonical to world (``world_from_canonical``'s); a ``world`` rig keeps the world's
    orientation, so the mesh is turned by it under the rig and the view turned back."""
    turn = heading if sensor.rig == "world" else np.eye(3)
    view = render_depth(canonical_vertices @ turn.T, faces, sensor, rng)
    return view._replace(points=view.points @ turn, normals=view.normals @ turn)


def depth_frame(frame: Frame, sensor: DepthSensor, dataset: str) -> Frame:
    """The observation of a mesh frame by the rig: the depth points and image normals, in the frame's own
    coordinates (the rig is placed about the pelvis of its canonical frame, turned with the body or with the
    world, ``DepthSensor.rig``), with the frame's pose."""
    canon = canonicalise(frame.vertices, frame.joint_transforms)
    w = canon.world_from_canonical
    view = observe(canon.vertices, frame.faces, sensor, sensor_rng(sensor, dataset, frame.key), w[:3, :3])
    if not len(view.points):
        raise ValueError(f"frame {frame.key}: no depth pixel survived the sensor model (is the body inside the "
                         f"cameras' {sensor.fov_y_deg} degree view at {sensor.distance} m?)")
    return Frame(frame.subject, frame.sequence, frame.index, view.points @ w[:3, :3].T + w[:3, 3],
                 np.zeros((0, 3), dtype=np.int32), frame.joint_transforms, frame.rest_joints,
                 normals=view.normals @ w[:3, :3].T)


class DepthReader(Reader):
    """The frames of ``inner`` (a reader of meshes) as seen by ``sensor``: point clouds with normals from the depth
    image. Frames, subjects, splits and checks are ``inner``'s."""

    def __init__(self, inner: Reader, sensor: DepthSensor) -> None:
        if inner.observed:
            raise ValueError(f"{inner.root}: its frames are observations (point clouds or scans); depth cameras "
                             "render meshes")
        super().__init__(inner.root, inner.splits)
        self.inner, self.sensor = inner, sensor
        self.all_sequences = inner.all_sequences
        self.dropped = inner.dropped

    @property
    def dataset(self) -> str:
        return self.inner.dataset

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def skeleton(self) -> Skeleton:
        return self.inner.skeleton

    @property
    def info(self) -> ReaderInfo:
        return self.inner.info

    @property
    def body_models(self) -> Path | None:
        return self.inner.body_models

    @property
    def observed(self) -> bool:
        return True

    @property
    def depth_sensor(self) -> dict:
        return asdict(self.sensor)

    def frame_refs(self) -> list[FrameRef]:
        return self.inner.frame_refs()

    def list_frames(self) -> Listing:
        return self.inner.list_frames()

    def sequences(self) -> list[dict]:
        return self.inner.sequences()

    def subject(self, name: str) -> Subject:
        return Subject(name, self.inner.subject(name).rest_joints)

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        for ref, frame in self.inner.load(refs):
            if not isinstance(frame, Exception):
                try:
                    frame = depth_frame(frame, self.sensor, self.dataset)
                except FRAME_ERRORS as e:
                    frame = frame_error(ref.source, e)
            yield ref, frame

    def count_mismatches(self) -> list[tuple[str, str]]:
        return self.inner.count_mismatches()

    def excluded_refs(self) -> list[str]:
        return self.inner.excluded_refs()

    def check(self, read_files: bool = True) -> CheckReport:
        return self.inner.check(read_files)


def build_depth_store(source: Reader | Path, out: Path, sensor: DepthSensor | None = None,
                      cfg: PreprocessConfig | None = None, workers: int = 1, scheduler: str | None = None,
                      progress: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None,
                      exclude_failed: bool = False) -> SplitSummary:
    """Render every mesh frame of ``source`` with ``sensor`` and write ``out/<split>.zarr`` (a training store of
    depth points: sections ``train`` and ``observed``; attribute ``depth_sensor``).

    Args:
        source: a reader of meshes built for one split (``open_reader(dataset, root, (split,))``), or the path of a
            finished store holding meshes (an evaluation split, or one written with ``--eval-on-train``); the
            split is the reader's or the store's.
        sensor: the rig and sensor model (default ``DepthSensor()``: 4 views, 640 x 480).
        cfg: surface samples per frame, shard size and seed (default ``PreprocessConfig()``); labels are per frame.
        workers, scheduler, progress, on_start, exclude_failed: as ``pipeline.runner.driver.preprocess_split``.

    Returns the split's summary (frames written, failures with file and reason, whether the store is complete, and
    notes naming frames where a joint has no observed surface nearby). Rerunning resumes; a rerun with another
    sensor or config into the same ``out`` is refused.
    """
    reader = source if isinstance(source, Reader) else MeshStoreReader(Path(source))
    if len(reader.splits) != 1:
        raise ValueError(f"{reader.root}: build_depth_store takes a reader of one split, got {reader.splits}")
    return preprocess_split(DepthReader(reader, sensor or DepthSensor()), Path(out), cfg or PreprocessConfig(),
                            reader.splits[0], workers=workers, scheduler=scheduler, progress=progress,
                            on_start=on_start, exclude_failed=exclude_failed)
