"""Skeletons: joint names and parents, depth order, children.

The skeleton is data, not code: it is written into every store and the model reads it from there.
``SMPL22`` is the 22-joint SMPL body skeleton (no hand joints) that the human datasets share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    """A kinematic tree. ``parents[j] < j`` for every non-root joint; the root has parent -1."""

    names: tuple[str, ...]
    parents: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.parents):
            raise ValueError(f"skeleton has {len(self.names)} names but {len(self.parents)} parents")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"skeleton joint names are not unique: {self.names}")
        for j, p in enumerate(self.parents):
            if j == 0 and p != -1:
                raise ValueError(f"joint 0 ({self.names[0]}) must be the root (parent -1), got {p}")
            if j > 0 and not 0 <= p < j:
                raise ValueError(f"joint {j} ({self.names[j]}) has parent {p}; parents must precede children")

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def depths(self) -> np.ndarray:
        """Array (J,) of tree depths; the root has depth 0."""
        depth = np.zeros(self.num_joints, dtype=np.int64)
        for j in range(1, self.num_joints):
            depth[j] = depth[self.parents[j]] + 1
        return depth

    def levels(self) -> list[np.ndarray]:
        """Joint indices grouped by depth, shallowest first: the order in which a level can run at once."""
        depth = self.depths()
        return [np.flatnonzero(depth == d) for d in range(int(depth.max()) + 1)]

    def children(self, j: int) -> list[int]:
        return [c for c, p in enumerate(self.parents) if p == j]

    def descendants(self, j: int) -> list[int]:
        """All joints below ``j`` (not including ``j``), in index order."""
        out: list[int] = []
        for c in range(j + 1, self.num_joints):
            p = self.parents[c]
            while p > j:
                p = self.parents[p]
            if p == j:
                out.append(c)
        return out

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"joint {name!r} is not in the skeleton {self.names}") from None

    def to_attrs(self) -> dict:
        return {"names": list(self.names), "parents": list(self.parents)}

    @classmethod
    def from_attrs(cls, attrs: dict) -> Skeleton:
        return cls(tuple(attrs["names"]), tuple(int(p) for p in attrs["parents"]))


SMPL22 = Skeleton(
    names=(
        "pelvis", "L_hip", "R_hip", "spine1", "L_knee", "R_knee", "spine2", "L_ankle", "R_ankle", "spine3",
        "L_foot", "R_foot", "neck", "L_collar", "R_collar", "head", "L_shoulder", "R_shoulder", "L_elbow",
        "R_elbow", "L_wrist", "R_wrist",
    ),
    parents=(-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19),
)
