"""Reader for the embedded Anny dataset written by ``hipnet-data anny`` (layout in ``pipeline.embedded.generate``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hipnet.pipeline.frames import Frame
from hipnet.pipeline.io import read_npz, read_yaml
from hipnet.pipeline.manifest import SPLITS


class AnnyReader:
    """Yields the frames of a generated Anny dataset, in manifest order, for the chosen splits."""

    name = "anny"

    def __init__(self, root: Path, splits: tuple[str, ...] = SPLITS) -> None:
        self.root = Path(root)
        marker = self.root / "dataset.yaml"
        if not marker.exists():
            raise FileNotFoundError(
                f"{marker} not found: {self.root} is not a finished Anny dataset (run `hipnet-data anny --out DIR`)"
            )
        self.info = read_yaml(marker)
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown splits {sorted(unknown)}; choose from {SPLITS}")
        self.splits = tuple(splits)
        self._subject_cache: dict[str, dict[str, np.ndarray]] = {}

    def sequences(self) -> list[dict]:
        return [s for s in self.info["sequences"] if s["split"] in self.splits]

    def subject(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._subject_cache:
            v = self.info["num_vertices"]
            self._subject_cache[name] = read_npz(
                self.root / "subjects" / f"{name}.npz",
                {"rest_vertices": (v, 3), "rest_joints": (22, 3), "skinning_weights": (v, 22), "faces": (None, 3)},
            )
        return self._subject_cache[name]

    def read_sequence(self, subject: str, sequence: str) -> dict[str, np.ndarray]:
        v = self.info["num_vertices"]
        return read_npz(
            self.root / "sequences" / subject / f"{sequence}.npz",
            {"vertices": (None, v, 3), "joint_transforms": (None, 22, 4, 4)},
        )

    def __iter__(self) -> Iterator[Frame]:
        for seq in self.sequences():
            subj = self.subject(seq["subject"])
            data = self.read_sequence(seq["subject"], seq["name"])
            for i in range(len(data["vertices"])):
                yield Frame(
                    subject=seq["subject"],
                    sequence=seq["name"],
                    index=i,
                    vertices=data["vertices"][i],
                    faces=subj["faces"],
                    joint_transforms=data["joint_transforms"][i],
                    rest_joints=subj["rest_joints"],
                    skinning_weights=subj["skinning_weights"],
                )
