"""Applications: test-time fitting, front-only visibility (analytic spheres), the code Gaussian, retargeting and
interpolation, and the three commands end to end on a tiny model trained on two balls of different radii."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner
from synthetic import BallsReader

from hipnet.model.apps import (
    CodeGaussian,
    fit_code,
    front_visible,
    interpolate_phi,
    interpolate_rotations,
    posed_mesh,
    retarget,
    surface_loss,
)
from hipnet.model.config import PRESETS
from hipnet.model.train import load_checkpoint
from hipnet.pipeline.core.kinematics import axis_angle_to_matrix, forward_kinematics
from hipnet.pipeline.core.skeleton import SMPL22

RADII = BallsReader.RADII


def _frame_of(store, name):
    return next(i for i in range(store.n_frames) if store.frame_key(i).startswith(f"{name}/"))


def test_fitting_recovers_a_subject_better_than_the_mean_code(balls):
    from hipnet.model.fitting import observed_points, score_code

    store, _, model = balls
    i = _frame_of(store, "large")
    jt = store.read("pose/joint_transforms", i)
    points = observed_points(store, i, 1000, False, seed=0)
    mean = model.codes.weight.detach().mean(0)
    fit = fit_code(model, points, jt, iters=100, lr=1e-2)
    x, t = torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(jt)
    with torch.no_grad():
        before, after = surface_loss(model, x, t, mean).item(), surface_loss(model, x, t, fit.code).item()
    at_mean, fitted = score_code(model, store, i, mean, "cpu"), score_code(model, store, i, fit.code, "cpu")
    print(f"surface loss {before:.4f} -> {after:.4f}; uniform IoU {at_mean['uniform_iou']:.3f} -> "
          f"{fitted['uniform_iou']:.3f}")
    assert after < 0.5 * before and fit.losses[-1] == pytest.approx(after, rel=1e-4)
    assert fitted["uniform_iou"] > at_mean["uniform_iou"] + 0.05 and fitted["uniform_iou"] > 0.85
    assert all(p.requires_grad for p in model.parameters())  # the network is handed back unfrozen


def _mesh_samples(mesh, n, seed=0):
    """Points on the mesh's own faces (as observed points are) with their face normals."""
    p, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return p, mesh.face_normals[face]


def test_front_only_keeps_the_cap_a_camera_sees_on_a_sphere():
    r, cam = 0.5, np.array([0.0, 0.0, 3.0])
    m = trimesh.creation.icosphere(6, radius=r)
    p, n = _mesh_samples(m, 20_000)
    seen = front_visible(m.vertices, m.faces, p, n, cam)
    # a pinhole at distance D sees exactly the cap z > r^2 / D
    exact = p[:, 2] > r * r / cam[2]
    clear = np.abs(p[:, 2] - r * r / cam[2]) > 0.01
    assert 0.3 < exact.mean() < 0.5 and np.array_equal(seen[clear], exact[clear])


def test_front_only_hides_a_sphere_behind_another():
    r, cam = 0.3, np.array([0.0, 0.0, 4.0])
    a = trimesh.creation.icosphere(5, radius=r)
    b = trimesh.creation.icosphere(5, radius=r).apply_translation([0.15, 0, -1.0])
    mesh = trimesh.util.concatenate([a, b])
    p, n = _mesh_samples(b, 20_000, seed=1)  # points on the back sphere
    seen = front_visible(mesh.vertices, mesh.faces, p, n, cam)
    facing = np.einsum("pi,pi->p", n, cam - p) > 0
    # occluded: the segment camera -> p passes within r of the front sphere's centre (the origin)
    d = (p - cam) / np.linalg.norm(p - cam, axis=1, keepdims=True)
    s = np.clip(-(cam @ d.T), 0, np.linalg.norm(p - cam, axis=1))
    miss = np.linalg.norm(cam + s[:, None] * d, axis=1)
    exact = facing & (miss > r)
    clear = (np.abs(miss - r) > 0.01) & (np.abs(np.einsum("pi,pi->p", n, cam - p)) > 0.01)
    assert exact[clear].sum() > 100 and (facing & (miss < r))[clear].sum() > 100  # both cases really occur
    assert np.array_equal(seen[clear], exact[clear])


def test_code_gaussian_is_full_positive_definite_and_has_the_codes_mean():
    codes = np.random.default_rng(0).normal(size=(12, 32)) * np.linspace(0.05, 0.5, 32)  # fewer codes than dims
    g = CodeGaussian.fit(codes)
    assert np.linalg.matrix_rank(np.cov(codes, rowvar=False)) == 11  # the sample covariance alone is singular
    assert np.all(np.linalg.eigvalsh(g.cov) > 0) and np.linalg.matrix_rank(g.cov) == 32
    off = g.cov[~np.eye(32, dtype=bool)]
    assert np.abs(off).max() > 0.01  # full, not diagonal
    samples = g.sample(20_000, seed=1)
    sd = np.sqrt(np.diag(g.cov))
    assert np.all(np.abs(samples.mean(0) - codes.mean(0)) < 5 * sd / np.sqrt(20_000))
    np.testing.assert_allclose(np.cov(samples, rowvar=False), g.cov, atol=0.05 * sd.max() ** 2)
    with pytest.raises(ValueError, match="at least 2"):
        CodeGaussian.fit(codes[:1])


def _random_pose(rest, seed):
    rot = axis_angle_to_matrix(np.random.default_rng(seed).normal(size=(22, 3)) * 0.4)
    return forward_kinematics(rot, rest, SMPL22.parents, translation=np.array([0.1, 0.9, -0.2]) - rest[0])


def test_retargeting_keeps_rotations_and_takes_the_target_bones():
    rng = np.random.default_rng(0)
    rest_a = rng.normal(size=(22, 3)) * 0.2
    rest_b = rest_a * 1.3
    jt = _random_pose(rest_a, 1)
    np.testing.assert_allclose(retarget(jt, SMPL22.parents, rest_a), jt, atol=1e-5)  # own skeleton: unchanged
    moved = retarget(jt, SMPL22.parents, rest_b)
    np.testing.assert_allclose(moved[:, :3, :3], jt[:, :3, :3], atol=1e-5)
    for j, p in enumerate(SMPL22.parents[1:], start=1):
        bone = np.linalg.norm(moved[j, :3, 3] - moved[p, :3, 3])
        assert bone == pytest.approx(np.linalg.norm(rest_b[j] - rest_b[p]), rel=1e-4)


def test_interpolation_endpoints_are_the_keyframes():
    from hipnet.model.hipnet import HIPNet

    rest = np.random.default_rng(2).normal(size=(22, 3)) * 0.2
    a, b = _random_pose(rest, 3), _random_pose(rest, 4)
    t = np.linspace(0, 1, 5)
    naive = interpolate_rotations(a, b, SMPL22.parents, t)
    np.testing.assert_allclose(naive[0], a, atol=1e-6)
    np.testing.assert_allclose(naive[-1], b, atol=1e-6)
    bones = lambda jt: [np.linalg.norm(jt[j, :3, 3] - jt[p, :3, 3]) for j, p in enumerate(SMPL22.parents) if p >= 0]  # noqa: E731
    np.testing.assert_allclose(bones(naive[2]), bones(a), rtol=1e-6)  # in-betweens keep the skeleton rigid
    model = HIPNet(SMPL22, 3, PRESETS["small"].model)
    with torch.no_grad():
        for p in model.pose_encoder.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
        phis = interpolate_phi(model, a, b, t)
        ends = model.encode_pose(torch.as_tensor(np.stack([a, b]), dtype=torch.float32))
    torch.testing.assert_close(phis[0], ends[0])
    torch.testing.assert_close(phis[-1], ends[1])
    torch.testing.assert_close(phis[2], ends.mean(0))


def test_animate_with_a_subjects_own_motion_reproduces_its_reconstruction(balls, tmp_path):
    from hipnet.cli.apps import animate_main

    store, run, model = balls
    result = CliRunner().invoke(animate_main, ["--checkpoint", str(run / "ckpt.pt"), "--subject", "large",
                                               "--motion", f"{store.path}:large/still", "--resolution", "32",
                                               "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("large_*.ply"))) == 3 and (tmp_path / "retarget.png").exists()
    i = _frame_of(store, "large")
    code = model.codes.weight.detach()[load_checkpoint(run / "ckpt.pt")["subjects"].index("large")]
    direct = posed_mesh(model, store.read("pose/joint_transforms", i), code, 32)
    world = store.read("pose/world_from_canonical", i)
    direct_world = direct.vertices @ world[:3, :3].T + world[:3, 3]
    got = trimesh.load(tmp_path / "large_0000.ply", process=False)
    np.testing.assert_allclose(np.asarray(got.vertices), direct_world, atol=1e-5)


def test_fit_sample_animate_commands_end_to_end(balls, tmp_path):
    from hipnet.cli.apps import animate_main, fit_main, sample_main

    store, run, _ = balls
    ck = ["--checkpoint", str(run / "ckpt.pt"), "--resolution", "32"]
    r = CliRunner().invoke(fit_main, [*ck, "--store", str(store.path), "--frame", "large/still/0", "--n-points", "500",
                                      "--front-only", "--iters", "30", "--lr", "1e-2", "--out", str(tmp_path / "fit")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert report["points"] == 500 and report["loss_last"] < report["loss_first"] and 0 <= report["uniform_iou"] <= 1
    assert (tmp_path / "fit" / "mesh.ply").exists() and np.load(tmp_path / "fit" / "code.npy").shape == (4,)
    r = CliRunner().invoke(fit_main, [*ck, "--store", str(store.path), "--n-points", "0", "--out", str(tmp_path / "f0")])
    assert r.exit_code == 0, r.output
    mean = load_checkpoint(run / "ckpt.pt")["model"]["codes.weight"].mean(0).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "f0" / "code.npy"), mean, rtol=1e-6)  # 0 points: the mean code
    r = CliRunner().invoke(sample_main, [*ck, "--n", "3", "--pose", f"{store.path}:0", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "s").glob("sample_*.ply"))) == 3 and (tmp_path / "s" / "samples.png").exists()
    r = CliRunner().invoke(animate_main, [*ck, "--blend", "small", "large", "--steps", "3", "--pose", f"{store.path}:0",
                                          "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    sizes = [np.ptp(trimesh.load(tmp_path / "b" / f"blend_{k:02d}.ply").vertices[:, 0]) for k in range(3)]
    assert sizes[0] < sizes[1] < sizes[2]  # small ball -> large ball
    r = CliRunner().invoke(animate_main, [*ck, "--subject", "small", "--interpolate", f"{store.path}:0",
                                          f"{store.path}:1", "--steps", "3", "--out", str(tmp_path / "i")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "i" / "interpolate.png").exists()
    bad = CliRunner().invoke(animate_main, [*ck, "--subject", "nobody", "--motion", f"{store.path}:large/still"])
    assert bad.exit_code != 0 and "nobody" in bad.output
    bad = CliRunner().invoke(fit_main, [*ck, "--store", str(store.path), "--frame", "large/walk/0"])
    assert bad.exit_code != 0 and "large/walk/0" in bad.output
