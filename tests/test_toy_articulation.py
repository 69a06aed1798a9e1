"""The toy articulation benchmark (bench/toy_articulation.py): its closed-form SDF against a brute-force distance to
densely sampled capsule surfaces, its training samples, and a tiny run in which the ``fast`` formulation learns the
articulated shape (beats the initial sphere and the pose-agnostic mean shape on the forearm) in a few seconds."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from bench_scripts import load_bench
from scipy.spatial import cKDTree


@pytest.fixture(scope="module")
def toy():
    return load_bench("toy_articulation")


@pytest.fixture(scope="module")
def geometry(toy):
    return sys.modules["bench._toy_geometry"]  # imported by the script: the toy's shape, samples and poses


def test_toy_sdf_matches_brute_force_distance(toy, geometry):
    rng = np.random.default_rng(0)
    for pose in [toy.make_pose(-88, 0, 15), geometry.random_poses(1, seed=5)[0]]:
        # the union's surface, densely: every capsule's surface minus what lies inside another capsule
        surface, _, _ = geometry.sample_surface(pose, 60_000, rng)
        q = np.concatenate([rng.uniform(-0.6, 1.1, size=(1500, 3)),
                            surface[rng.integers(0, len(surface), 1500)] + rng.normal(0, 0.05, (1500, 3))])
        d_bf = cKDTree(surface).query(q)[0]
        sdf = toy.toy_sdf(q, pose)
        outside = sdf > 0
        assert outside.sum() > 1000 and (~outside).sum() > 300
        # the brute force is exact up to the sample spacing (about 4 mm for 60k samples of this toy's 0.8 m2)
        err = np.abs(d_bf[outside] - sdf[outside])
        assert err.max() < 0.012 and np.median(err) < 0.003
        # inside, min over the capsules bounds the distance to the union's surface from below (exact away from the
        # overlaps); the occupancy itself is exact
        assert np.all(-sdf[~outside] <= d_bf[~outside] + 0.012)
        assert np.median(np.abs(d_bf[~outside] + sdf[~outside])) < 0.003
        # and far from the surface the field is not trivially small
        assert sdf.max() > 0.3


def test_toy_samples_lie_on_their_capsule_with_outward_normals(toy, geometry):
    pose = geometry.random_poses(1, seed=7)[0]
    pts, nrm, lab = geometry.sample_surface(pose, 3000, np.random.default_rng(1))
    parts = geometry.part_sdfs(pts.astype(np.float64), pose)
    assert np.abs(parts[np.arange(len(pts)), lab]).max() < 1e-5
    assert parts.min(1).min() > -1e-5  # nothing inside another capsule
    assert set(np.unique(lab)) == {0, 1, 2}
    eps = 1e-4  # the normal is the SDF's gradient
    grad = np.stack([(toy.toy_sdf(pts + eps * e, pose) - toy.toy_sdf(pts - eps * e, pose)) / (2 * eps)
                     for e in np.eye(3)], axis=1)
    assert np.median(np.einsum("pi,pi->p", grad, nrm)) > 0.999
    # the joint transforms place each capsule: its start is the joint position, its axis the rotated +x
    t = pose.transforms
    for j in (1, 2):
        a, b, _ = pose.capsules[j]
        np.testing.assert_allclose(t[j, :3, 3], a, atol=1e-12)
        np.testing.assert_allclose(t[j, :3, :3] @ [1, 0, 0], (b - a) / np.linalg.norm(b - a), atol=1e-12)


def test_fast_formulation_learns_the_toy(toy, monkeypatch):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setattr(toy, "POINTS", 150)
    monkeypatch.setattr(toy, "EIKONAL", 300)
    train = toy.ToyData.build(24, 600, seed=1)
    ev = toy.EvalSet.build(toy.ToyData.build(4, 600, seed=2), 600, seed=3)
    fast = next(v for v in toy.variants(60) if v.name == "fast")
    _, curve = toy.train_variant(fast, train, ev, steps=60, eval_every=60, log=lambda *a, **k: None)
    start, end = curve[0], curve[-1]
    baseline = toy.mean_shape_baseline(train, ev)
    assert end["uniform_iou"] > start["uniform_iou"] + 0.3, curve
    assert end["near_abs_err"] < 0.5 * start["near_abs_err"], curve
    assert end["uniform_iou"] > baseline["uniform_iou"], (curve, baseline)
    # it articulates: the forearm, which a pose-agnostic shape misses, is found
    assert end["part_near_iou"]["forearm"] > baseline["part_near_iou"]["forearm"] + 0.3, (curve, baseline)
