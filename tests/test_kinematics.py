import numpy as np
import smplx.lbs
import torch
from scipy.spatial.transform import Rotation

from hipnet.pipeline.core.kinematics import (
    axis_angle_to_matrix,
    forward_kinematics,
    linear_blend_skinning,
    matrix_to_quaternion,
    quaternion_to_matrix,
    slerp,
)
from hipnet.pipeline.core.skeleton import SMPL22


def test_axis_angle_matches_scipy():
    rng = np.random.default_rng(1)
    aa = rng.normal(size=(50, 3))
    np.testing.assert_allclose(axis_angle_to_matrix(aa), Rotation.from_rotvec(aa).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(axis_angle_to_matrix(np.zeros(3)), np.eye(3))


def test_quaternion_round_trip_and_slerp_endpoints():
    rng = np.random.default_rng(2)
    r = Rotation.random(40, random_state=3).as_matrix()
    q = matrix_to_quaternion(r)
    np.testing.assert_allclose(quaternion_to_matrix(q), r, atol=1e-10)
    q1 = matrix_to_quaternion(Rotation.random(40, random_state=4).as_matrix())
    out = slerp(q, q1, np.array([0.0, 1.0]))
    np.testing.assert_allclose(quaternion_to_matrix(out[0]), r, atol=1e-10)
    np.testing.assert_allclose(quaternion_to_matrix(out[1]), quaternion_to_matrix(q1), atol=1e-10)
    # halfway is halfway in angle
    half = quaternion_to_matrix(slerp(q, q1, np.array([0.5]))[0])
    a = Rotation.from_matrix(r)
    b = Rotation.from_matrix(quaternion_to_matrix(q1))
    mid = Rotation.from_matrix(half)
    np.testing.assert_allclose((a.inv() * mid).magnitude(), (mid.inv() * b).magnitude(), atol=1e-8)
    assert rng is not None


def test_forward_kinematics_equals_smplx_batch_rigid_transform():
    rng = np.random.default_rng(5)
    rest = rng.normal(scale=0.3, size=(22, 3))
    rot = Rotation.random(3 * 22, random_state=6).as_matrix().reshape(3, 22, 3, 3)
    ours = forward_kinematics(rot, rest, SMPL22.parents)
    posed, rel = smplx.lbs.batch_rigid_transform(
        torch.tensor(rot), torch.tensor(rest)[None].expand(3, -1, -1).contiguous(),
        torch.tensor(SMPL22.parents), dtype=torch.float64,
    )
    np.testing.assert_allclose(ours[..., :3, 3], posed.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours[..., :3, :3], rel.numpy()[..., :3, :3], atol=1e-12)
    # smplx's relative transform is our skinning transform [G | J - G J_rest]
    skin = ours.copy()
    skin[..., :3, 3] -= np.einsum("njab,jb->nja", ours[..., :3, :3], rest)
    np.testing.assert_allclose(skin, rel.numpy(), atol=1e-12)


def test_rest_pose_is_identity_and_rigid_motion_is_exact():
    rng = np.random.default_rng(7)
    rest = rng.normal(size=(22, 3))
    verts = rng.normal(size=(100, 3))
    w = rng.dirichlet(np.ones(22), size=100)
    jt = forward_kinematics(np.broadcast_to(np.eye(3), (22, 3, 3)), rest, SMPL22.parents)
    np.testing.assert_allclose(jt[:, :3, :3], np.broadcast_to(np.eye(3), (22, 3, 3)))
    np.testing.assert_allclose(jt[:, :3, 3], rest)
    np.testing.assert_allclose(linear_blend_skinning(verts, w, jt, rest), verts, atol=1e-12)
    # a 90 degree root rotation plus a translation moves everything rigidly
    local = np.broadcast_to(np.eye(3), (22, 3, 3)).copy()
    local[0] = axis_angle_to_matrix(np.array([0.0, np.pi / 2, 0.0]))
    t = np.array([0.5, -1.0, 2.0])
    jt = forward_kinematics(local, rest, SMPL22.parents, t)
    expect = (verts - rest[0]) @ local[0].T + rest[0] + t
    np.testing.assert_allclose(linear_blend_skinning(verts, w, jt, rest), expect, atol=1e-12)
