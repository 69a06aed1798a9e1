"""HIPNet network and loss: batched vs naive evaluation, geometric initialisation, gradients, overfitting."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hipnet.model.config import PRESETS, ModelConfig, load_config
from hipnet.model.functional import SDFOutput
from hipnet.model.hipnet import HIPNet, naive_forward
from hipnet.model.losses import Batch, hipnet_loss
from hipnet.pipeline.core.skeleton import SMPL22, Skeleton

SMALL = PRESETS["small"].model


def random_pose(n_frames: int, n_joints: int, gen: torch.Generator) -> torch.Tensor:
    from hipnet.pipeline.core.kinematics import axis_angle_to_matrix

    rot = axis_angle_to_matrix(torch.randn(n_frames, n_joints, 3, generator=gen, dtype=torch.float64).numpy() * 0.5)
    jt = torch.eye(4).repeat(n_frames, n_joints, 1, 1)
    jt[:, :, :3, :3] = torch.as_tensor(rot, dtype=torch.float32)
    jt[:, :, :3, 3] = torch.randn(n_frames, n_joints, 3, generator=gen) * 0.3
    return jt


@pytest.mark.parametrize("local_frames, aggregation", [(False, "mean"), (True, "mean"), (True, "softmin")])
def test_batched_network_equals_the_naive_per_joint_loop(local_frames, aggregation):
    gen = torch.Generator().manual_seed(1)
    model = HIPNet(SMPL22, 6, replace(SMALL, local_frames=local_frames, aggregation=aggregation))
    with torch.no_grad():  # move every weight off its initial value (zeros included) so nothing hides
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    x = (torch.rand(3, 50, 3, generator=gen) - 0.5).requires_grad_(True)
    jt, subj = random_pose(3, 22, gen), torch.tensor([0, 5, 2])
    a, pa = model(x, jt, subj)[:2]
    b, pb = naive_forward(model, x, jt, subj)[:2]
    torch.testing.assert_close(pa, pb, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    ga = torch.autograd.grad(a.sum(), x, retain_graph=True)[0]
    gb = torch.autograd.grad(b.sum(), x)[0]
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=0)
    # the parent's output really feeds the child: changing the root changes a child's output
    with torch.no_grad():
        model.subnets.w_point[-1][0].mul_(3.0)
    assert not torch.allclose(model(x, jt, subj)[1][..., 1], pa[..., 1])


def test_geometric_initialisation_is_a_sphere_sdf():
    cfg = PRESETS["paper"].model
    model = HIPNet(SMPL22, 4, cfg)
    gen = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(1, 2000, 3, generator=gen), dim=-1)
    radius = torch.rand(1, 2000, 1, generator=gen) * 0.8 + 0.1
    x = direction * radius
    with torch.no_grad():
        sdf, parts = model(x, random_pose(1, 22, gen), torch.tensor([2]))[:2]
    exact = radius.squeeze(-1) - cfg.sphere_radius
    err = (sdf - exact).abs()
    r = radius.reshape(-1).double()
    slope, intercept = torch.linalg.lstsq(torch.stack([r, torch.ones_like(r)], 1), sdf.reshape(-1, 1).double()).solution
    print(f"geometric init: median |F - (|x| - r)| = {err.median():.4f}, max {err.max():.4f}; "
          f"F ~ {slope.item():.3f} |x| {intercept.item():+.3f}")
    # measured median 0.024, max 0.083 (8 x 256, 22 joints; finite width leaves direction-dependent bumps)
    assert err.median() < 0.04 and err.max() < 0.15
    assert abs(slope.item() - 1) < 0.1 and abs(intercept.item() + cfg.sphere_radius) < 0.05
    # and it does not depend on pose or subject (their weights start at zero)
    with torch.no_grad():
        again = model(x, random_pose(1, 22, gen), torch.tensor([0])).sdf
    torch.testing.assert_close(again, sdf)


def test_gradients_match_finite_differences():
    model = HIPNet(SMPL22, 3, SMALL).double()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.05)
    x = (torch.rand(2, 20, 3, generator=gen, dtype=torch.float64) - 0.5).requires_grad_(True)
    jt, subj = random_pose(2, 22, gen).double(), torch.tensor([1, 2])
    sdf = model(x, jt, subj).sdf
    grad = torch.autograd.grad(sdf.sum(), x)[0]
    eps = 1e-6
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for k in range(3):
            d = torch.zeros_like(x)
            d[..., k] = eps
            fd[..., k] = (model(x + d, jt, subj)[0] - model(x - d, jt, subj)[0]) / (2 * eps)
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda q: model(q, jt, subj)[0], (x[:, :4].detach().requires_grad_(True),))


def capsule_batch(n: int, gen: torch.Generator, frames: int = 1) -> Batch:
    """Points and normals on a capsule along +Y (radius 0.15, segment y in [-0.3, 0.3]), labelled by the nearer of
    two joints at y = -0.15 and y = +0.15; a two-joint skeleton."""
    r, h = 0.15, 0.3
    seg = (torch.rand(frames, n, generator=gen) * 2 - 1) * (h + r)
    direction = torch.nn.functional.normalize(torch.randn(frames, n, 3, generator=gen), dim=-1)
    axis_point = torch.stack([torch.zeros_like(seg), seg.clamp(-h, h), torch.zeros_like(seg)], dim=-1)
    body = seg.abs() <= h
    radial = torch.nn.functional.normalize(direction * torch.tensor([1.0, 0.0, 1.0]), dim=-1)
    cap = direction * torch.stack([torch.ones_like(seg), direction[..., 1].sign() * seg.sign(), torch.ones_like(seg)], -1)
    normal = torch.where(body.unsqueeze(-1), radial, cap)  # cap normals point away from the segment's end
    points = axis_point + r * normal
    labels = (points[..., 1] > 0).long()
    eik = (torch.rand(frames, n, 3, generator=gen) - 0.5) * 1.2
    jt = torch.eye(4).repeat(frames, 2, 1, 1)
    jt[:, 0, 1, 3], jt[:, 1, 1, 3] = -0.15, 0.15
    return Batch(points, normal, labels, eik, jt, torch.zeros(frames, dtype=torch.long))


def test_a_tiny_model_overfits_a_capsule():
    torch.manual_seed(0)
    skeleton = Skeleton(("lower", "upper"), (-1, 0))
    model = HIPNet(skeleton, 1, replace(SMALL, sphere_radius=0.3))  # single subject: no codes
    assert model.codes is None
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(300):
        batch = capsule_batch(512, gen)
        loss, terms = hipnet_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(terms["total"])
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    print(f"capsule overfit: loss {first:.4f} -> {last:.4f}")
    assert last < first / 10
    with torch.no_grad():
        probe = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.3], [0.0, 0.44, 0.0], [0.0, 0.6, 0.0]]])
        sdf = model(probe, batch.joint_transforms, None).sdf
    exact = torch.tensor([-0.15, 0.15, -0.01, 0.15])
    assert (sdf[0, 1:] - exact[1:]).abs().max() < 0.03, sdf  # outside and near the surface: a distance
    assert sdf[0, 0] < -0.05, sdf  # deep inside only the eikonal term constrains it: inside, not exact


def test_loss_terms_are_zero_for_the_exact_sdf():
    """The loss of the analytic SDF of a sphere: surface 0, eikonal 0, normal 0 (subnet terms off)."""

    class Sphere(torch.nn.Module):
        def forward(self, x, jt, subject):
            d = x.norm(dim=-1) - 0.3
            return SDFOutput(d, d.unsqueeze(-1))

    gen = torch.Generator().manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(2, 100, 3, generator=gen), dim=-1)
    batch = Batch(0.3 * n, n, torch.zeros(2, 100, dtype=torch.long), torch.rand(2, 100, 3, generator=gen) + 0.1,
                  torch.eye(4).repeat(2, 1, 1, 1), torch.zeros(2, dtype=torch.long))
    _, terms = hipnet_loss(Sphere(), batch, subnet_losses=True)
    for k in ("surface", "eikonal", "normal", "sub_surface", "sub_normal"):
        assert terms[k] < 1e-6, (k, terms[k])
    shifted = Batch(0.3 * n + torch.tensor([0.05, 0, 0]), *list(batch.__dict__.values())[1:])
    _, terms = hipnet_loss(Sphere(), shifted, subnet_losses=False)
    assert terms["surface"] > 0.01


def test_softmin_aggregation_is_a_smooth_union():
    model = HIPNet(SMPL22, 1, replace(SMALL, aggregation="softmin", softmin_tau=0.01))
    cond = torch.zeros(2, model.cfg.pose_dim)
    equal = torch.full((2, 5, 22), 0.2)  # every part agrees: the union is that value (the MLP residual starts at 0)
    torch.testing.assert_close(model.aggregate(equal, cond), torch.full((2, 5), 0.2))
    parts = torch.rand(2, 5, 22) * 0.5
    parts[..., 7] = -0.1  # one part well inside: the union follows it, within tau * log(J)
    out = model.aggregate(parts, cond)
    assert torch.all(out <= parts.min(-1).values + 0.01 * math.log(22) + 1e-6)
    assert torch.all(out >= parts.min(-1).values - 1e-6)
    with pytest.raises(ValueError, match="aggregation"):
        replace(SMALL, aggregation="max")


def test_distance_term_measures_the_offset_from_the_targets():
    from hipnet.model.data import oriented_distance

    # targets from oriented samples of the sphere |x| = 0.3, for an analytic sphere model: the term is the
    # sampling error only; a model whose sphere is 0.02 larger is off by 0.02 everywhere
    gen = np.random.default_rng(0)
    n = gen.normal(size=(20_000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    queries = gen.uniform(-0.6, 0.6, size=(2, 300, 3)).astype(np.float32)
    targets = np.stack([oriented_distance((0.3 * n).astype(np.float32), n.astype(np.float16), q) for q in queries])

    class Sphere(torch.nn.Module):
        def __init__(self, r):
            super().__init__()
            self.r = r

        def forward(self, x, jt, subject):
            d = x.norm(dim=-1) - self.r
            return SDFOutput(d, d.unsqueeze(-1))

    nt = torch.as_tensor(n[:100], dtype=torch.float32).expand(2, 100, 3)
    batch = Batch(0.3 * nt, nt, torch.zeros(2, 100, dtype=torch.long), torch.as_tensor(queries),
                  torch.eye(4).repeat(2, 1, 1, 1), torch.zeros(2, dtype=torch.long), torch.as_tensor(targets))
    _, exact = hipnet_loss(Sphere(0.3), batch, subnet_losses=False, lambda_sdf=1.0)
    _, larger = hipnet_loss(Sphere(0.32), batch, subnet_losses=False, lambda_sdf=1.0)
    assert exact["sdf"] < 2e-3, exact  # sample spacing of 20k points on the sphere: ~4 mm
    assert abs(larger["sdf"] - 0.02) < 2e-3, larger
    with pytest.raises(ValueError, match="eikonal_sdf"):
        hipnet_loss(Sphere(0.3), replace(batch, eikonal_sdf=None), subnet_losses=False, lambda_sdf=1.0)


def test_a_distance_band_drops_the_wrong_signs_of_a_partial_observation():
    """Only the front cap (z > 0) of the sphere |x| = 0.3 is observed, as from one depth view: a query inside the
    sphere's back half has a cap sample as its nearest one, yet far from it the sign is not to be trusted. With
    ``band`` every target farther than it from the samples is NaN, and the loss's distance term averages the
    others only: for the exact sphere model it stays at the sampling error."""
    from hipnet.model.data import oriented_distance

    gen = np.random.default_rng(1)
    n = gen.normal(size=(20_000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n = n[n[:, 2] > 0]
    near = 0.3 * n[gen.integers(0, len(n), 300)] + gen.normal(0, 0.02, size=(300, 3))
    q = np.concatenate([gen.uniform(-0.6, 0.6, size=(300, 3)), near]).astype(np.float32)
    full = oriented_distance((0.3 * n).astype(np.float32), n, q)
    banded = oriented_distance((0.3 * n).astype(np.float32), n, q, band=0.05)
    true = np.linalg.norm(q, axis=1) - 0.3
    far = np.isnan(banded)
    assert far.any() and (~far).sum() > 50
    np.testing.assert_array_equal(banded[~far], full[~far])
    assert np.abs(full - true).max() > 0.1  # without the band some targets are badly wrong
    assert np.abs(banded[~far] - true[~far]).max() < 0.05  # within it, none is off by more than the band
    assert np.mean(np.sign(banded[~far]) == np.sign(true[~far])) > 0.97

    class Sphere(torch.nn.Module):
        def forward(self, x, jt, subject):
            d = x.norm(dim=-1) - 0.3
            return SDFOutput(d, d.unsqueeze(-1))

    nt = torch.as_tensor(n[:100], dtype=torch.float32)[None]
    batch = Batch(0.3 * nt, nt, torch.zeros(1, 100, dtype=torch.long), torch.as_tensor(q)[None],
                  torch.eye(4).repeat(1, 1, 1, 1), torch.zeros(1, dtype=torch.long), torch.as_tensor(banded)[None])
    _, terms = hipnet_loss(Sphere(), batch, subnet_losses=False, lambda_sdf=1.0)
    assert torch.isfinite(terms["sdf"]) and terms["sdf"] < 5e-3


def test_oriented_distance_is_the_signed_distance_of_a_sphere():
    from hipnet.model.data import oriented_distance

    gen = np.random.default_rng(1)
    n = gen.normal(size=(25_000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    q = gen.uniform(-1, 1, size=(5000, 3))
    d = oriented_distance((0.5 * n).astype(np.float32), n.astype(np.float16), q.astype(np.float32))
    exact = np.linalg.norm(q, axis=1) - 0.5
    off = np.abs(exact) > 0.01  # beyond the sample spacing (~6 mm) the sign is exact
    assert np.all(np.sign(d[off]) == np.sign(exact[off]))
    assert np.abs(d - exact).max() < 0.01


def test_cosine_schedule_runs_from_lr_to_its_final_fraction():
    from hipnet.model.train import lr_factor

    cfg = replace(PRESETS["small"], lr_schedule="cosine", lr_final=0.05)
    f = [lr_factor(cfg, s, 100) for s in range(0, 121)]
    assert f[0] == 1.0 and math.isclose(f[100], 0.05) and f[120] == f[100]
    assert all(a >= b for a, b in zip(f, f[1:], strict=False)) and math.isclose(f[50], 0.525)
    assert lr_factor(PRESETS["small"], 70, 100) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        replace(cfg, lr_schedule="step")


def test_config_files_override_a_preset(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("base: small\nlr: 0.005\nmodel: {hidden: 32}\n")
    cfg = load_config(str(f))
    assert cfg.lr == 0.005 and cfg.model.hidden == 32 and cfg.model.layers == SMALL.layers
    assert load_config("paper").model == ModelConfig()
    f.write_text("base: small\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(str(f))
    assert math.isclose(PRESETS["paper"].lambda_eikonal, 0.1) and PRESETS["paper"].model.code_dim == 256


@pytest.mark.parametrize("local_frames, aggregation, hierarchical",
                         [(False, "mean", True), (True, "softmin", True), (True, "mean", False)])
def test_forward_mode_gradients_equal_autograd_in_float64(local_frames, aggregation, hierarchical):
    """``forward_with_gradient``'s dF/dx and dF_k/dx equal autograd's, and the loss built on them (gradients=
    "forward") has the same value and the same parameter gradients as the double-backward loss."""
    gen = torch.Generator().manual_seed(3)
    cfg = replace(SMALL, local_frames=local_frames, aggregation=aggregation, hierarchical=hierarchical)
    model = HIPNet(SMPL22, 4, cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.05)
    jt, subj = random_pose(2, 22, gen).double(), torch.tensor([1, 3])
    x = (torch.rand(2, 40, 3, generator=gen, dtype=torch.float64) - 0.5).requires_grad_(True)
    sdf, parts = model(x, jt, subj)[:2]
    sdf_f, parts_f, grad_f, part_grads_f = model(x.detach(), jt, subj, gradients=True)
    torch.testing.assert_close(sdf_f, sdf, atol=1e-10, rtol=0)
    torch.testing.assert_close(parts_f, parts, atol=1e-10, rtol=0)
    grad = torch.autograd.grad(sdf.sum(), x, retain_graph=True)[0]
    torch.testing.assert_close(grad_f, grad, atol=1e-5, rtol=0)
    for k in (0, 7, 21):  # a root, a middle and a leaf joint
        gk = torch.autograd.grad(parts[..., k].sum(), x, retain_graph=True)[0]
        torch.testing.assert_close(part_grads_f[..., k], gk, atol=1e-5, rtol=0)
    assert grad.abs().max() > 0.1  # the check is not between two zero fields

    n = torch.nn.functional.normalize(torch.randn(2, 30, 3, generator=gen, dtype=torch.float64), dim=-1)
    batch = Batch(x.detach()[:, :30], n, torch.randint(0, 22, (2, 30), generator=gen), x.detach()[:, 30:] * 2, jt,
                  subj, eikonal_sdf=torch.randn(2, 10, generator=gen, dtype=torch.float64) * 0.1)
    results = {}
    for mode in ("autograd", "forward"):
        model.zero_grad()
        loss, terms = hipnet_loss(model, batch, lambda_sdf=1.0, gradients=mode)
        loss.backward()
        results[mode] = (terms, [None if p.grad is None else p.grad.clone() for p in model.parameters()])
    (ta, ga), (tf, gf) = results["autograd"], results["forward"]
    for key in ta:
        torch.testing.assert_close(tf[key].double(), ta[key].double(), atol=1e-5, rtol=0)
    assert sum(a is not None for a in ga) > 20
    for a, b in zip(ga, gf, strict=True):
        if a is None or b is None:  # a parameter the configuration does not use (softmin: the mean weights)
            assert a is None and b is None
        else:
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


@pytest.mark.parametrize("offset", [True, False])
def test_softmin_base_lies_where_its_option_says(offset):
    """The aggregation's residual starts at zero, so at initialisation F is the soft-min base alone: with the
    offset it lies in [min_k F_k, min_k F_k + tau log J]; without, in [min_k F_k - tau log J, min_k F_k]."""
    cfg = replace(SMALL, local_frames=True, aggregation="softmin", softmin_offset=offset)
    model = HIPNet(SMPL22, 2, cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sdf, parts = model(torch.rand(2, 300, 3, generator=gen) - 0.5, random_pose(2, 22, gen), torch.tensor([0, 1]))[:2]
    low, bound = parts.min(-1).values, cfg.softmin_tau * math.log(22)
    gap = sdf - low
    if offset:
        assert gap.min() >= -1e-6 and gap.max() <= bound + 1e-6
    else:
        assert gap.max() <= 1e-6 and gap.min() >= -bound - 1e-6
    assert gap.abs().max() > bound / 10  # the two cases really differ
