"""The per-frame label path: intrinsic Delaunay flips and the pose heat solver, against libigl's
intrinsic Delaunay triangulation, closed-form geodesics and the robust reference solver."""

import igl
import numpy as np
import pytest
import scipy.sparse as sp
import trimesh

from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.frame import SubjectGeometry, frame_labels
from hipnet.pipeline.stages.geodesics import sample_labels, vertex_distances
from hipnet.pipeline.stages.heat import POISSON_SHIFT, PoseHeat, intrinsic_layout, mollified_lengths
from hipnet.pipeline.stages.intrinsic import NonManifoldError, Triangulation, corner_cotangents
from hipnet.pipeline.stages.surface import sample_surface


def jittered_sphere(seed=0, subdivisions=3, jitter=0.3):
    """An icosphere whose vertices slide along the surface: many obtuse triangles (negative cotan weights)."""
    m = trimesh.creation.icosphere(subdivisions)
    v = np.asarray(m.vertices, dtype=np.float64)
    v = v + jitter * np.random.default_rng(seed).normal(size=v.shape) * igl.edge_lengths(v, m.faces).mean()
    return v / np.linalg.norm(v, axis=1, keepdims=True), np.asarray(m.faces, dtype=np.int64)


def check_valid(tri: Triangulation, ell: np.ndarray) -> None:
    h = np.arange(len(tri.twin))
    inner = tri.twin >= 0
    np.testing.assert_array_equal(tri.twin[tri.twin[inner]], h[inner])  # twins pair up
    np.testing.assert_array_equal(tri.eid[tri.twin[inner]], tri.eid[inner])
    # the twin runs the other way: tail of h == head of twin
    tails = tri.faces[h // 3, (h % 3 + 1) % 3]
    heads = tri.faces[h // 3, (h % 3 + 2) % 3]
    np.testing.assert_array_equal(tails[tri.twin[inner]], heads[inner])
    sides = tri.face_lengths(ell)
    assert (sides.sum(1, keepdims=True) - 2 * sides > 0).all()  # every triangle inequality holds


def heron(sides):
    s = sides.sum(1) / 2
    return np.sqrt(s * (s - sides[:, 0]) * (s - sides[:, 1]) * (s - sides[:, 2]))


def test_flips_give_libigl_intrinsic_delaunay_triangulation():
    v, f = jittered_sphere()
    tri = Triangulation.of_mesh(f)
    ell0 = mollified_lengths(v, tri.edge_vertices(), tri)
    cot0 = corner_cotangents(tri.face_lengths(ell0)).ravel()
    h = np.flatnonzero(tri.twin > np.arange(len(tri.twin)))
    assert (cot0[h] + cot0[tri.twin[h]] < -0.01).sum() > 20  # the input is far from Delaunay
    sides0 = tri.face_lengths(ell0)
    ell = tri.make_delaunay(ell0)
    check_valid(tri, ell)
    assert len(tri.non_delaunay(ell)[0]) == 0
    np.testing.assert_allclose(heron(tri.face_lengths(ell)).sum(), heron(sides0).sum(), rtol=1e-12)  # same metric
    ref = igl.intrinsic_delaunay_triangulation(sides0, f)[0]
    np.testing.assert_allclose(np.sort(tri.face_lengths(ell).ravel()), np.sort(ref.ravel()), rtol=1e-12)


def test_heat_and_poisson_matrices_are_libigl_s_intrinsic_laplacian_and_mass():
    v, f = jittered_sphere(2)
    heat = PoseHeat(f, len(v), np.array([0]))
    tri, ell = heat.triangulate(v)
    sides = tri.face_lengths(ell)
    heat_m, poisson_m = heat._matrices(tri, sides, intrinsic_layout(sides)[2])
    full = [(m + sp.triu(m, 1).T).toarray() for m in (heat_m, poisson_m)]
    lap = -igl.cotmatrix_intrinsic(sides, tri.faces).toarray()  # libigl's is negative semi-definite
    mass = igl.massmatrix_intrinsic(sides, tri.faces, igl.MASSMATRIX_TYPE_BARYCENTRIC).toarray()
    t = sides.mean() ** 2
    np.testing.assert_allclose(full[0], t * lap + mass, atol=1e-12 * np.abs(lap).max())
    np.testing.assert_allclose(full[1], lap + POISSON_SHIFT * mass, atol=1e-12 * np.abs(lap).max())
    assert np.array_equal(heat_m.indices, poisson_m.indices)  # one pattern: the Poisson step refactors numerically


def test_pose_heat_matches_great_circle_distance_and_the_robust_solver():
    r = 1.3
    m = trimesh.creation.icosphere(4, radius=r)
    v, f = np.asarray(m.vertices), np.asarray(m.faces, dtype=np.int64)
    src = np.array([0, 100, 2000])
    heat = PoseHeat(f, len(v), src)
    d = heat.distances(v)
    robust = vertex_distances(v, f, src)
    for row, s in zip(d, src, strict=True):
        exact = r * np.arccos(np.clip(v @ v[s] / r**2, -1, 1))
        far = exact > 0.1 * r
        assert np.median(np.abs(row[far] - exact[far]) / exact[far]) < 0.03
        assert row[s] == 0
    np.testing.assert_allclose(d, robust, atol=2e-3 * r)


def test_pose_heat_on_a_flat_disc_with_a_boundary_gives_euclidean_distance():
    n = 41
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    v = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], 1)
    v[:, :2] += np.random.default_rng(1).uniform(-0.01, 0.01, (n * n, 2))
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, e = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, e], 1)])
    src = np.array([idx[n // 2, n // 2], idx[5, 30]])
    d = PoseHeat(f, len(v), src).distances(v)
    for row, s in zip(d, src, strict=True):
        exact = np.linalg.norm(v - v[s], axis=1)
        inside = (np.abs(v[:, :2]).max(1) < 0.8) & (exact > 0.2)
        assert np.median(np.abs(row[inside] - exact[inside]) / exact[inside]) < 0.03


def test_pose_heat_refuses_a_non_manifold_mesh():
    v, f = jittered_sphere(0, subdivisions=1, jitter=0.0)
    fin = np.array([[f[0, 0], f[0, 1], len(v)]])  # a third face on the edge of face 0
    with pytest.raises(NonManifoldError):
        PoseHeat(np.concatenate([f, fin]), len(v) + 1, np.array([0]))


def test_labels_agree_with_the_robust_solver_on_full_resolution_anny_frames(tiny_raw_full):
    reader = AnnyReader(tiny_raw_full, ("train",))
    refs = reader.frame_refs()
    rng = np.random.default_rng(0)
    geoms = {}
    for _, frame in reader.load([refs[0], refs[len(refs) // 2], refs[-1]]):
        subject = reader.subject(frame.subject)
        if frame.subject not in geoms:
            geoms[frame.subject] = SubjectGeometry.build(subject, "per-frame", frame.subject)
        geom = geoms[frame.subject]
        assert geom.heat is not None
        s = sample_surface(frame.vertices, subject.faces, 25_000, rng)
        labels = frame_labels(frame.vertices, geom, s.face_index, s.barycentrics)
        robust = vertex_distances(np.asarray(frame.vertices, np.float64)[geom.representative], geom.weld_faces,
                                  geom.proxies)
        reference = sample_labels(robust[:, geom.inverse], subject.faces, s.face_index, s.barycentrics)
        assert (labels == reference).mean() >= 0.998


def test_a_non_manifold_subject_falls_back_to_the_robust_solver_with_the_same_labels():
    from hipnet.pipeline.core.frames import Subject

    v, f = jittered_sphere(0, subdivisions=2, jitter=0.0)
    fin = np.array([[f[0, 0], f[0, 1], len(v)]])  # a third face on an edge: not a manifold, still one component
    v2 = np.concatenate([v, [(v[f[0, 0]] + v[f[0, 1]]) / 2 * 1.2]])
    f2 = np.concatenate([f, fin])
    joints = np.array([[0.0, 0.0, 0.8], [0.0, 0.0, -0.8]])
    geom = SubjectGeometry.build(Subject("fin", joints, f2, v2), "per-frame", "fin")
    assert geom.heat is None
    s = sample_surface(v2, f2, 2000, np.random.default_rng(0))
    labels = frame_labels(v2, geom, s.face_index, s.barycentrics)
    reference = sample_labels(vertex_distances(v2[geom.representative], geom.weld_faces, geom.proxies)[:, geom.inverse],
                              f2, s.face_index, s.barycentrics)
    np.testing.assert_array_equal(labels, reference)
    assert ((s.points[:, 2] > 0.3) == (labels == 0))[np.abs(s.points[:, 2]) > 0.3].all()
