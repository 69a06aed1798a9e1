"""Canonicalisation (docs/architecture.md section 3, seed 000 section 3.2): pelvis to the origin, heading removed.

Pure function of (vertices, joint_transforms). The heading is the rotation about +Y of the pelvis frame; it is read
from whichever pelvis axis (forward +Z or lateral +X) lies closer to the ground plane, so it stays defined when the
body lies down or turns upside down.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Canonical(NamedTuple):
    vertices: np.ndarray  # (V, 3) float64, canonical frame
    joint_transforms: np.ndarray  # (J, 4, 4) float64, canonical frame, convention of section 3
    world_from_canonical: np.ndarray  # (4, 4) float64: x_world = R x_canonical + t


def heading(root_rotation: np.ndarray) -> float:
    """Yaw (radians, about +Y) of a root rotation (3, 3): 0 when the body faces +Z."""
    fwd, lat = root_rotation[:, 2], root_rotation[:, 0]
    if np.hypot(fwd[0], fwd[2]) >= np.hypot(lat[0], lat[2]):
        return float(np.arctan2(fwd[0], fwd[2]))
    return float(np.arctan2(-lat[2], lat[0]))


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def canonicalise(vertices: np.ndarray, joint_transforms: np.ndarray) -> Canonical:
    """Move a frame so its pelvis (joint 0) is at the origin and faces +Z (heading removed).

    Args:
        vertices: (V, 3) posed vertices.
        joint_transforms: (J, 4, 4) ``[G_j | J_j]``.
    """
    jt = np.asarray(joint_transforms, dtype=np.float64)
    r = yaw_matrix(heading(jt[0, :3, :3]))
    t = jt[0, :3, 3].copy()
    canon_jt = jt.copy()
    canon_jt[:, :3, :3] = r.T @ jt[:, :3, :3]
    canon_jt[:, :3, 3] = (jt[:, :3, 3] - t) @ r
    world = np.eye(4)
    world[:3, :3], world[:3, 3] = r, t
    canon_v = (np.asarray(vertices, dtype=np.float64) - t) @ r
    return Canonical(canon_v, canon_jt, world)


def to_world(points: np.ndarray, world_from_canonical: np.ndarray) -> np.ndarray:
    """Map canonical points (N, 3) back to the source frame."""
    w = np.asarray(world_from_canonical, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ w[:3, :3].T + w[:3, 3]
