"""The Frame: what every reader yields (docs/architecture.md section 3).

Geometry stays float64 from the reader to the store, which casts at write (``pipeline.runner.frame`` gives the arrays in
the store's dtypes); faces are int32. Frame and Subject hold their arrays in these dtypes whatever they are given,
and refuse NaN or inf in any of them (a ValueError naming the frame or subject and the array): the boundary every
reader's output crosses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hipnet.pipeline.core.checks import require_finite


def _f64(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float64)


def _i32(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.int32)


def _coerce(obj, **arrays: np.ndarray | None) -> None:
    """Set fields of a frozen dataclass (its own ``__post_init__`` only)."""
    for name, value in arrays.items():
        object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class Frame:
    """One posed mesh, or one observation (a point cloud, a raw scan), with its skeleton pose, in metres, Y up.

    An observation has no fixed topology (its subject has no rest mesh): ``vertices`` are the observed points or
    the scan's vertices, ``faces`` the scan's triangles or (0, 3) for a point cloud, and ``normals`` the input's
    per-point normals where it has them (a PLY with normals, a depth image); see ``pipeline.stages.pointcloud``.

    ``joint_transforms[j] = [G_j | J_j]``: G_j (3x3) is joint j's global rotation relative to its rest
    orientation (identity in the rest pose) and J_j its posed position; the skinning transform of joint j is
    ``[G_j | J_j - G_j @ rest_joints[j]]``.
    """

    subject: str
    sequence: str
    index: int
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int32
    joint_transforms: np.ndarray  # (J, 4, 4) float64
    rest_joints: np.ndarray  # (J, 3) float64
    skinning_weights: np.ndarray | None = None  # (V, J) float64, where the source has them
    normals: np.ndarray | None = None  # (V, 3) float64, an observation's own normals, where it has them

    def __post_init__(self) -> None:
        _coerce(self, vertices=_f64(self.vertices), faces=_i32(self.faces if np.size(self.faces) else np.zeros((0, 3))),
                joint_transforms=_f64(self.joint_transforms), rest_joints=_f64(self.rest_joints),
                skinning_weights=_f64(self.skinning_weights), normals=_f64(self.normals))
        v, f, jt, rj = self.vertices, self.faces, self.joint_transforms, self.rest_joints
        where = f"frame {self.subject}/{self.sequence}/{self.index}"
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"{where}: vertices must have shape (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"{where}: faces must have shape (F, 3), got {f.shape}")
        if jt.ndim != 3 or jt.shape[1:] != (4, 4):
            raise ValueError(f"{where}: joint_transforms must have shape (J, 4, 4), got {jt.shape}")
        if rj.shape != (jt.shape[0], 3):
            raise ValueError(f"{where}: rest_joints must have shape ({jt.shape[0]}, 3), got {rj.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(f"{where}: face indices out of range [0, {len(v)})")
        if self.skinning_weights is not None and self.skinning_weights.shape != (len(v), jt.shape[0]):
            raise ValueError(
                f"{where}: skinning_weights must have shape ({len(v)}, {jt.shape[0]}), "
                f"got {self.skinning_weights.shape}"
            )
        if self.normals is not None and self.normals.shape != v.shape:
            raise ValueError(f"{where}: normals must have the shape of vertices {v.shape}, got {self.normals.shape}")
        require_finite(where, vertices=v, joint_transforms=jt, rest_joints=rj, skinning_weights=self.skinning_weights,
                       normals=self.normals)

    @property
    def key(self) -> str:
        """Stable name of the frame, used to derive its seeds (never Python's salted ``hash``)."""
        return f"{self.subject}/{self.sequence}/{self.index}"


@dataclass(frozen=True)
class FrameRef:
    """Where one frame comes from, without loading it: cheap to list, pickle and send to a worker."""

    subject: str
    sequence: str
    index: int
    source: str  # the file the frame is read from, named in error messages

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.sequence}/{self.index}"


@dataclass(frozen=True)
class Subject:
    """A subject's rest pose. ``rest_vertices`` is None where the source has no rest mesh of a fixed topology
    (then geodesic proxies are chosen per frame and per-template labels are unavailable)."""

    name: str
    rest_joints: np.ndarray  # (J, 3) float64
    faces: np.ndarray | None = None  # (F, 3) int32
    rest_vertices: np.ndarray | None = None  # (V, 3) float64
    skinning_weights: np.ndarray | None = None  # (V, J) float64

    def __post_init__(self) -> None:
        _coerce(self, rest_joints=_f64(self.rest_joints), faces=_i32(self.faces),
                rest_vertices=_f64(self.rest_vertices), skinning_weights=_f64(self.skinning_weights))
        require_finite(f"subject {self.name}", rest_joints=self.rest_joints, rest_vertices=self.rest_vertices,
                       skinning_weights=self.skinning_weights)
        f, v = self.faces, self.rest_vertices
        if f is not None and v is not None and f.size and (f.ndim != 2 or f.shape[1] != 3 or f.min() < 0
                                                            or f.max() >= len(v)):
            raise ValueError(f"subject {self.name}: rest mesh faces ({f.shape}) must be (F, 3) indices into its "
                             f"{len(v)} vertices")
