"""Reader for the embedded Anny dataset written by ``hipnet-data anny`` (layout in ``pipeline.embedded.generate``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.io import read_npz, read_yaml
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.readers.base import Reader, ReaderInfo, SequenceInfo, group_by_source
from hipnet.pipeline.sources.manifest import SPLITS


class AnnyReader(Reader):
    """The frames of a generated Anny dataset, in manifest order, for the chosen splits (the reader protocol of
    ``pipeline.readers.base``). ``meta`` is the folder's ``dataset.yaml``."""

    def __init__(self, root: Path, splits: Iterable[str] = SPLITS, manifest: str | Path | None = None,
                 body_models: Path | None = None, strict: bool = True) -> None:
        super().__init__(root, splits)
        marker = self.root / "dataset.yaml"
        if manifest is not None:
            raise ValueError(f"the anny reader reads {marker}, not a manifest ({manifest})")
        if not marker.exists():
            raise FileNotFoundError(
                f"{marker} not found: {self.root} is not a finished Anny dataset (run `hipnet-data anny --out DIR`)"
            )
        self.meta = read_yaml(marker)
        self._skeleton = Skeleton.from_attrs(self.meta["skeleton"])
        self.all_sequences = self.meta["sequences"]

    @property
    def name(self) -> str:
        return "anny"

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def skeleton(self) -> Skeleton:
        return self._skeleton

    @property
    def info(self) -> ReaderInfo:
        return ReaderInfo(self.dataset, self.name, str(self.root), None, tuple(s["name"] for s in self.meta["subjects"]),
                          tuple(SequenceInfo(s["subject"], s["name"], s["split"], s.get("frames"))
                                for s in self.all_sequences), self.meta.get("frames"))

    def subject_names(self) -> list[str]:
        used = {s["subject"] for s in self.sequences()}
        return [s["name"] for s in self.meta["subjects"] if s["name"] in used]

    def sequence_path(self, subject: str, sequence: str) -> Path:
        return self.root / "sequences" / subject / f"{sequence}.npz"

    def subject(self, name: str) -> Subject:
        key = ("subject", name)
        if key not in self._cache:
            v = self.meta["num_vertices"]
            a = read_npz(
                self.root / "subjects" / f"{name}.npz",
                {"rest_vertices": (v, 3), "rest_joints": (22, 3), "skinning_weights": (v, 22), "faces": (None, 3)},
            )
            self._cache[key] = Subject(name, a["rest_joints"], a["faces"], a["rest_vertices"], a["skinning_weights"])
        return self._cache[key]

    def read_sequence(self, subject: str, sequence: str) -> dict[str, np.ndarray]:
        v = self.meta["num_vertices"]
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
                try:
                    frame = Frame(r.subject, r.sequence, r.index, data["vertices"][r.index], subj.faces,
                                  data["joint_transforms"][r.index], subj.rest_joints, subj.skinning_weights)
                except ValueError as e:
                    yield r, ValueError(f"{r.source}: {e}")
                    continue
                yield r, frame
