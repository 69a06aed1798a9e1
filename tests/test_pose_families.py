"""Pose families of the embedded dataset: within the anatomical limits, closed frames, poses that are what their
family says (and standing is not), deterministic family manifests, and a held-out-family split disjoint by motion."""

import numpy as np
import pytest
import trimesh
import yaml
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from hipnet.pipeline.core.kinematics import forward_kinematics
from hipnet.pipeline.core.skeleton import SMPL22
from hipnet.pipeline.embedded.families import (
    ALL_FAMILIES,
    ANATOMICAL_LIMITS_DEG,
    FAMILIES,
    RANDOM,
    STAND,
    anatomical_limits,
    family_motion,
)
from hipnet.pipeline.embedded.generate import (
    add_families,
    generate_dataset,
    hold_out_family,
    make_anny_manifest,
    sequence_family,
)
from hipnet.pipeline.embedded.motions import JOINT_LIMITS_DEG, euler_xyz_to_matrix, joint_limits, random_motion
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.sources.manifest import load_manifest
from hipnet.pipeline.stages.canonical import canonicalise

J = SMPL22.index
POSE_FAMILIES = tuple(FAMILIES)


def small_manifest(**kw) -> dict:
    return make_anny_manifest(seed=0, n_realistic=2, n_heldout=1, extremes=("heavy_male",), sequences_per_subject=8,
                              frames_per_sequence=6, key_every=3, topology="lowpoly", **kw)


# ------------------------------------------------------------------------------------------- what a pose is


def _angle(a, b) -> float:
    """Degrees between two vectors."""
    c = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def _hand(p, side):
    """A point on the palm: 8 cm beyond the wrist along the forearm."""
    fore = p[J(f"{side}_wrist")] - p[J(f"{side}_elbow")]
    return p[J(f"{side}_wrist")] + 0.08 * fore / np.linalg.norm(fore)


def _hip_flexion(p, g, side):
    """Angle between the thigh and the pelvis's down axis."""
    return _angle(p[J(f"{side}_knee")] - p[J(f"{side}_hip")], -g[0][:, 1])


def _knee_flexion(p, side):
    return _angle(p[J(f"{side}_knee")] - p[J(f"{side}_hip")], p[J(f"{side}_ankle")] - p[J(f"{side}_knee")])


def _upright(g) -> bool:
    return g[0][1, 1] > 0.6  # the pelvis's up axis within 53 degrees of +Y


def is_family_pose(family: str, p: np.ndarray, g: np.ndarray) -> bool:
    """Whether canonical joint positions p (22, 3) and global rotations g (22, 3, 3) show ``family``."""
    hips = [_hip_flexion(p, g, s) for s in "LR"]
    knees = [_knee_flexion(p, s) for s in "LR"]
    if family == "sit":  # both thighs forward, both knees bent, trunk up
        return _upright(g) and min(hips) > 65 and min(knees) > 65
    if family == "squat":  # deeper than sitting
        return _upright(g) and min(hips) > 70 and min(knees) > 80 and max(hips) > 70 and max(knees) > 95
    if family == "kneel":  # a knee bent about 90 degrees below a thigh near vertical, the shin near horizontal
        return any(knees[i] > 80 and _angle(p[J(f"{s}_knee")] - p[J(f"{s}_hip")], np.array([0, -1, 0])) < 25
                   and abs(_angle(p[J(f"{s}_ankle")] - p[J(f"{s}_knee")], np.array([0, -1, 0])) - 90) < 35
                   for i, s in enumerate("LR"))
    if family == "lie":  # the pelvis's up axis and the trunk nearly horizontal
        return abs(g[0][1, 1]) < 0.2 and abs(_angle(p[J("neck")] - p[J("pelvis")], np.array([0, 1, 0])) - 90) < 20
    if family == "bend":  # trunk tipped forwards past 60 degrees, legs below, hands below the shoulders
        trunk = _angle(p[J("neck")] - p[J("pelvis")], np.array([0, 1, 0]))
        fwd = (p[J("neck")] - p[J("pelvis")])[2] > 0
        hands_low = all(_hand(p, s)[1] < p[J(f"{s}_shoulder")][1] - 0.2 for s in "LR")
        return trunk > 60 and fwd and max(hips) > 30 and p[J("L_ankle")][1] < -0.5 and hands_low
    if family == "cross_arms":  # each hand past the midline, in front of the trunk between belly and chest
        chest = p[J("spine3")]
        return (_hand(p, "L")[0] < 0 < _hand(p, "R")[0] and min(_hand(p, s)[2] for s in "LR") > chest[2] + 0.03
                and all(-0.3 < _hand(p, s)[1] - chest[1] < 0.1 for s in "LR"))
    if family == "touch":  # a hand on the head, on the waist above its hip, or on the chest
        targets = [p[J("head")] + [0, 0.12, 0], p[J("spine3")] + [0, 0.03, 0.15]]
        targets += [p[J(f"{s}_hip")] + [sign * 0.08, 0.12, 0] for s, sign in (("L", 1), ("R", -1))]
        radius = [0.17, 0.15, 0.12, 0.12]
        return any(np.linalg.norm(_hand(p, s) - t) < r for s in "LR" for t, r in zip(targets, radius, strict=True))
    raise KeyError(family)


def _pose(rest_joints, euler):
    """Canonical joints (22, 3) and rotations (22, 3, 3) of Euler angles (22, 3) on rest joints."""
    jt = forward_kinematics(euler_xyz_to_matrix(euler), rest_joints, SMPL22.parents)
    c = canonicalise(np.zeros((1, 3)), jt)
    return c.joint_transforms[:, :3, 3], c.joint_transforms[:, :3, :3]


@pytest.fixture(scope="module")
def rest_joints(lowpoly_body):
    """Rest joints of three builds: the default body, a heavy man, a short woman."""
    phenos = ({}, {"gender": 0.0, "weight": 1.0, "muscle": 0.3}, {"gender": 1.0, "height": 0.0, "age": 0.7})
    return [lowpoly_body.rest_shape(p).joints for p in phenos]


# ------------------------------------------------------------------------------------------------- limits


def test_anatomical_limits_contain_the_random_familys_and_mirror():
    assert set(ANATOMICAL_LIMITS_DEG) == set(JOINT_LIMITS_DEG)
    wide, narrow = anatomical_limits(), joint_limits()
    assert (wide[..., 0] <= narrow[..., 0]).all() and (narrow[..., 1] <= wide[..., 1]).all()
    assert (wide[..., 0] <= wide[..., 1]).all()
    left, right = J("L_hip"), J("R_hip")
    np.testing.assert_allclose(wide[left, 1], -wide[right, 1, ::-1])
    # the ranges these poses need, beyond the random family's
    assert np.degrees(wide[J("L_hip"), 0, 0]) <= -120 and np.degrees(wide[J("L_knee"), 0, 1]) >= 140
    assert np.degrees(wide[J("L_shoulder"), 2, 0]) <= -90  # adduction across the chest
    assert sum(np.degrees(wide[J(s), 0, 1]) for s in ("spine1", "spine2", "spine3")) >= 90


def test_every_template_lies_within_the_anatomical_limits():
    lim = np.degrees(anatomical_limits())
    for family, templates in FAMILIES.items():
        assert templates, family
        for t in [*templates, STAND]:
            assert set(t.ranges) == set(SMPL22.names), t.name
            b = np.degrees(t.bounds())
            assert (b[..., 0] <= b[..., 1]).all(), t.name
            outside = (b[..., 0] < lim[..., 0] - 1e-9) | (b[..., 1] > lim[..., 1] + 1e-9)
            assert not outside.any(), f"{t.name}: {[SMPL22.names[j] for j in np.flatnonzero(outside.any(1))]}"


def test_key_frames_of_every_family_are_within_the_limits():
    """The key frames of generated sequences, read back as Euler angles (non-root joints; the root also carries
    the random heading). XYZ angles (x, y, z) and (x + pi, pi - y, z + pi) are the same rotation (scipy returns
    |y| <= pi/2; an elbow flexed past 90 degrees is the other one): either may lie within the limits."""
    lim = anatomical_limits()
    wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
    for family in POSE_FAMILIES:
        for s in range(6):
            m = family_motion(np.random.default_rng(s), family, 17, 8)
            keys = m.local_rotations[::8, 1:]  # frames 0, 8, 16
            euler = Rotation.from_matrix(keys.reshape(-1, 3, 3)).as_euler("XYZ").reshape(*keys.shape[:2], 3)
            other = wrap(euler * [1, -1, 1] + [np.pi, np.pi, np.pi])
            low, high = lim[1:, :, 0] - 1e-6, lim[1:, :, 1] + 1e-6
            inside = [((e >= low) & (e <= high)).all(-1) for e in (euler, other)]
            assert (inside[0] | inside[1]).all(), f"{family} seed {s}"


# ------------------------------------------------------------------------------------------- the poses


@pytest.mark.parametrize("family", POSE_FAMILIES)
def test_template_samples_show_their_family_on_three_builds(family, rest_joints):
    rng = np.random.default_rng(0)
    for t in FAMILIES[family]:
        for rj in rest_joints:
            for _ in range(8):
                p, g = _pose(rj, t.sample(rng))
                assert is_family_pose(family, p, g), f"{t.name}: not a {family} pose"


def test_standing_is_none_of_the_families(rest_joints):
    rng = np.random.default_rng(1)
    for rj in rest_joints:
        for _ in range(30):
            p, g = _pose(rj, STAND.sample(rng))
            shown = [f for f in POSE_FAMILIES if is_family_pose(f, p, g)]
            assert not shown, f"a standing pose passes as {shown}"


def test_sequences_go_between_standing_and_the_family_pose(rest_joints):
    """Middle keys are always the family's; some sequences start or end standing; the root stays grounded."""
    starts = []
    for family in POSE_FAMILIES:
        for s in range(8):
            m = family_motion(np.random.default_rng(s), family, 17, 8, rest_joints[0])
            jt = forward_kinematics(m.local_rotations, rest_joints[0], SMPL22.parents, m.translation)
            c = canonicalise(np.zeros((1, 3)), jt[8])
            assert is_family_pose(family, c.joint_transforms[:, :3, 3], c.joint_transforms[:, :3, :3]), family
            c0 = canonicalise(np.zeros((1, 3)), jt[0])
            starts.append(is_family_pose(family, c0.joint_transforms[:, :3, 3], c0.joint_transforms[:, :3, :3]))
            np.testing.assert_allclose(jt[..., 1, 3].min(1), rest_joints[0][:, 1].min(), atol=1e-9)
    assert 0.2 < np.mean(starts) < 0.8  # about half start standing


def test_random_family_is_random_motion():
    a = family_motion(np.random.default_rng(3), RANDOM, 16, 8)
    b = random_motion(np.random.default_rng(3), 16, 8)
    np.testing.assert_array_equal(a.local_rotations, b.local_rotations)
    np.testing.assert_array_equal(a.translation, b.translation)
    with pytest.raises(ValueError, match="unknown pose family 'dance'"):
        family_motion(np.random.default_rng(0), "dance", 16, 8)


# ------------------------------------------------------------------------------------------- manifests


def test_default_manifest_has_no_families_and_is_the_shipped_one():
    m = make_anny_manifest()
    assert m == load_manifest("anny")
    assert all("family" not in q and sequence_family(q) == RANDOM for q in m["sequences"])


def test_family_manifest_assigns_families_by_seed():
    m = small_manifest(motions="families")
    assert m == small_manifest(motions="families")
    other = make_anny_manifest(seed=1, n_realistic=2, n_heldout=1, extremes=("heavy_male",), sequences_per_subject=8,
                               motions="families")
    assert [q["family"] for q in other["sequences"]] != [q["family"] for q in m["sequences"]]
    for s in m["subjects"]:
        fams = [q["family"] for q in m["sequences"] if q["subject"] == s["name"]]
        assert sorted(fams) == sorted(ALL_FAMILIES), s["name"]  # 8 sequences, 8 families: one each
    assert all(q["name"] == f"{q['family']}{k % 8:02d}" for k, q in enumerate(m["sequences"]))
    # the split is the procedural manifest's
    plain = small_manifest()
    assert [q["split"] for q in m["sequences"]] == [q["split"] for q in plain["sequences"]]
    with pytest.raises(ValueError, match="families must be distinct"):
        small_manifest(motions="families", families=("sit", "yoga"))


def test_add_families_keeps_the_manifests_sequences():
    base = small_manifest()
    m = add_families(base, per_family=2)
    n = len(base["sequences"])
    assert m["sequences"][:n] == base["sequences"]
    new = m["sequences"][n:]
    assert len(new) == len(base["subjects"]) * len(POSE_FAMILIES) * 2
    assert {q["family"] for q in new} == set(POSE_FAMILIES)
    heldout = {q["subject"] for q in base["sequences"] if q["split"] == "heldout"}
    for s in base["subjects"]:
        splits = [q["split"] for q in new if q["subject"] == s["name"]]
        assert splits.count("test" if s["name"] not in heldout else "heldout") == (4 if s["name"] not in heldout else 14)
    assert sum(m["expected"]["sequences"].values()) == len(m["sequences"])
    assert m["generator"]["families"] == list(POSE_FAMILIES) and m["generator"]["family_sequences"] == 2


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_held_out_family_split_is_disjoint_by_motion(family):
    source = add_families(small_manifest())
    m = hold_out_family(source, family)
    split = {(q["subject"], q["name"]): q["split"] for q in m["sequences"]}
    assert len(split) == len(m["sequences"])  # each sequence in exactly one split
    fam = {(q["subject"], q["name"]): sequence_family(q) for q in m["sequences"]}
    train = {k for k, s in split.items() if s == "train"}
    test = {k for k, s in split.items() if s == "test"}
    in_family = {k for k, s in split.items() if s == "heldout"}
    assert train and test and in_family
    assert not (train & test) and not (train & in_family) and not (test & in_family)
    assert all(fam[k] != family for k in train | in_family)
    assert all(fam[k] == family for k in test)
    # test holds every sequence of the family on the training subjects; the held-out subjects are left out
    held_subjects = {q["subject"] for q in source["sequences"] if q["split"] == "heldout"}
    expected = {(q["subject"], q["name"]) for q in source["sequences"]
                if sequence_family(q) == family and q["subject"] not in held_subjects}
    assert test == expected
    assert not held_subjects & {s["name"] for s in m["subjects"]}
    # the in-family comparison is exactly the other families' test sequences
    assert in_family == {(q["subject"], q["name"]) for q in source["sequences"]
                         if q["split"] == "test" and sequence_family(q) != family}
    assert m["generator"]["held_out_family"] == family
    assert m["expected"]["sequences"] == {s: sum(v == s for v in split.values()) for s in ("train", "test", "heldout")}


def test_held_out_family_refuses_an_absent_family():
    with pytest.raises(ValueError, match="no sequence of family 'sit'"):
        hold_out_family(small_manifest(), "sit")


# ------------------------------------------------------------------------------------ generated frames


@pytest.fixture(scope="module")
def family_raw(tmp_path_factory, lowpoly_body):
    """Every family once per subject (3 subjects x 8 families x 6 frames), low-poly."""
    out = tmp_path_factory.mktemp("families") / "anny"
    generate_dataset(small_manifest(motions="families"), out, body=lowpoly_body)
    return out


def test_every_family_frame_is_closed(family_raw):
    reader = AnnyReader(family_raw)
    seen = set()
    for q in reader.meta["sequences"]:
        data = reader.read_sequence(q["subject"], q["name"])
        faces = reader.subject(q["subject"]).faces
        for t, v in enumerate(data["vertices"]):
            mesh = trimesh.Trimesh(v, faces, process=False)
            where = f"{q['subject']}/{q['name']} frame {t}"
            assert np.isfinite(v).all() and mesh.is_watertight and mesh.is_winding_consistent, where
            assert mesh.volume > 0, where
        seen.add(q["family"])
    assert seen == set(ALL_FAMILIES)


def test_generated_middle_keys_show_their_family(family_raw):
    """Frame 3 of 6 (a key every 3 frames) is always a family key; canonicalised as preprocessing does."""
    reader = AnnyReader(family_raw)
    for q in reader.meta["sequences"]:
        if q["family"] == RANDOM:
            continue
        data = reader.read_sequence(q["subject"], q["name"])
        c = canonicalise(data["vertices"][3], data["joint_transforms"][3])
        assert is_family_pose(q["family"], c.joint_transforms[:, :3, 3], c.joint_transforms[:, :3, :3]), q["name"]


# ------------------------------------------------------------------------------------------------ commands


def test_anny_command_with_a_held_out_family_and_the_picture(tmp_path, lowpoly_body):
    from hipnet.cli.data import main

    manifest = tmp_path / "tiny.yaml"
    manifest.write_text(yaml.safe_dump(make_anny_manifest(
        n_realistic=1, n_heldout=1, extremes=(), sequences_per_subject=4, frames_per_sequence=3, key_every=2,
        topology="lowpoly")))
    out = tmp_path / "raw"
    runner = CliRunner()
    refused = runner.invoke(main, ["anny", "--out", str(out), "--manifest", str(manifest), "--hold-out-family", "sit"])
    assert refused.exit_code == 2 and "--hold-out-family needs --families" in refused.output
    result = runner.invoke(main, ["anny", "--out", str(out), "--manifest", str(manifest), "--families",
                                  "--hold-out-family", "lie"])
    assert result.exit_code == 0, result.output
    meta = AnnyReader(out).meta
    assert meta["generator"]["held_out_family"] == "lie"
    assert {q["family"] for q in meta["sequences"] if q["split"] == "test"} == {"lie"}
    assert "lie" not in {sequence_family(q) for q in meta["sequences"] if q["split"] != "test"}
    png = tmp_path / "families.png"
    result = runner.invoke(main, ["families", "--png", str(png), "--topology", "lowpoly"])
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
