"""Reader for the embedded Anny dataset written by ``hipnet-data anny`` (layout in ``pipeline.embedded.generate``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hipnet.pipeline.frames import Frame, FrameRef, Subject
from hipnet.pipeline.io import read_npz, read_yaml
from hipnet.pipeline.manifest import SPLITS
from hipnet.pipeline.readers.base import ReaderBase, group_by_source
from hipnet.pipeline.skeleton import Skeleton


class AnnyReader(ReaderBase):
    """The frames of a generated Anny dataset, in manifest order, for the chosen splits.

    Implements the reader protocol of ``pipeline.readers.base``: ``frame_refs()`` lists frames without loading
    meshes, ``load(refs)`` yields each frame or the error that stopped it, ``subject(name)`` gives the rest pose.
    """

    name = "anny"

    def __init__(self, root: Path, splits: Iterable[str] = SPLITS) -> None:
        self.root = Path(root)
        marker = self.root / "dataset.yaml"
        if not marker.exists():
            raise FileNotFoundError(
                f"{marker} not found: {self.root} is not a finished Anny dataset (run `hipnet-data anny --out DIR`)"
            )
        self.info = read_yaml(marker)
        splits = tuple(splits)
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown splits {sorted(unknown)}; choose from {SPLITS}")
        self.splits = splits
        self.skeleton = Skeleton.from_attrs(self.info["skeleton"])
        self.all_sequences = self.info["sequences"]
        self._cache: dict[str, dict[str, np.ndarray]] = {}  # subject arrays

    @property
    def dataset(self) -> str:
        return self.info["dataset"]

    def subject_names(self) -> list[str]:
        used = {s["subject"] for s in self.sequences()}
        return [s["name"] for s in self.info["subjects"] if s["name"] in used]

    def sequence_path(self, subject: str, sequence: str) -> Path:
        return self.root / "sequences" / subject / f"{sequence}.npz"

    def _arrays(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._cache:
            v = self.info["num_vertices"]
            self._cache[name] = read_npz(
                self.root / "subjects" / f"{name}.npz",
                {"rest_vertices": (v, 3), "rest_joints": (22, 3), "skinning_weights": (v, 22), "faces": (None, 3)},
            )
        return self._cache[name]

    def subject(self, name: str) -> Subject:
        a = self._arrays(name)
        return Subject(name, a["rest_joints"], a["faces"], a["rest_vertices"], a["skinning_weights"])

    def read_sequence(self, subject: str, sequence: str) -> dict[str, np.ndarray]:
        v = self.info["num_vertices"]
        shapes = {"vertices": (None, v, 3), "joint_transforms": (None, 22, 4, 4)}
        return read_npz(self.sequence_path(subject, sequence), shapes)

    def frame_refs(self) -> list[FrameRef]:
        refs = []
        for seq in self.sequences():
            path = self.sequence_path(seq["subject"], seq["name"])
            length = seq.get("frames")
            if length is None:  # datasets written before the counts were recorded in dataset.yaml
                length = len(read_npz(path, {"joint_transforms": (None, 22, 4, 4)})["joint_transforms"])
            refs += [FrameRef(seq["subject"], seq["name"], i, str(path)) for i in range(length)]
        return refs

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        for group in group_by_source(refs):
            ref0 = group[0]
            try:
                subj = self.subject(ref0.subject)
                data = self.read_sequence(ref0.subject, ref0.sequence)
            except (OSError, ValueError) as e:
                yield from ((r, e) for r in group)
                continue
            for r in group:
                if r.index >= len(data["vertices"]):
                    yield r, ValueError(f"{r.source}: has {len(data['vertices'])} frames, frame {r.index} requested")
                    continue
                yield r, Frame(
                    subject=r.subject,
                    sequence=r.sequence,
                    index=r.index,
                    vertices=data["vertices"][r.index],
                    faces=subj.faces,
                    joint_transforms=data["joint_transforms"][r.index],
                    rest_joints=subj.rest_joints,
                    skinning_weights=subj.skinning_weights,
                )

    def __iter__(self) -> Iterator[Frame]:
        for _, frame in self.load(self.frame_refs()):
            if isinstance(frame, Exception):
                raise frame
            yield frame
