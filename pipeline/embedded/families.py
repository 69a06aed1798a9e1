"""Pose families: the poses real people make (sitting, squatting, kneeling, lying, bending forward, arms crossed,
hands touching the body), as procedural motions for the embedded dataset.

Each family is a few key-pose templates; a template gives every joint an intrinsic XYZ Euler range (degrees, the
frame and signs of ``pipeline.embedded.motions``: hip flexion is negative X, knee flexion and forward spine
flexion positive X, a forward arm raise negative X on the shoulder, elbow flexion negative Y on the left). A
sequence picks one template of its family and draws a fresh key pose within its ranges every ``key_every`` frames,
so the pose varies between keys; the first and the last key are each, with probability 1/2, a relaxed standing
pose instead, so sequences also get down into and up out of the family pose. Keys are slerped with smoothstep
timing and the root gets a random heading and offset, as in ``random_motion``; the body is then lowered or raised
so its lowest joint stays at the rest pose's lowest-joint height (feet, knees or back on the floor).

Every template lies within ``ANATOMICAL_LIMITS_DEG``: the ranges these poses need (deep hip and knee flexion for
squatting, the trunk's forward flexion, shoulder adduction across the chest, the root lying down). The random
family keeps its own narrower ``JOINT_LIMITS_DEG``, so the default dataset is unchanged. The arm templates of
``cross_arms`` and ``touch`` were found by fitting hand and elbow targets (top and side of the head, the waist
above the hip, the chest, the opposite elbow) on Anny's default body; subjects of other proportions land close.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hipnet.pipeline.core.kinematics import forward_kinematics
from hipnet.pipeline.core.skeleton import SMPL22
from hipnet.pipeline.embedded.motions import (
    Motion,
    euler_xyz_to_matrix,
    interpolate_keys,
    joint_limits,
    random_motion,
)

Range = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]

# Anatomical ranges of motion (degrees; centre line and left side, the right mirrors), from the usual clinical
# figures (hip flexion about 120-130 with the knee bent, knee flexion about 140-150, trunk flexion about 80-90
# shared by the three spine joints, shoulder flexion about 170 and horizontal adduction across the chest, elbow
# flexion about 145). Each range contains JOINT_LIMITS_DEG's. Two entries are not anatomy: the pelvis is the root,
# its range is the body's orientation (upright, or lying on the back, front or either side); the rig's elbow frame
# is the rest (world-aligned) frame, not the elbow's hinge, so its X and Z ranges absorb the hinge's tilt.
ANATOMICAL_LIMITS_DEG: dict[str, Range] = {
    "pelvis": ((-100, 100), (-100, 100), (-15, 15)),
    "L_hip": ((-130, 30), (-40, 40), (-30, 50)),
    "spine1": ((-15, 35), (-25, 25), (-20, 20)),
    "L_knee": ((0, 150), (-10, 10), (-5, 5)),
    "spine2": ((-15, 35), (-25, 25), (-20, 20)),
    "L_ankle": ((-40, 50), (-20, 20), (-20, 20)),
    "spine3": ((-15, 35), (-25, 25), (-20, 20)),
    "L_foot": ((-30, 30), (0, 0), (0, 0)),
    "neck": ((-40, 45), (-60, 60), (-30, 30)),
    "L_collar": ((-15, 15), (-15, 15), (-15, 25)),
    "head": ((-30, 30), (-45, 45), (-25, 25)),
    "L_shoulder": ((-170, 70), (-110, 45), (-135, 135)),
    "L_elbow": ((-25, 25), (-150, 0), (-25, 25)),
    "L_wrist": ((-70, 70), (-40, 40), (-80, 80)),
}

def anatomical_limits() -> np.ndarray:
    """(22, 3, 2) lower and upper anatomical Euler limits in radians, in SMPL joint order."""
    return joint_limits(ANATOMICAL_LIMITS_DEG)


def _mirror(r: Range) -> Range:
    """A left-side range as the right side's (the Y and Z ranges change sign)."""
    x, (yl, yh), (zl, zh) = r
    return (x, (-yh, -yl), (-zh, -zl))


def _other_side(name: str) -> str:
    return {"L_": "R_", "R_": "L_"}.get(name[:2], "") + name[2:] if name[:2] in ("L_", "R_") else name


@dataclass(frozen=True)
class KeyPose:
    """A key-pose template: a name and an Euler range (degrees) for each of the 22 joints."""

    name: str
    ranges: Mapping[str, Range]

    def bounds(self) -> np.ndarray:
        """(22, 3, 2) lower and upper Euler angles in radians, in SMPL joint order."""
        return np.radians(np.array([self.ranges[n] for n in SMPL22.names], dtype=np.float64))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """(22, 3) Euler angles in radians drawn uniformly within the ranges."""
        b = self.bounds()
        return rng.uniform(b[..., 0], b[..., 1])

    def swapped(self, name: str) -> KeyPose:
        """The mirror image: each side's ranges moved to the other side (centre-line Y and Z change sign)."""
        out = {}
        for joint, r in self.ranges.items():
            out[_other_side(joint)] = _mirror(r)
        return KeyPose(name, out)


# A relaxed standing pose: the start and end of sequences, and every joint a template does not name.
_STAND_SIDES: dict[str, Range] = {
    "pelvis": ((-5, 5), (0, 0), (-4, 4)),
    "L_hip": ((-10, 8), (-8, 8), (-2, 8)),
    "spine1": ((-4, 6), (-6, 6), (-4, 4)),
    "L_knee": ((0, 12), (-3, 3), (-2, 2)),
    "spine2": ((-4, 6), (-6, 6), (-4, 4)),
    "L_ankle": ((-8, 8), (-5, 5), (-5, 5)),
    "spine3": ((-4, 6), (-6, 6), (-4, 4)),
    "L_foot": ((-5, 5), (0, 0), (0, 0)),
    "neck": ((-8, 12), (-15, 15), (-6, 6)),
    "L_collar": ((-5, 5), (-5, 5), (-5, 5)),
    "head": ((-8, 12), (-20, 20), (-6, 6)),
    "L_shoulder": ((-15, 15), (-15, 10), (-38, -18)),
    "L_elbow": ((-5, 5), (-30, 0), (-5, 5)),
    "L_wrist": ((-15, 15), (-15, 15), (-15, 15)),
}


def _both_sides(table: Mapping[str, Range]) -> dict[str, Range]:
    """Centre-line and left entries -> the same plus the mirrored right entries."""
    out = dict(table)
    out.update({"R_" + k[2:]: _mirror(v) for k, v in table.items() if k.startswith("L_")})
    return out


STAND = KeyPose("stand", _both_sides(_STAND_SIDES))


def _sym(name: str, **ranges: Range) -> KeyPose:
    """A symmetric template: the named centre-line and left joints (the right mirrors), the rest standing."""
    return KeyPose(name, {**STAND.ranges, **_both_sides(ranges)})


def _one(name: str, **ranges: Range) -> KeyPose:
    """A one-sided template: only the named joints (left or right, as given) differ from standing."""
    return KeyPose(name, {**STAND.ranges, **ranges})


_SPINE_FWD = {"spine1": ((5, 15), (-6, 6), (-4, 4)), "spine2": ((5, 15), (-6, 6), (-4, 4)),
              "spine3": ((5, 15), (-6, 6), (-4, 4))}
_KNEEL_LEFT = _one(
    "kneel_left",
    L_hip=((-10, 5), (-8, 8), (-2, 8)), L_knee=((88, 110), (-3, 3), (-2, 2)), L_ankle=((-10, 30), (-5, 5), (-5, 5)),
    R_hip=((-100, -78), (-8, 8), (-8, 2)), R_knee=((80, 100), (-3, 3), (-2, 2)), R_ankle=((-15, 10), (-5, 5), (-5, 5)),
)
_CROSS_LEFT_OVER = _one(
    "cross_left_over",
    L_shoulder=((-30, -22), (-31, -23), (-47, -39)), L_elbow=((-3, 3), (-98, -88), (-3, 3)),
    R_shoulder=((-25, -17), (37, 45), (39, 47)), R_elbow=((-3, 3), (70, 80), (-3, 3)),
)
_HEAD_TOP = {"L_shoulder": ((-74, -62), (-63, -51), (56, 68)), "L_elbow": ((-25, -18), (-45, -33), (18, 25))}
_HEAD_SIDE = {"L_shoulder": ((-120, -108), (-23, -11), (-6, 6)), "L_elbow": ((-25, -18), (-85, -73), (18, 25))}
_HIP = {"L_shoulder": ((51, 59), (-14, -6), (15, 23)), "L_elbow": ((-25, -18), (-84, -76), (10, 18))}
_CHEST = {"L_shoulder": ((-25, -13), (-16, -4), (-38, -26)), "L_elbow": ((-25, -18), (-114, -102), (18, 25))}
_LIE_LIMBS = {
    "L_hip": ((-50, 8), (-15, 15), (-5, 25)), "L_knee": ((0, 95), (-3, 3), (-2, 2)),
    "L_shoulder": ((-60, 30), (-30, 15), (-40, 90)), "L_elbow": ((-5, 5), (-90, 0), (-5, 5)),
    "neck": ((-10, 25), (-30, 30), (-10, 10)),
}

FAMILIES: dict[str, tuple[KeyPose, ...]] = {
    "sit": (
        _sym("sit_upright", L_hip=((-100, -78), (-10, 10), (0, 15)), L_knee=((75, 105), (-3, 3), (-2, 2)),
             L_ankle=((-15, 15), (-5, 5), (-5, 5)), L_shoulder=((-45, -25), (-15, 5), (-38, -20)),
             L_elbow=((-5, 5), (-60, -30), (-5, 5))),
        _sym("sit_leaning", L_hip=((-110, -90), (-10, 10), (0, 15)), L_knee=((80, 110), (-3, 3), (-2, 2)),
             L_ankle=((-15, 15), (-5, 5), (-5, 5)), **{k: ((8, 18), y, z) for k, (_, y, z) in _SPINE_FWD.items()},
             L_shoulder=((-60, -35), (-15, 5), (-38, -20)), L_elbow=((-5, 5), (-90, -50), (-5, 5))),
    ),
    "squat": (
        _sym("squat_deep", L_hip=((-125, -108), (-15, 15), (5, 25)), L_knee=((125, 145), (-3, 3), (-2, 2)),
             L_ankle=((-35, -15), (-5, 5), (-5, 5)), **_SPINE_FWD,
             L_shoulder=((-80, -50), (-15, 5), (-30, -10)), L_elbow=((-5, 5), (-40, -10), (-5, 5))),
        _sym("squat_half", L_hip=((-95, -75), (-10, 10), (0, 15)), L_knee=((85, 110), (-3, 3), (-2, 2)),
             L_ankle=((-25, -10), (-5, 5), (-5, 5)), **_SPINE_FWD,
             L_shoulder=((-90, -60), (-15, 5), (-30, -10)), L_elbow=((-5, 5), (-30, 0), (-5, 5))),
    ),
    "kneel": (
        _sym("kneel_both", L_hip=((-10, 5), (-8, 8), (-2, 8)), L_knee=((88, 110), (-3, 3), (-2, 2)),
             L_ankle=((-10, 30), (-5, 5), (-5, 5))),
        _KNEEL_LEFT,
        _KNEEL_LEFT.swapped("kneel_right"),
    ),
    "lie": (
        _sym("lie_back", pelvis=((-95, -85), (-5, 5), (-5, 5)), **_LIE_LIMBS),
        _sym("lie_front", pelvis=((85, 95), (-5, 5), (-5, 5)), **_LIE_LIMBS),
        _sym("lie_side_left", pelvis=((-95, -85), (80, 100), (-5, 5)), **_LIE_LIMBS),
        _sym("lie_side_right", pelvis=((-95, -85), (-100, -80), (-5, 5)), **_LIE_LIMBS),
    ),
    "bend": (
        _sym("bend_forward", pelvis=((30, 45), (0, 0), (-4, 4)), L_hip=((-45, -28), (-8, 8), (-2, 8)),
             L_knee=((0, 15), (-3, 3), (-2, 2)), **{k: ((15, 25), y, z) for k, (_, y, z) in _SPINE_FWD.items()},
             neck=((-10, 10), (-15, 15), (-6, 6)), head=((-20, 5), (-20, 20), (-6, 6)),
             L_shoulder=((-110, -75), (-10, 10), (-40, -25)), L_elbow=((-5, 5), (-20, 0), (-5, 5))),
    ),
    "cross_arms": (_CROSS_LEFT_OVER, _CROSS_LEFT_OVER.swapped("cross_right_over")),
    "touch": (
        _sym("touch_head_both", **_HEAD_TOP),
        _one("touch_head_left", **_HEAD_SIDE),
        _one("touch_head_left", **_HEAD_SIDE).swapped("touch_head_right"),
        _sym("touch_hips_both", **_HIP),
        _one("touch_hip_left", **_HIP),
        _one("touch_chest_left", **_CHEST),
        _one("touch_chest_left", **_CHEST).swapped("touch_chest_right"),
    ),
}
# The family of the random key poses within JOINT_LIMITS_DEG (the default dataset's motions).
RANDOM = "random"
ALL_FAMILIES: tuple[str, ...] = (RANDOM, *FAMILIES)


def family_motion(
    rng: np.random.Generator, family: str, n_frames: int, key_every: int, rest_joints: np.ndarray | None = None
) -> Motion:
    """A sequence of ``family``: one template, a fresh key pose within it every ``key_every`` frames, the first
    and last keys each standing with probability 1/2. ``random`` is ``random_motion`` (same draws, same bytes).
    With ``rest_joints`` (22, 3) the root is moved vertically so the lowest joint keeps its rest height."""
    if family == RANDOM:
        return random_motion(rng, n_frames, key_every)
    if family not in FAMILIES:
        raise ValueError(f"unknown pose family {family!r}; choose from {ALL_FAMILIES}")
    if n_frames < 1 or key_every < 1:
        raise ValueError(f"need n_frames >= 1 and key_every >= 1, got {n_frames}, {key_every}")
    templates = FAMILIES[family]
    template = templates[rng.integers(len(templates))]
    n_keys = (n_frames - 1) // key_every + 2
    stand_first, stand_last = rng.random(2) < 0.5
    if n_keys == 2 and stand_first and stand_last:
        stand_last = False
    poses = [template] * n_keys
    if stand_first:
        poses[0] = STAND
    if stand_last:
        poses[-1] = STAND
    euler = np.stack([p.sample(rng) for p in poses])  # K x 22 x 3
    motion = interpolate_keys(rng, euler_xyz_to_matrix(euler), n_frames, key_every)
    if rest_joints is None:
        return motion
    joints = forward_kinematics(motion.local_rotations, rest_joints, SMPL22.parents)[..., :3, 3]  # T x 22 x 3
    translation = motion.translation.copy()
    translation[:, 1] += np.asarray(rest_joints)[:, 1].min() - joints[..., 1].min(axis=1)
    return Motion(motion.local_rotations, translation)
