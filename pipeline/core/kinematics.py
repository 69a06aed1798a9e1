"""Forward kinematics and linear blend skinning in the SMPL convention (numpy, float64 inside).

Conventions (docs/architecture.md section 3): every joint's rest orientation is the identity, local rotations compose
down the tree, ``G_j = G_parent(j) @ R_j`` and ``J_j = G_parent(j) @ (J_rest_j - J_rest_parent(j)) + J_parent(j)``
(smplx ``batch_rigid_transform``). A global translation ``t`` is added to every posed joint.
"""

from __future__ import annotations

import numpy as np


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues' formula. ``aa`` (..., 3) axis * angle in radians -> rotation matrices (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = np.divide(aa, theta, out=np.zeros_like(aa), where=theta > 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + s * k + (1.0 - c) * (k @ k)


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z) with w >= 0."""
    from scipy.spatial.transform import Rotation

    r = np.asarray(r, dtype=np.float64)
    q = Rotation.from_matrix(r.reshape(-1, 3, 3)).as_quat(scalar_first=True)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.reshape(*r.shape[:-2], 4)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) as (w, x, y, z) -> rotation matrices (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between unit quaternions ``q0``, ``q1`` (..., 4) at fractions ``t`` (T,).

    Returns (T, ..., 4). Takes the short way round.
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    omega = np.arccos(np.clip(dot, -1.0, 1.0))
    so = np.sin(omega)
    t = np.asarray(t, dtype=np.float64).reshape(-1, *([1] * q0.ndim))
    linear = so < 1e-8
    w0 = np.where(linear, 1.0 - t, np.sin((1.0 - t) * omega) / np.where(linear, 1.0, so))
    w1 = np.where(linear, t, np.sin(t * omega) / np.where(linear, 1.0, so))
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def forward_kinematics(
    local_rotations: np.ndarray, rest_joints: np.ndarray, parents, translation: np.ndarray | None = None
) -> np.ndarray:
    """Joint transforms in the SMPL convention.

    Args:
        local_rotations: (..., J, 3, 3) rotation of each joint relative to its parent (root: global).
        rest_joints: (J, 3) joint positions in the rest pose.
        parents: length-J sequence, parents[0] == -1, parents[j] < j.
        translation: optional (..., 3) added to every posed joint.

    Returns:
        (..., J, 4, 4) float64: ``[G_j | J_j]`` with G_j the global rotation and J_j the posed position.
    """
    local_rotations = np.asarray(local_rotations, dtype=np.float64)
    rest_joints = np.asarray(rest_joints, dtype=np.float64)
    batch = local_rotations.shape[:-3]
    n = len(parents)
    g = np.empty(local_rotations.shape)
    pos = np.empty((*batch, n, 3))
    g[..., 0, :, :] = local_rotations[..., 0, :, :]
    pos[..., 0, :] = rest_joints[0]
    for j in range(1, n):
        p = parents[j]
        g[..., j, :, :] = g[..., p, :, :] @ local_rotations[..., j, :, :]
        pos[..., j, :] = pos[..., p, :] + np.einsum("...ab,b->...a", g[..., p, :, :], rest_joints[j] - rest_joints[p])
    if translation is not None:
        pos = pos + np.asarray(translation, dtype=np.float64)[..., None, :]
    out = np.zeros((*batch, n, 4, 4))
    out[..., :3, :3] = g
    out[..., :3, 3] = pos
    out[..., 3, 3] = 1.0
    return out


def skinning_transforms(joint_transforms: np.ndarray, rest_joints: np.ndarray) -> np.ndarray:
    """``[G_j | J_j - G_j J_rest_j]`` (..., J, 4, 4): maps rest-pose points to posed points for joint j."""
    a = np.array(joint_transforms, dtype=np.float64)
    a[..., :3, 3] -= np.einsum("...jab,jb->...ja", a[..., :3, :3], np.asarray(rest_joints, dtype=np.float64))
    return a


def linear_blend_skinning(
    rest_vertices: np.ndarray, weights: np.ndarray, joint_transforms: np.ndarray, rest_joints: np.ndarray
) -> np.ndarray:
    """Pose rest vertices (V, 3) with skinning weights (V, J) and joint transforms (..., J, 4, 4).

    Returns posed vertices (..., V, 3) float64.
    """
    a = skinning_transforms(joint_transforms, rest_joints)[..., :3, :]  # ... x J x 3 x 4
    w = np.asarray(weights, dtype=np.float64)
    per_vertex = np.matmul(w, a.reshape(*a.shape[:-2], 12)).reshape(*a.shape[:-3], len(w), 3, 4)  # ... x V x 3 x 4
    v = np.asarray(rest_vertices, dtype=np.float64)
    return (per_vertex[..., :3] * v[:, None, :]).sum(-1) + per_vertex[..., 3]
