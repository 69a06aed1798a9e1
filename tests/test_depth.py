"""The depth-sensor stage on spheres, whose answers are known: measured points lie on the sphere within
the noise model's bound and only on the cap the camera sees, grazing pixels drop out as the model says, depth
jumps lose their pixels, depths are quantised, normals come from the depth image; then depth training stores
built from a reader and from a mesh store (the same bytes), and ``hipnet-data depth``."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from synthetic import BallsReader

from hipnet.cli.data import main
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.runner.depthstores import build_depth_store
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.stages.depth import DepthSensor, apply_sensor, cast, render_depth, rig
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group

R = 0.3
SENSOR = DepthSensor(views=1, width=128, height=128, distance=1.2)


@pytest.fixture(scope="module")
def sphere():
    m = trimesh.creation.icosphere(5, radius=R)
    flat = R - np.abs(np.einsum("fi,fi->f", m.face_normals, m.triangles_center)).min()  # faces inside the sphere
    return m, flat


def _angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.einsum("ni,ni->n", a, b), -1, 1)))


def test_depth_points_lie_on_the_sphere_within_the_noise_bound_on_the_visible_cap_only(sphere):
    mesh, flat = sphere
    view = render_depth(mesh.vertices, mesh.faces, SENSOR, np.random.default_rng(0))
    assert len(view.points) > 1500
    r = np.linalg.norm(view.points, axis=1)
    bound = SENSOR.noise_clip * SENSOR.sigma(SENSOR.distance) + SENSOR.quantum / 2 + flat
    assert np.abs(r - R).max() <= bound, (np.abs(r - R).max(), bound)
    assert np.abs(r - R).max() > 0.3 * bound  # the noise is there
    # the cap a camera at distance D sees: p . c_hat >= R^2 / D (up to the noise)
    camera = rig(SENSOR)[0].centre
    assert np.allclose(camera, [0, 0, SENSOR.distance])
    height = view.points @ camera / SENSOR.distance
    assert height.min() >= R**2 / SENSOR.distance - bound
    four = render_depth(mesh.vertices, mesh.faces, replace(SENSOR, views=4), np.random.default_rng(0))
    assert (four.points[:, 2] < -0.25).any() and (four.points[:, 0] < -0.25).any()  # behind and to the side too


def test_a_world_rig_sees_the_side_each_heading_turns_to_it(sphere):
    """A body rig always sees the canonical front (+Z); a world rig sees the cap facing the world's +Z, which for
    a frame turned by yaw is the canonical direction R^T e_z; with no turn the two rigs see the same."""
    from hipnet.pipeline.core.kinematics import axis_angle_to_matrix
    from hipnet.pipeline.runner.depthstores import observe

    mesh, flat = sphere
    bound = SENSOR.noise_clip * SENSOR.sigma(SENSOR.distance) + SENSOR.quantum / 2 + flat
    world = replace(SENSOR, rig="world")
    for yaw in (0.7, np.pi):
        turn = axis_angle_to_matrix(np.array([0.0, yaw, 0.0]))
        body_view = observe(mesh.vertices, mesh.faces, SENSOR, np.random.default_rng(0), turn)
        world_view = observe(mesh.vertices, mesh.faces, world, np.random.default_rng(0), turn)
        assert (body_view.points @ [0, 0, 1]).min() >= R**2 / SENSOR.distance - bound
        towards = turn.T @ [0, 0, 1]  # the world camera's direction in the canonical frame
        assert (world_view.points @ towards).min() >= R**2 / SENSOR.distance - bound
        # normals still turned towards the camera, spread over the cap as the body rig's
        assert abs((world_view.normals @ towards).mean() - (body_view.normals @ [0, 0, 1]).mean()) < 0.02
    assert (world_view.points[:, 2] < 0).all()  # half a turn: the canonical back only
    same = observe(mesh.vertices, mesh.faces, world, np.random.default_rng(0), np.eye(3))
    np.testing.assert_allclose(same.points, render_depth(mesh.vertices, mesh.faces, SENSOR,
                                                          np.random.default_rng(0)).points, atol=1e-12)
    with pytest.raises(ValueError, match="rig must be body or world, got 'tripod'"):
        replace(SENSOR, rig="tripod")


def test_normals_come_from_the_depth_image(sphere):
    mesh, _ = sphere
    clean = replace(SENSOR, noise_a=0.0, noise_b=0.0, quantum=0.0)
    exact = render_depth(mesh.vertices, mesh.faces, clean, np.random.default_rng(1))
    noisy = render_depth(mesh.vertices, mesh.faces, SENSOR, np.random.default_rng(1))
    err_clean = _angles(exact.normals, exact.points / np.linalg.norm(exact.points, axis=1, keepdims=True))
    err_noisy = _angles(noisy.normals, noisy.points / np.linalg.norm(noisy.points, axis=1, keepdims=True))
    assert np.median(err_clean) < 1.5 and err_clean.max() < 10, (np.median(err_clean), err_clean.max())
    assert 2 * np.median(err_clean) < np.median(err_noisy) < 15  # the image's noise shows in them, the mesh's would not
    camera = rig(SENSOR)[0].centre
    assert (np.einsum("ni,ni->n", noisy.normals, camera - noisy.points) > 0).all()  # towards the camera


def test_grazing_pixels_drop_out_as_the_model_says(sphere):
    mesh, _ = sphere
    camera = rig(SENSOR)[0]
    depth, true_normals = cast(mesh.vertices, mesh.faces, camera)
    rays = camera.rays / np.linalg.norm(camera.rays, axis=-1, keepdims=True)
    incidence = np.abs(np.einsum("hwi,hwi->hw", true_normals, rays @ camera.axes.T))
    z = apply_sensor(depth, incidence, SENSOR, np.random.default_rng(2))
    hit = np.isfinite(depth)
    angle = np.degrees(np.arccos(np.clip(incidence, 0, 1)))
    measured = np.isfinite(z)
    assert measured[hit & (angle < SENSOR.grazing_start_deg)].all()
    assert not measured[hit & (angle > SENSOR.grazing_end_deg)].any()
    ramp = hit & (angle > SENSOR.grazing_start_deg) & (angle < SENSOR.grazing_end_deg - 2)
    c0, c1 = np.cos(np.radians([SENSOR.grazing_start_deg, SENSOR.grazing_end_deg]))
    expected = np.clip((incidence[ramp] - c1) / (c0 - c1), 0, 1).mean()
    assert ramp.sum() > 200 and abs(measured[ramp].mean() - expected) < 0.08, (measured[ramp].mean(), expected)


def test_depth_jumps_lose_their_pixels_and_depths_are_quantised():
    depth = np.full((6, 8), 1.0)
    depth[:, 4:] = 1.5  # a step of 0.5 m between columns 3 and 4
    depth[0, 0] = np.inf  # background
    sensor = replace(SENSOR, noise_clip=0.0)  # noise off: e clipped to 0
    z = apply_sensor(depth + 0.0004, np.ones_like(depth), sensor, np.random.default_rng(3))
    lost = ~np.isfinite(z)
    expected = np.zeros_like(lost)
    expected[:, 3:5] = True  # both sides of the step
    expected[0, 0] = expected[0, 1] = expected[1, 0] = True  # the background pixel and its neighbours
    np.testing.assert_array_equal(lost, expected)
    np.testing.assert_allclose(z[~lost], np.where(depth[~lost] < 1.2, 1.0, 1.5), atol=1e-12)  # 1 mm steps


# ------------------------------------------------------------------------------------------------ stores

SMALL = DepthSensor(views=2, width=64, height=64, distance=1.0)
CFG = PreprocessConfig(surface_points=400, eval_points=300, shard_frames=2)


def test_depth_stores_from_a_reader_and_from_a_mesh_store_are_equal(tmp_path):
    summary = build_depth_store(BallsReader(frames=2, subdivisions=3), tmp_path / "a", SMALL, CFG)
    assert summary.complete and not summary.failures, summary.failures
    group = open_group(tmp_path / "a" / "train.zarr")
    rep = validate(group)
    assert rep.ok, rep.problems
    assert group.attrs["sections"] == ["train", "observed"] and group.attrs["depth_sensor"] == asdict(SMALL)
    np.testing.assert_array_equal(group["observed/normal_source"][:], 0)  # given with the frame: the image's
    points = group["surface/points"][:]
    radius = np.array([BallsReader.RADII[s] for s in ("small", "small", "large", "large")])
    bound = SMALL.noise_clip * SMALL.sigma(SMALL.distance) + SMALL.quantum + 0.01  # 0.01: the coarse ball's faces
    assert np.abs(np.linalg.norm(points, axis=2) - radius[:, None]).max() < bound
    # the same frames from a store holding the balls' meshes give the same bytes
    preprocess_split(BallsReader(frames=2, subdivisions=3), tmp_path / "meshes", replace(CFG, eval_on_train=True),
                     "train")
    build_depth_store(tmp_path / "meshes" / "train.zarr", tmp_path / "b", SMALL, CFG)
    other = open_group(tmp_path / "b" / "train.zarr")
    for name in ("surface/points", "surface/normals", "surface/labels", "observed/proxy_distance"):
        np.testing.assert_array_equal(other[name][:], group[name][:], err_msg=name)


def test_hipnet_data_depth_front_only_and_its_refusals(tmp_path):
    preprocess_split(BallsReader(frames=2, subdivisions=3), tmp_path / "meshes", replace(CFG, eval_on_train=True),
                     "train")
    store = tmp_path / "meshes" / "train.zarr"
    args = ["depth", "--store", str(store), "--out", str(tmp_path / "d"), "--width", "64", "--height", "64",
            "--distance", "1.0", "--points", "300", "--workers", "1"]
    result = CliRunner().invoke(main, [*args, "--front-only"])
    assert result.exit_code == 0, result.output
    group = open_group(tmp_path / "d" / "train.zarr")
    assert group.attrs["depth_sensor"]["views"] == 1
    points = group["surface/points"][:]
    radius = np.array([0.15, 0.15, 0.25, 0.25])[:, None]
    assert (points[..., 2] > radius**2 / 1.0 - 0.02).all()  # the front cap only (the body faces +Z)
    again = CliRunner().invoke(main, [*args, "--views", "3"])  # another sensor into the same store
    assert again.exit_code == 1 and "depth_sensor" in again.output and "Traceback" not in again.output
    preprocess_split(BallsReader(frames=2, subdivisions=3), tmp_path / "plain", CFG, "train")
    bare = CliRunner().invoke(main, ["depth", "--store", str(tmp_path / "plain" / "train.zarr"), "--out",
                                     str(tmp_path / "e"), "--workers", "1"])
    assert bare.exit_code == 1 and "Traceback" not in bare.output
    assert f"{tmp_path / 'plain' / 'train.zarr'}: the store holds no meshes" in bare.output
    far = CliRunner().invoke(main, [*args[:4], str(tmp_path / "f"), "--distance", "20", "--max-depth", "6",
                                    "--workers", "1"])
    assert far.exit_code == 1 and "Traceback" not in far.output
    assert "small/still/0" in far.output and "no depth pixel survived the sensor model" in far.output
