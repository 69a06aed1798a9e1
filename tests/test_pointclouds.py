"""Observed frames: point-cloud heat labels against closed-form answers (great circles on a sphere, the
mid-plane of a capsule), PCA normals pointing outward on a sphere, pieces and fragments, and point clouds and a raw
scan in two pieces with holes through ``hipnet-data preprocess`` in the generic format."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
import yaml
from click.testing import CliRunner
from synthetic import write_point_ply

from hipnet.cli.data import main
from hipnet.pipeline.readers import open_reader
from hipnet.pipeline.stages.pointcloud import (
    SOURCE_GIVEN,
    SOURCE_MESH,
    SOURCE_PCA,
    cloud_labels,
    heat_distances,
    normal_quality,
    observe_frame,
    orient_outward,
    pca_normals,
    pieces,
)
from hipnet.pipeline.stages.surface import sample_surface
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group

R = 0.5  # sphere radius
A, RC = 0.3, 0.1  # capsule: half length of the cylinder, radius


def sphere_cloud(n: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return R * p / np.linalg.norm(p, axis=1, keepdims=True)


def capsule_mesh() -> trimesh.Trimesh:
    """A capsule along +Y: cylinder |y| <= A of radius RC, hemispherical caps."""
    m = trimesh.creation.capsule(height=2 * A, radius=RC, count=[48, 48])
    m.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
    return m


def capsule_pole_distance(p: np.ndarray) -> np.ndarray:
    """Geodesic distance on the capsule from its bottom pole (0, -A - RC, 0)."""
    y = p[:, 1]
    cap = y < -A  # on the bottom cap: RC * angle from the pole
    d = np.pi * RC / 2 + (y + A)
    cos = np.clip(-(y[cap] + A) / RC, -1, 1)
    d[cap] = RC * np.arccos(cos)
    top = y > A
    d[top] = np.pi * RC / 2 + 2 * A + RC * np.arcsin(np.clip((y[top] - A) / RC, -1, 1))
    return d


def test_point_cloud_heat_distances_on_a_sphere_are_great_circle_distances():
    """Within the point-cloud heat method's own accuracy at 2,000 points (it reads about 2% short)."""
    p = sphere_cloud(2000)
    d = heat_distances(p, np.array([0, 1]))
    for row, src in zip(d, (0, 1), strict=True):
        truth = R * np.arccos(np.clip(p @ p[src] / R**2, -1, 1))
        err = np.abs(row - truth)
        assert err.mean() < 0.05 * R and err.max() < 0.12 * R, (err.mean(), err.max())


def test_point_cloud_labels_on_a_sphere_switch_at_the_equator():
    p = sphere_cloud(2000, seed=1)
    lab = cloud_labels(p, np.array([[0, -0.5 * R, 0], [0, 0.5 * R, 0]]))
    wrong = lab.labels != (p[:, 1] > 0)
    assert np.abs(p[wrong, 1]).max(initial=0) < 0.05 * R, np.abs(p[wrong, 1]).max()
    assert wrong.mean() < 0.02
    # each proxy is the observed point nearest its joint: near the poles
    np.testing.assert_allclose(np.abs(p[lab.proxies, 1]), R, atol=0.02 * R)
    np.testing.assert_allclose(lab.proxy_distance, 0.5 * R, atol=0.02 * R)


def test_a_cloud_too_sparse_for_the_heat_solver_is_labelled_by_euclidean_distance():
    """20 points (fewer than the solver's neighbour graph needs, as a tiny depth image gives): no error, and the
    labels are those of the nearest proxy."""
    p = sphere_cloud(20, seed=2)
    joints = np.array([[0, -0.5 * R, 0], [0, 0.5 * R, 0]])
    lab = cloud_labels(p, joints)
    d = np.linalg.norm(p[None] - p[lab.proxies][:, None], axis=-1)
    np.testing.assert_array_equal(lab.labels, np.argmin(d, axis=0))
    assert set(lab.labels.tolist()) == {0, 1}


def test_point_cloud_labels_on_a_capsule_switch_at_the_mid_plane_and_distances_are_exact():
    rng = np.random.default_rng(2)
    p = sample_surface(capsule_mesh().vertices, capsule_mesh().faces, 3000, rng).points
    joints = np.array([[0, -A - 0.5 * RC, 0], [0, A + 0.5 * RC, 0]])  # on the axis, past the caps' centres
    lab = cloud_labels(p, joints)
    np.testing.assert_allclose(np.abs(p[lab.proxies, 1]), A + RC, atol=0.01)  # the poles
    wrong = lab.labels != (p[:, 1] > 0)
    assert np.abs(p[wrong, 1]).max(initial=0) < 0.02 and wrong.mean() < 0.01
    bottom = int(np.argmin(p[:, 1]))
    err = np.abs(heat_distances(p, np.array([bottom]))[0] - capsule_pole_distance(p))
    assert err.mean() < 0.01 and err.max() < 0.04, (err.mean(), err.max())


def test_pca_normals_on_a_sphere_point_outward():
    p = sphere_cloud(3000, seed=3)
    pca = pca_normals(p)
    n = orient_outward(p, pca.normals, np.zeros((1, 3)), [-1])
    cos = np.einsum("ni,ni->n", n, p / R)
    assert cos.min() > 0.98, cos.min()
    assert np.median(pca.variation) < 0.005
    q = normal_quality(p, n, pca.variation, np.zeros((1, 3)), [-1])
    assert q[1] == 0 and q[2] == 0
    # flipped (inward) normals are what the quality check counts
    q_in = normal_quality(p, -n, pca.variation, np.zeros((1, 3)), [-1])
    assert q_in[2] == 1.0


def test_pieces_are_solved_apart_and_fragments_take_the_nearest_label():
    """Two spheres 2 m apart, each with its own joint, plus a 20-point fragment: the heat solver given both at
    once returns a constant on the piece no heat reaches; per piece every point gets its sphere's joint."""
    a, b = sphere_cloud(800, seed=4), sphere_cloud(800, seed=5) + [2.0, 0, 0]
    fragment = np.random.default_rng(6).normal(scale=0.005, size=(20, 3)) + [2.0, 0.7, 0]
    p = np.concatenate([a, b, fragment])
    piece = pieces(p)
    assert len(np.unique(piece[:800])) == 1 and len(np.unique(piece[800:1600])) == 1
    assert piece[0] != piece[800] and len(np.unique(piece)) == 3
    lab = cloud_labels(p, np.array([[0, 0, 0], [2.0, 0, 0]]))
    assert (lab.labels[:800] == 0).all() and (lab.labels[800:] == 1).all()


def test_observe_frame_draws_samples_from_the_observation_and_estimates_missing_normals():
    rng = np.random.default_rng(7)
    p = sphere_cloud(1500, seed=8)
    joints, parents = np.zeros((1, 3)), [-1]
    obs = observe_frame(p, np.zeros((0, 3), int), None, joints, parents, 1000, rng)
    assert obs.source == SOURCE_PCA and obs.count == 1500
    assert len(np.unique(obs.points, axis=0)) == 1000  # drawn without replacement from the observed points
    assert np.isin(obs.points.view("f8,f8,f8"), p.view("f8,f8,f8")).all()
    assert np.einsum("ni,ni->n", obs.normals, obs.points / R).min() > 0.98
    given = observe_frame(p, np.zeros((0, 3), int), p / R, joints, parents, 3000, rng)  # more samples than points
    assert given.source == SOURCE_GIVEN and len(given.points) == 3000
    np.testing.assert_allclose(given.normals, given.points / R, atol=1e-12)
    scan = capsule_mesh()
    obs = observe_frame(scan.vertices, scan.faces, None, np.array([[0, -A, 0], [0, A, 0]]), [-1, 0], 2000, rng)
    assert obs.source == SOURCE_MESH and np.all(np.abs(obs.points[:, 1]) <= A + RC + 1e-9)


# ------------------------------------------------------------------------------------------------ generic format


def _worm_scan(holes: bool) -> trimesh.Trimesh:
    """The capsule cut into two pieces at the mid-plane (a band of faces removed), with holes punched in the
    lower piece, plus a small floating fragment: an open, multi-piece raw scan."""
    m = capsule_mesh()
    c = m.triangles_center
    keep = np.abs(c[:, 1]) > 0.03
    if holes:
        keep &= ~((np.abs(c[:, 1] + 0.15) < 0.03) & (c[:, 2] > 0))
    m = trimesh.Trimesh(m.vertices, m.faces[keep], process=False)
    frag = trimesh.creation.icosphere(1, radius=0.01)
    frag.apply_translation([0.3, 0.0, 0.0])
    return trimesh.util.concatenate([m, frag])


@pytest.fixture(scope="module")
def observed_root(tmp_path_factory):
    """A two-joint capsule creature whose frames are a PLY cloud with normals, one without, and a raw scan in two
    pieces with holes; the third frame of the cloud sequence has its top joint 0.5 m off the surface."""
    root = tmp_path_factory.mktemp("observed")
    joints = np.array([[0, -A - 0.5 * RC, 0], [0, A + 0.5 * RC, 0]])
    (root / "subjects").mkdir()
    np.savez(root / "subjects" / "pill.npz", rest_joints=joints)
    rng = np.random.default_rng(9)
    mesh = capsule_mesh()
    for seq, kind in (("clouds", "normals"), ("bare", "bare"), ("scans", "scan")):
        folder = root / "sequences" / "pill" / seq
        jt = np.tile(np.eye(4), (3, 2, 1, 1))
        jt[:, :, :3, 3] = joints
        if seq == "clouds":
            jt[2, 1, :3, 3] += [0.5, 0, 0]
        (folder / "points").mkdir(parents=True)
        np.savez(folder / "skeleton.npz", names=np.array(["low", "high"]), parents=np.array([-1, 0]),
                 joint_transforms=jt)
        for t in range(3):
            path = folder / "points" / f"{t:03d}.ply"
            if kind == "scan":
                _worm_scan(holes=t > 0).export(path)
                continue
            s = sample_surface(mesh.vertices, mesh.faces, 1500, rng)
            write_point_ply(path, s.points, s.normals if kind == "normals" else None)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"dataset": "pills", "sequences": [
        {"subject": "pill", "name": "clouds", "split": "train"}, {"subject": "pill", "name": "bare", "split": "train"},
        {"subject": "pill", "name": "scans", "split": "test"}]}))
    return root


def test_observed_frames_are_read_as_clouds_and_scans(observed_root):
    reader = open_reader("generic", observed_root)
    assert reader.observed and reader.subject("pill").rest_vertices is None
    frames = list(reader)
    kinds = [(f.sequence, len(f.faces) > 0, f.normals is not None) for f in frames]
    assert kinds == [("clouds", False, True)] * 3 + [("bare", False, False)] * 3 + [("scans", True, False)] * 3
    np.testing.assert_allclose(np.linalg.norm(frames[0].normals, axis=1), 1, atol=1e-5)


def test_point_clouds_and_a_raw_scan_in_two_pieces_with_holes_go_into_stores(observed_root, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["preprocess", "--dataset", "generic", "--root", str(observed_root),
                                       "--out", str(out), "--points", "800", "--workers", "1"])
    assert result.exit_code == 0, result.output
    # the sanity check names the frame whose joint has no surface near it
    assert "pill/clouds/2: joint high has no observed surface within 0.2 m" in result.output
    assert "pill/clouds/0: joint" not in result.output
    for split, sources in (("train", [SOURCE_GIVEN] * 3 + [SOURCE_PCA] * 3), ("test", [SOURCE_MESH] * 3)):
        group = open_group(out / f"{split}.zarr")
        rep = validate(group)
        assert rep.ok, rep.problems
        assert group.attrs["sections"] == ["train", "observed"]
        assert "PointCloudHeatSolver" in group.attrs["geodesic_labels"]
        np.testing.assert_array_equal(group["observed/normal_source"][:], sources)
        points, labels = group["surface/points"][:], group["surface/labels"][:]
        normals = group["surface/normals"][:].astype(np.float32)
        for k in range(len(points)):
            if split == "train" and k == 2:
                continue  # the frame whose top joint is off the surface
            p = points[k] - [0, A + 0.5 * RC, 0]  # the canonical frame has the root joint ("low") at the origin
            wrong = labels[k] != (p[:, 1] > 0)
            assert np.abs(p[wrong, 1]).max(initial=0) < 0.05, (split, k)
            # outward: away from the axis on the cylinder, away from the cap centre on the caps
            centre = np.clip(p[:, 1], -A, A)
            radial = p - np.stack([np.zeros_like(centre), centre, np.zeros_like(centre)], axis=1)
            cos = np.einsum("ni,ni->n", normals[k], radial / np.linalg.norm(radial, axis=1, keepdims=True))
            on_body = np.linalg.norm(radial, axis=1) > 0.09  # not the floating fragment
            assert np.mean(cos[on_body] > 0.9) > 0.97, (split, k, np.mean(cos[on_body] > 0.9))
        quality = group["observed/normal_quality"][:]
        d = group["observed/proxy_distance"][:]
        if split == "train":  # frame 2's bone leaves the body: its (correct) normals face that bone in places
            assert d[2, 1] > 0.4 and np.delete(d, 2, axis=0).max() < 0.06
            assert quality[2, 2] > 0.1
            quality = np.delete(quality, 2, axis=0)
        assert (quality[:, 2] < 0.02).all() and (quality[:, 0] < 0.01).all()


def test_per_template_labels_are_refused_for_observed_frames(observed_root, tmp_path):
    result = CliRunner().invoke(main, ["preprocess", "--dataset", "generic", "--root", str(observed_root),
                                       "--out", str(tmp_path / "o"), "--points", "200", "--workers", "1",
                                       "--geodesics", "per-template"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "labelled per frame: use --geodesics per-frame" in result.output


def test_a_bad_point_cloud_is_one_line_naming_the_file_and_frame(observed_root, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(observed_root, copy)
    bad = copy / "sequences" / "pill" / "bare" / "points" / "001.ply"
    bad.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                   "end_header\n0 0 nan\n1 1 1\n")
    empty = copy / "sequences" / "pill" / "scans" / "points" / "002.ply"
    empty.write_bytes(b"")
    result = CliRunner().invoke(main, ["preprocess", "--dataset", "generic", "--root", str(copy), "--out",
                                       str(tmp_path / "o"), "--points", "200", "--workers", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"failed: {bad}: " in result.output and "first pill/bare/1)" in result.output, result.output
    assert "vertices has" in result.output and "NaN values" in result.output
    assert str(empty) in result.output and "pill/scans/2" in result.output
    check = CliRunner().invoke(main, ["manifest", "check", "--dataset", "generic", "--root", str(copy)])
    assert check.exit_code == 1 and str(empty) in check.output and "Traceback" not in check.output
