"""The fast stages against their references: sampling bit-identical to the straightforward implementation (kept
inline here), sample labels identical to interpolating every joint's distance, occupancy identical to libigl's
exact winding number (``igl.winding_number``, the solid-angle sum) on a sphere, on two overlapping spheres and on
the low-poly Anny body in deep flexion (self-intersecting: parts where the winding number is 2)."""

import numpy as np
import pytest
import trimesh

from hipnet.pipeline.stages.geodesics import sample_labels, vertex_distances
from hipnet.pipeline.stages.occupancy import (
    fast_winding_occupancy,
    is_closed,
    occupancy,
    solid_angle_winding,
    winding_numbers,
)
from hipnet.pipeline.stages.surface import sample_surface, sample_surface_reference, vertex_normals


def sphere(r=1.0, subdivisions=4, centre=(0.0, 0.0, 0.0)):
    m = trimesh.creation.icosphere(subdivisions, radius=r)
    return np.asarray(m.vertices, dtype=np.float64) + np.asarray(centre), np.asarray(m.faces, dtype=np.int64)


def two_overlapping_spheres():
    """One closed, self-intersecting mesh: two unit spheres whose centres are 1.2 apart (a lens of winding 2)."""
    v1, f1 = sphere(1.0, 3, (-0.6, 0.0, 0.0))
    v2, f2 = sphere(1.0, 3, (0.6, 0.0, 0.0))
    return np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])


def deep_flexion(body):
    """The low-poly Anny body squatting with bent elbows: calves in the thighs, forearms in the upper arms."""
    from hipnet.pipeline.core.kinematics import forward_kinematics, linear_blend_skinning
    from hipnet.pipeline.core.skeleton import SMPL22
    from hipnet.pipeline.embedded.motions import euler_xyz_to_matrix

    shape = body.rest_shape({})
    euler = np.zeros((SMPL22.num_joints, 3))
    names = SMPL22.names
    for side, s in (("L", 1), ("R", -1)):
        euler[names.index(f"{side}_hip")] = np.radians([-125, 0, s * 5])
        euler[names.index(f"{side}_knee")] = np.radians([150, 0, 0])
        euler[names.index(f"{side}_shoulder")] = np.radians([0, s * -60, s * -30])
        euler[names.index(f"{side}_elbow")] = np.radians([0, s * -150, 0])
    euler[names.index("spine1")] = np.radians([30, 0, 0])
    jt = forward_kinematics(euler_xyz_to_matrix(euler)[None], shape.joints, SMPL22.parents, np.zeros((1, 3)))
    v = linear_blend_skinning(shape.vertices, body.skinning_weights, jt, shape.joints)[0]
    return v, np.asarray(body.faces, dtype=np.int64)


def query_points(v, f, rng, n=20_000, shell=1e-6):
    """Uniform points in the stretched bbox, near-surface points (N(0, 0.03)) and points ``shell`` off the
    surface on both sides (float32, as stored): the last are the ones the float32 ray scene cannot decide."""
    from hipnet.pipeline.stages.evalpoints import near_points, uniform_points

    s = sample_surface(v, f, n, rng)
    side = rng.choice([-1.0, 1.0], size=(n // 20, 1))
    skin = s.points[: n // 20] + side * shell * s.normals[: n // 20]
    q = np.concatenate([uniform_points(v, n, rng), near_points(s, n, rng)[0], skin])
    return q.astype(np.float32).astype(np.float64)


def assert_exact_occupancy(v, f, q):
    import igl

    exact = igl.winding_number(v, f, q)
    occ = occupancy(v, f, q)
    wrong = np.flatnonzero(occ.inside != (exact > 0.5))
    assert len(wrong) == 0, f"{len(wrong)} points differ from the exact winding number, e.g. {q[wrong[:3]]}"
    np.testing.assert_array_equal(winding_numbers(v, f, q), np.rint(exact).astype(np.int64))
    # ray parity is w mod 2: it disagrees exactly where the winding number is even and positive (overlaps)
    w = np.rint(exact)
    assert occ.disagreements == np.count_nonzero((w >= 2) & (w % 2 == 0))
    return exact, occ


def test_sphere_occupancy_is_inside_the_radius_and_exact():
    r = 0.8
    v, f = sphere(r)
    rng = np.random.default_rng(2)
    q = query_points(v, f, rng)
    exact, occ = assert_exact_occupancy(v, f, q)
    radius = np.linalg.norm(q, axis=1)
    off = np.abs(radius - r) > 0.005  # farther from the sphere than the icosphere's chord error
    np.testing.assert_array_equal(occ.inside[off], radius[off] < r)
    assert occ.disagreements == 0  # a sphere does not overlap itself


def test_overlapping_spheres_lens_is_inside_with_winding_number_two():
    v, f = two_overlapping_spheres()
    assert is_closed(f, len(v))
    q = query_points(v, f, np.random.default_rng(5))
    exact, occ = assert_exact_occupancy(v, f, q)
    d1, d2 = np.linalg.norm(q - [-0.6, 0, 0], axis=1), np.linalg.norm(q - [0.6, 0, 0], axis=1)
    lens = (d1 < 0.98) & (d2 < 0.98)  # inside both spheres, clear of the chord error
    assert lens.sum() > 500
    assert occ.inside[lens].all() and (np.rint(exact[lens]) == 2).all()
    assert occ.disagreements >= lens.sum()  # parity calls the whole lens outside


def test_posed_lowpoly_body_in_deep_flexion_is_exact(lowpoly_body):
    v, f = deep_flexion(lowpoly_body)
    assert is_closed(f, len(v))
    q = query_points(v, f, np.random.default_rng(7))
    exact, occ = assert_exact_occupancy(v, f, q)
    assert (np.rint(exact) == 2).sum() > 100  # the pose does self-intersect
    # the previous implementation (libigl's fast winding number) agrees on the occupancy
    np.testing.assert_array_equal(fast_winding_occupancy(v, f, q).inside, occ.inside)


def test_points_on_a_thin_shell_take_the_doubtful_path_and_stay_exact():
    from hipnet.pipeline.stages.occupancy import DIRECTION

    v, f = sphere(0.5, 3)
    rng = np.random.default_rng(11)
    s = sample_surface(v, f, 400, rng)
    # 1e-7 off the surface (a float32 step): decided in float64 from the solid angles near each point
    q = np.concatenate([s.points + 1e-7 * s.normals, s.points - 1e-7 * s.normals])
    exact = solid_angle_winding(v, f, q)
    np.testing.assert_array_equal(winding_numbers(v, f, q), np.rint(exact))
    # rays through a vertex of the mesh (doubtful: barycentric 0)
    q = v[:50] - 0.3 * DIRECTION
    np.testing.assert_array_equal(winding_numbers(v, f, q), np.rint(solid_angle_winding(v, f, q)))


def test_an_open_mesh_falls_back_to_the_fast_winding_number():
    v, f = sphere(1.0, 3)
    f = f[1:]  # one face missing
    assert not is_closed(f, len(v))
    q = np.random.default_rng(3).uniform(-1.2, 1.2, size=(2000, 3))
    a, b = occupancy(v, f, q), fast_winding_occupancy(v, f, q)
    np.testing.assert_array_equal(a.inside, b.inside)
    assert a.disagreements == b.disagreements
    with pytest.raises(ValueError, match="not closed"):
        winding_numbers(v, f, q)


@pytest.mark.parametrize("n", [1, 7, 25_000])
def test_sampling_is_bit_identical_to_the_reference(lowpoly_body, n):
    meshes = [sphere(0.7), deep_flexion(lowpoly_body)]
    for v, f in meshes:
        for seed in range(3):
            fast = sample_surface(v, f, n, np.random.default_rng(seed))
            ref = sample_surface_reference(v, f, n, np.random.default_rng(seed))
            for name, a, b in zip(("points", "normals", "face_index", "barycentrics"), fast, ref, strict=True):
                assert np.array_equal(a, b), f"{name} differs (seed {seed}, n {n})"
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        vn = np.stack([np.bincount(f.ravel(), np.repeat(fn[:, c], 3), minlength=len(v)) for c in range(3)], axis=1)
        assert np.array_equal(vertex_normals(v, f), vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20))


def test_sample_labels_equal_interpolating_every_joint(lowpoly_body):
    v, f = deep_flexion(lowpoly_body)
    rng = np.random.default_rng(4)
    d = vertex_distances(v, f, rng.choice(len(v), 22, replace=False))
    d[:, 5] = d[0, 5]  # ties at a vertex: every joint equally near
    for seed in range(3):
        s = sample_surface(v, f, 25_000, np.random.default_rng(seed))
        corner = f[s.face_index]
        reference = np.argmin(np.einsum("jsk,sk->sj", d[:, corner], s.barycentrics), axis=1)
        np.testing.assert_array_equal(sample_labels(d, f, s.face_index, s.barycentrics), reference)


def test_near_point_labels_are_the_brute_force_nearest_samples_labels(lowpoly_body):
    """``nearest_labels`` (a threaded KD-tree with 32-point leaves) against every distance computed."""
    from hipnet.pipeline.runner.frame import nearest_labels

    verts, faces = deep_flexion(lowpoly_body)
    rng = np.random.default_rng(7)
    s = sample_surface(verts, faces, 3000, rng)
    labels = rng.integers(0, 22, len(s.points)).astype(np.uint8)
    queries = s.points[rng.integers(0, len(s.points), 2000)] + rng.normal(0, 0.03, (2000, 3))
    brute = labels[np.argmin(((queries[:, None] - s.points[None]) ** 2).sum(-1), axis=1)]
    np.testing.assert_array_equal(nearest_labels(s.points, labels, queries), brute)
