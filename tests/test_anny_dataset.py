"""The embedded Anny dataset: closed meshes, SMPL skeleton, skinning locality, joints inside, determinism."""

import filecmp

import igl
import numpy as np
import pytest
import trimesh

from conftest import tiny_manifest
from hipnet.pipeline.core.kinematics import forward_kinematics
from hipnet.pipeline.core.skeleton import SMPL22
from hipnet.pipeline.embedded.body import ANNY_TO_SMPL22, close_cavities, induced_parents
from hipnet.pipeline.embedded.generate import generate_dataset, pose_sequence
from hipnet.pipeline.embedded.motions import Motion, euler_xyz_to_matrix, joint_limits
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.sources.manifest import SPLITS, load_manifest


def assert_single_closed_shell(vertices, faces, where):
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight, f"{where}: not watertight"
    assert mesh.is_winding_consistent, f"{where}: winding inconsistent"
    assert len(mesh.split(only_watertight=False)) == 1, f"{where}: more than one shell"
    assert mesh.volume > 0, f"{where}: faces point inwards"


def winding(vertices, faces, points):
    return igl.winding_number(vertices.astype(np.float64), faces.astype(np.int64), points.astype(np.float64))


def test_induced_parents_equal_smpl(lowpoly_body):
    assert lowpoly_body.parents == list(SMPL22.parents)
    assert induced_parents(lowpoly_body.bone_labels, lowpoly_body.bone_parents, ANNY_TO_SMPL22) == list(SMPL22.parents)
    np.testing.assert_allclose(lowpoly_body.skinning_weights.sum(1), 1.0, atol=1e-9)


def test_close_cavities_caps_a_hole_in_a_sphere():
    sphere = trimesh.creation.icosphere(2)
    faces = np.asarray(sphere.faces)
    cavity = np.asarray(sphere.vertices)[:, 2] > 0.9  # the cap around the north pole
    keep, new_faces, loops = close_cavities(faces, cavity)
    assert len(loops) == 1
    v = np.asarray(sphere.vertices)[keep]
    v = np.concatenate([v, v[loops[0]].mean(0, keepdims=True)])
    assert_single_closed_shell(v, new_faces, "capped sphere")


@pytest.mark.parametrize("body_name", ["lowpoly_body", "full_body"])
def test_rest_mesh_is_one_closed_shell_with_joints_inside(request, body_name):
    body = request.getfixturevalue(body_name)
    for pheno in ({"gender": 0.0, "height": 1.0}, {"gender": 1.0, "weight": 0.0, "age": 0.7}):
        rest = body.rest_shape(pheno)
        assert_single_closed_shell(rest.vertices, body.faces, f"{body.topology} {pheno}")
        # Y up: head above feet by a human height
        height = np.ptp(rest.vertices[:, 1])
        assert 1.2 < height < 2.2
        assert rest.joints[SMPL22.index("head"), 1] > rest.joints[SMPL22.index("L_ankle"), 1] + 1.0
        assert rest.joints[SMPL22.index("L_hip"), 0] > 0 > rest.joints[SMPL22.index("R_hip"), 0]  # left is +X
        assert (winding(rest.vertices, body.faces, rest.joints) > 0.5).all()


def test_full_topology_has_closed_head(full_body):
    assert len(full_body._loops) == 3, "mouth and two eye sockets should be capped"
    assert full_body.num_vertices > 10_000


def test_rest_pose_gives_identity_rotations_and_rest_joints(lowpoly_body):
    rest = lowpoly_body.rest_shape({})
    motion = Motion(np.broadcast_to(np.eye(3), (1, 22, 3, 3)).copy(), np.zeros((1, 3)))
    verts, jt = pose_sequence(rest.vertices, rest.joints, lowpoly_body.skinning_weights, motion)
    np.testing.assert_allclose(jt[0, :, :3, :3], np.broadcast_to(np.eye(3), (22, 3, 3)))
    np.testing.assert_allclose(jt[0, :, :3, 3], rest.joints)
    np.testing.assert_allclose(verts[0], rest.vertices, atol=1e-12)


def test_a_mirrored_pose_gives_the_mirrored_body(full_body):
    """No handedness in the data: the rest body, its joints and its skinning weights are mirror images across the
    sagittal plane (x -> -x, left <-> right; to 0.1 mm), and posing with the mirrored local rotations (M R M, left
    and right joints swapped) gives the mirror image of the posed body. So a model that learns one side's hand worse (the
    demo's right wrist) does so from the poses it is tested on, not from the data."""
    from scipy.spatial import cKDTree

    from hipnet.pipeline.embedded.motions import random_motion

    rest = full_body.rest_shape({"gender": 0.3, "weight": 0.7})
    w = full_body.skinning_weights
    mirror = np.diag([-1.0, 1.0, 1.0])
    swap = [SMPL22.index({"L_": "R_", "R_": "L_"}[n[:2]] + n[2:]) if n[:2] in ("L_", "R_") else k
            for k, n in enumerate(SMPL22.names)]
    dist, twin = cKDTree(rest.vertices).query(rest.vertices @ mirror)  # each vertex's mirror twin
    assert dist.max() < 1e-4 and sorted(twin) == list(range(len(twin)))
    np.testing.assert_allclose(rest.joints[swap] @ mirror, rest.joints, atol=1e-4)
    np.testing.assert_allclose(w[twin][:, swap], w, atol=1e-6)
    motion = random_motion(np.random.default_rng(3), 3, 2)
    still = np.zeros((len(motion.translation), 3))
    posed, _ = pose_sequence(rest.vertices, rest.joints, w, Motion(motion.local_rotations, still))
    mirrored, _ = pose_sequence(rest.vertices, rest.joints, w,
                                Motion((mirror @ motion.local_rotations @ mirror)[:, swap], still))
    assert np.abs(posed - rest.vertices).max() > 0.1  # a real pose
    np.testing.assert_allclose((posed @ mirror)[:, twin], mirrored, atol=1e-4)  # 0.1 mm


def test_rotating_one_elbow_moves_only_forearm_and_hand(lowpoly_body):
    rest = lowpoly_body.rest_shape({})
    rot = np.broadcast_to(np.eye(3), (1, 22, 3, 3)).copy()
    elbow = SMPL22.index("L_elbow")
    rot[0, elbow] = euler_xyz_to_matrix(np.radians([0.0, -80.0, 0.0]))
    verts, _ = pose_sequence(rest.vertices, rest.joints, lowpoly_body.skinning_weights, Motion(rot, np.zeros((1, 3))))
    moved = np.linalg.norm(verts[0] - rest.vertices, axis=1) > 1e-9
    forearm_hand = [elbow, *SMPL22.descendants(elbow)]
    skinned = lowpoly_body.skinning_weights[:, forearm_hand].sum(1) > 0
    assert moved.sum() > 10
    np.testing.assert_array_equal(moved, skinned)
    # and the moved vertices are on the left arm (x > shoulder's x - margin)
    assert verts[0][moved, 0].min() > rest.joints[SMPL22.index("L_collar"), 0]


def test_joint_limits_are_mirrored():
    lim = joint_limits()
    left, right = SMPL22.index("L_shoulder"), SMPL22.index("R_shoulder")
    np.testing.assert_allclose(lim[left, 0], lim[right, 0])
    np.testing.assert_allclose(lim[left, 1], -lim[right, 1, ::-1])
    assert (lim[..., 0] <= lim[..., 1]).all()


def test_every_generated_frame_is_closed_with_joints_inside(tiny_raw_full):
    """On the full-resolution mesh (the default). The 615-vertex low-poly retopology loses volume in deep knee
    flexion and a knee joint can end up just outside it; it is for fast tests of the plumbing only."""
    reader = AnnyReader(tiny_raw_full)
    n = 0
    for frame in reader:
        where = frame.key
        assert_single_closed_shell(frame.vertices, frame.faces, where)
        inside = winding(frame.vertices, frame.faces, frame.joint_transforms[:, :3, 3])
        assert (inside > 0.5).all(), f"{where}: joints {np.flatnonzero(inside <= 0.5)} outside the body"
        n += 1
    assert n == reader.info.frames == sum(e for e in tiny_manifest()["expected"]["frames"].values())


def test_generated_joint_transforms_follow_the_convention(tiny_raw):
    reader = AnnyReader(tiny_raw)
    seq = reader.sequences()[0]
    data = reader.read_sequence(seq["subject"], seq["name"])
    subj = reader.subject(seq["subject"])
    rot = data["local_rotations"].astype(np.float64)
    jt = forward_kinematics(rot, subj.rest_joints, SMPL22.parents, data["translation"])
    np.testing.assert_allclose(data["joint_transforms"], jt, atol=1e-5)
    g = data["joint_transforms"][..., :3, :3].astype(np.float64)
    np.testing.assert_allclose(g @ np.swapaxes(g, -1, -2), np.broadcast_to(np.eye(3), g.shape), atol=1e-5)


def test_generation_is_deterministic_and_seeded(tmp_path, tiny_raw, lowpoly_body):
    again = tmp_path / "again"
    generate_dataset(tiny_manifest(), again, body=lowpoly_body)
    cmp = filecmp.dircmp(tiny_raw, again)
    files = [p.relative_to(tiny_raw) for p in sorted(tiny_raw.rglob("*")) if p.is_file()]
    assert len(files) > 10
    for rel in files:
        assert (tiny_raw / rel).read_bytes() == (again / rel).read_bytes(), f"{rel} differs between runs"
    assert not cmp.left_only and not cmp.right_only
    other = tmp_path / "other"
    generate_dataset(tiny_manifest(seed=1), other, body=lowpoly_body)
    a = AnnyReader(tiny_raw).read_sequence("adult00", "motion00")["vertices"]
    b = AnnyReader(other).read_sequence("adult00", "motion00")["vertices"]
    assert not np.array_equal(a, b)


def test_interrupted_generation_resumes_to_the_same_bytes(tmp_path, tiny_raw, lowpoly_body):
    out = tmp_path / "resumed"
    generate_dataset(tiny_manifest(), out, body=lowpoly_body)
    (out / "dataset.yaml").unlink()
    victims = sorted((out / "sequences").rglob("*.npz"))[::3]
    for v in victims:
        v.unlink()
    generate_dataset(tiny_manifest(), out, body=lowpoly_body)
    for v in victims:
        assert v.read_bytes() == (tiny_raw / v.relative_to(out)).read_bytes()


def test_shipped_manifest_split_is_disjoint_and_complete():
    m = load_manifest("anny")
    subjects = {s["name"] for s in m["subjects"]}
    keys = [(q["subject"], q["name"]) for q in m["sequences"]]
    assert len(keys) == len(set(keys)), "a sequence is listed twice"
    assert {q["split"] for q in m["sequences"]} == set(SPLITS)
    assert {q["subject"] for q in m["sequences"]} == subjects
    for s in subjects:
        splits = [q["split"] for q in m["sequences"] if q["subject"] == s]
        if "heldout" in splits:
            assert set(splits) == {"heldout"}, f"{s}: a held-out subject must have no train/test sequences"
        else:
            assert splits.count("test") / len(splits) == 0.25
    counts = {sp: sum(q["split"] == sp for q in m["sequences"]) for sp in SPLITS}
    assert counts == m["expected"]["sequences"]


def test_shipped_manifest_is_reproducible():
    """The committed manifest is what make_anny_manifest() writes: nothing was edited by hand."""
    from hipnet.pipeline.embedded.generate import make_anny_manifest

    assert make_anny_manifest() == load_manifest("anny")
