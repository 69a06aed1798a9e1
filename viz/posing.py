"""The model side of the viewer: a pose edited joint by joint, a subject blended between two, and the model's surface
for them at an interactive resolution. Pure functions of arrays and a model; ``viz/viewer.py`` drives them.

A pose is edited as extra rotations (Euler XYZ, degrees) applied to each joint's rotation relative to its parent in
a start pose (a store frame, canonical frame); the bones take the lengths of the subject's rest joints (for a blend,
the rest joints lerped), as ``model.apps.retarget`` does, so with no extra rotation and the frame's own subject the
start pose comes back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from hipnet.model.apps import pose_bounds
from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import Mesh, extract_mesh
from hipnet.model.query import model_sdf
from hipnet.pipeline.core.kinematics import forward_kinematics

COARSE = 48  # the resolution of a mesh update while controls move (marching cubes from START)
FINE = 96  # the resolution a mesh is refined to once the controls rest
START = 12  # coarsest grid of the coarse-to-fine extraction: COARSE and FINE are START times a power of two


def local_rotations(joint_transforms: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """(J, 3, 3) float64: each joint's rotation relative to its parent (the root's: global)."""
    g = np.asarray(joint_transforms, dtype=np.float64)[:, :3, :3]
    local = g.copy()
    for j, p in enumerate(parents):
        if p >= 0:
            local[j] = g[p].T @ g[j]
    return local


def euler_matrices(degrees: np.ndarray) -> np.ndarray:
    """(J, 3, 3) rotations of Euler XYZ angles (J, 3) in degrees (extrinsic x, then y, then z)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", np.asarray(degrees, dtype=np.float64), degrees=True).as_matrix()


def edit_pose(start: np.ndarray, parents: Sequence[int], rest_joints: np.ndarray, extra_degrees: np.ndarray) -> np.ndarray:
    """Joint transforms (J, 4, 4) float32: ``start`` (J, 4, 4) with joint j's rotation relative to its parent
    followed by ``extra_degrees[j]`` (Euler XYZ), bones of ``rest_joints`` (J, 3), the root where it was. Rotating a
    joint moves its descendants only."""
    local = local_rotations(start, parents) @ euler_matrices(extra_degrees)
    root = np.asarray(start, dtype=np.float64)[0, :3, 3]
    rest = np.asarray(rest_joints, dtype=np.float64)
    return forward_kinematics(local, rest, parents, translation=root - rest[0]).astype(np.float32)


def title_position(joint_transforms: np.ndarray) -> np.ndarray:
    """(3,): above the highest joint, where a body's caption goes."""
    pos = np.asarray(joint_transforms)[:, :3, 3]
    return np.array([pos[:, 0].mean(), pos[:, 1].max() + 0.35, pos[:, 2].mean()], dtype=np.float32)


def blend(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, t: float):
    """(1 - t) a + t b: subject codes and rest joints are interpolated linearly, as ``hipnet-animate`` does."""
    return (1 - t) * a + t * b


class Surface(NamedTuple):
    mesh: Mesh
    resolution: int
    queries: int  # SDF evaluations spent
    seconds: float


def model_surface(model: HIPNet, joint_transforms: np.ndarray, code: torch.Tensor | None, resolution: int,
                  start: int = START, device: str = "cpu") -> Surface:
    """The model's zero level set for one pose and code by coarse-to-fine marching cubes over the pose's box
    (``model.apps.pose_bounds``), largest component, timed."""
    t0 = time.perf_counter()
    lo, hi = pose_bounds(joint_transforms)
    mesh, queries = extract_mesh(model_sdf(model, joint_transforms, code, device), lo, hi, resolution,
                                 start=min(start, resolution))
    return Surface(mesh, resolution, queries, time.perf_counter() - t0)


def rest_from_pose(joint_transforms: np.ndarray, parents) -> np.ndarray:
    """(J, 3) rest joints whose bones a pose has: rest_j - rest_p = G_p^T (J_j - J_p) (the convention of docs/architecture.md
    section 3), the root at the pose's root."""
    g = np.asarray(joint_transforms, dtype=np.float64)[:, :3, :3]
    pos = np.asarray(joint_transforms, dtype=np.float64)[:, :3, 3]
    rest = np.zeros_like(pos)
    rest[0] = pos[0]
    for j, p in enumerate(parents):
        if p >= 0:
            rest[j] = rest[p] + g[p].T @ (pos[j] - pos[p])
    return rest.astype(np.float32)
