"""DeepMimic retargeting on clips written in the exact published format."""

import json

import numpy as np
import pytest

from hipnet.pipeline.core.skeleton import SMPL22
from hipnet.pipeline.embedded.deepmimic import CLIPS, deepmimic_manifest, read_clip, retarget
from hipnet.pipeline.embedded.generate import pose_sequence
from hipnet.pipeline.sources.manifest import check_split, load_manifest

IDENTITY_Q = [1.0, 0.0, 0.0, 0.0]


def clip_frame(root=(0.0, 0.85, 0.0), root_q=IDENTITY_Q, r_knee=0.0, l_elbow=0.0):
    q = IDENTITY_Q
    return [1 / 30, *root, *root_q, *q, *q, *q, r_knee, *q, *q, 0.0, *q, 0.0, *q, *q, l_elbow]


def write_clip(path, frames):
    path.write_text(json.dumps({"Loop": "wrap", "Frames": frames}))
    return path


def test_zero_pose_hangs_limbs_straight_down(tmp_path, lowpoly_body):
    rest = lowpoly_body.rest_shape({})
    frames = read_clip(write_clip(tmp_path / "c.txt", [clip_frame()]))
    motion = retarget(frames, rest)
    _, jt = pose_sequence(rest.vertices, rest.joints, lowpoly_body.skinning_weights, motion)
    p = jt[0, :, :3, 3]
    j = SMPL22.index
    for upper, lower in (("L_shoulder", "L_elbow"), ("R_elbow", "R_wrist"), ("L_hip", "L_knee"), ("R_knee", "R_ankle")):
        d = p[j(lower)] - p[j(upper)]
        np.testing.assert_allclose(d / np.linalg.norm(d), [0, -1, 0], atol=1e-9, err_msg=f"{upper}->{lower}")
    np.testing.assert_allclose(p[0], [0.0, 0.85, 0.0], atol=1e-9)


def test_knee_flexion_points_the_shin_backwards_and_heading_maps_to_y(tmp_path, lowpoly_body):
    rest = lowpoly_body.rest_shape({})
    turn = [np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]  # 90 degrees about +Y
    frames = read_clip(write_clip(tmp_path / "c.txt", [clip_frame(r_knee=-np.pi / 2), clip_frame(root_q=turn)]))
    motion = retarget(frames, rest)
    _, jt = pose_sequence(rest.vertices, rest.joints, lowpoly_body.skinning_weights, motion)
    j = SMPL22.index
    shin = jt[0, j("R_ankle"), :3, 3] - jt[0, j("R_knee"), :3, 3]
    np.testing.assert_allclose(shin / np.linalg.norm(shin), [0, 0, -1], atol=1e-9)  # facing +Z, so back is -Z
    np.testing.assert_allclose(jt[1, 0, :3, :3], [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-9)


def test_bad_clip_is_named(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(json.dumps({"Frames": [[0.0, 1.0]]}))
    with pytest.raises(ValueError, match="bad.txt: expected frames of 44 values"):
        read_clip(bad)


def test_deepmimic_manifest_split():
    m = deepmimic_manifest(load_manifest("anny"))
    check_split(m)
    assert len(m["sequences"]) == len(CLIPS) * len(m["subjects"])
    train_subject = [q for q in m["sequences"] if q["subject"] == "adult00"]
    assert sum(q["split"] == "test" for q in train_subject) == 4
