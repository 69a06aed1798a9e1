"""Procedural motions: smoothly interpolated random key poses of the 22 SMPL joints within joint limits.

Angles are intrinsic XYZ Euler angles (degrees) of each joint's local rotation, in the toolkit frame (Y up, the
body facing +Z, +X towards the subject's left). With that frame:
- a rotation about +X by a positive angle swings a limb hanging down (-Y) backwards, so hip flexion is negative
  and knee flexion positive; it bends the spine forwards;
- about +Z by a positive angle it swings a downward limb towards +X: abduction of the left leg, raising the left
  arm (Anny's rest pose is an A-pose, arms about 45 degrees below horizontal);
- about +Y by a negative angle it swings the left arm forwards.
Right-side limits mirror the left (the Y and Z ranges change sign). These limits keep poses plausible and
self-contact rare; they are not anatomical ground truth (``pipeline.embedded.families`` has the anatomical
ranges and the pose families that need them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hipnet.pipeline.core.kinematics import (
    matrix_to_quaternion,
    quaternion_to_matrix,
    slerp,
)
from hipnet.pipeline.core.skeleton import SMPL22

# (x range, y range, z range) in degrees for the centre line and the left side.
JOINT_LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    "pelvis": ((-10, 10), (0, 0), (-8, 8)),
    "L_hip": ((-75, 25), (-20, 20), (-10, 35)),
    "spine1": ((-10, 20), (-15, 15), (-10, 10)),
    "L_knee": ((0, 110), (-5, 5), (-3, 3)),
    "spine2": ((-10, 15), (-15, 15), (-8, 8)),
    "L_ankle": ((-25, 25), (-10, 10), (-10, 10)),
    "spine3": ((-10, 15), (-15, 15), (-8, 8)),
    "L_foot": ((-15, 15), (0, 0), (0, 0)),
    "neck": ((-20, 25), (-30, 30), (-15, 15)),
    "L_collar": ((-10, 10), (-10, 10), (-10, 15)),
    "head": ((-20, 20), (-35, 35), (-15, 15)),
    "L_shoulder": ((-40, 40), (-70, 30), (-20, 80)),
    "L_elbow": ((-10, 10), (-100, 0), (-10, 10)),
    "L_wrist": ((-20, 20), (-30, 30), (-40, 40)),
}


def joint_limits(table: dict[str, tuple[tuple[float, float], ...]] = JOINT_LIMITS_DEG) -> np.ndarray:
    """(22, 3, 2) lower and upper Euler limits in radians, in SMPL joint order, from a table of centre-line and
    left-side ranges in degrees (the right side mirrors the left)."""
    out = np.zeros((SMPL22.num_joints, 3, 2))
    for j, name in enumerate(SMPL22.names):
        if name.startswith("R_"):
            (xl, xh), (yl, yh), (zl, zh) = table["L_" + name[2:]]
            lim = ((xl, xh), (-yh, -yl), (-zh, -zl))
        else:
            lim = table[name]
        out[j] = np.radians(np.array(lim, dtype=np.float64))
    return out


def euler_xyz_to_matrix(angles: np.ndarray) -> np.ndarray:
    """Intrinsic XYZ Euler angles (..., 3) in radians -> rotation matrices (..., 3, 3): ``Rx @ Ry @ Rz``."""
    a = np.asarray(angles, dtype=np.float64)
    cx, cy, cz = np.cos(a[..., 0]), np.cos(a[..., 1]), np.cos(a[..., 2])
    sx, sy, sz = np.sin(a[..., 0]), np.sin(a[..., 1]), np.sin(a[..., 2])
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(*a.shape[:-1], 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*a.shape[:-1], 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(*a.shape[:-1], 3, 3)
    return rx @ ry @ rz


@dataclass(frozen=True)
class Motion:
    """A pose sequence: local joint rotations (T, 22, 3, 3) and a global translation (T, 3)."""

    local_rotations: np.ndarray
    translation: np.ndarray


def random_motion(
    rng: np.random.Generator, n_frames: int, key_every: int, amplitude: float = 1.0
) -> Motion:
    """Key poses drawn uniformly within ``amplitude`` x the joint limits every ``key_every`` frames,
    slerped with smoothstep timing. The root also gets a random heading (rotation about +Y) that drifts, and a
    random horizontal offset; canonicalisation removes both later."""
    if n_frames < 1 or key_every < 1:
        raise ValueError(f"need n_frames >= 1 and key_every >= 1, got {n_frames}, {key_every}")
    lim = joint_limits() * amplitude
    n_keys = (n_frames - 1) // key_every + 2
    euler = rng.uniform(lim[..., 0], lim[..., 1], size=(n_keys, *lim.shape[:2]))
    return interpolate_keys(rng, euler_xyz_to_matrix(euler), n_frames, key_every)


def interpolate_keys(rng: np.random.Generator, keys: np.ndarray, n_frames: int, key_every: int) -> Motion:
    """Key rotations (K, 22, 3, 3), K = (n_frames - 1) // key_every + 2, one every ``key_every`` frames, slerped
    with smoothstep timing; the root gets a random heading about +Y that drifts between keys and a random
    horizontal offset that drifts a little per frame."""
    n_keys = len(keys)
    if n_keys != (n_frames - 1) // key_every + 2:
        raise ValueError(f"{n_frames} frames with a key every {key_every} need {(n_frames - 1) // key_every + 2} "
                         f"keys, got {n_keys}")
    keys = matrix_to_quaternion(keys)  # K x 22 x 4
    heading0 = rng.uniform(0, 2 * np.pi)
    headings = heading0 + np.cumsum(rng.normal(0.0, np.radians(10.0), size=n_keys))
    offset = np.array([rng.uniform(-1, 1), 0.0, rng.uniform(-1, 1)])
    frames = []
    for t in range(n_frames):
        k, s = divmod(t, key_every)
        u = s / key_every
        u = u * u * (3 - 2 * u)  # smoothstep: zero velocity at keys
        frames.append(slerp(keys[k], keys[k + 1], np.array([u]))[0])
    rot = quaternion_to_matrix(np.stack(frames))  # T x 22 x 3 x 3
    t_key = np.arange(n_frames) / key_every
    heading = np.interp(t_key, np.arange(n_keys), headings)
    c, s = np.cos(heading), np.sin(heading)
    ry = np.zeros((n_frames, 3, 3))
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = c, s, 1.0, -s, c
    rot[:, 0] = ry @ rot[:, 0]
    drift = np.cumsum(rng.normal(0.0, 0.01, size=(n_frames, 3)) * np.array([1.0, 0.0, 1.0]), axis=0)
    return Motion(local_rotations=rot, translation=offset + drift)
