"""Part-local evaluation (``ModelConfig.part_support``): against the dense model where every part runs, the box
distance where a part does not, the ancestors of a near part, empty parts and levels, both gradient modes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from hipnet.model.config import PRESETS
from hipnet.model.functional import box_distance, softmin_union
from hipnet.model.hipnet import HIPNet
from hipnet.model.losses import Batch, hipnet_loss
from hipnet.model.partlocal import level_groups, row_order, subtree_matrix
from hipnet.pipeline.core.skeleton import SMPL22

SMALL = replace(PRESETS["small"].model, local_frames=True, aggregation="softmin")
L_WRIST, R_FOOT, L_ELBOW = SMPL22.names.index("L_wrist"), SMPL22.names.index("R_foot"), SMPL22.names.index("L_elbow")
ANCESTORS_OF_L_WRIST = [0, 3, 6, 9, 13, 16, 18, 20]  # pelvis, spine1-3, L_collar, L_shoulder, L_elbow, L_wrist


def models(margin: float = 0.05, dtype=torch.float32) -> tuple[HIPNet, HIPNet]:
    """A dense model and the same weights with part support (weights moved off their initial values)."""
    gen = torch.Generator().manual_seed(3)
    dense = HIPNet(SMPL22, 3, SMALL)
    with torch.no_grad():
        for p in dense.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    local = HIPNet(SMPL22, 3, replace(SMALL, part_support=True, support_margin=margin))
    local.load_state_dict(dense.state_dict(), strict=False)
    return dense.to(dtype), local.to(dtype)


def identity_pose(n_frames: int) -> torch.Tensor:
    """Every joint's frame is the canonical frame: a point's coordinates are the same in each joint's frame."""
    return torch.eye(4).repeat(n_frames, 22, 1, 1)


def far_boxes() -> torch.Tensor:
    """Each joint's box: a 10 cm cube, joint k's at x = k metres (no two within reach of each other)."""
    lo = torch.stack([torch.arange(22.0), torch.zeros(22), torch.zeros(22)], 1)
    return torch.stack([lo, lo + 0.1], 1)


def random_pose(n_frames: int, gen: torch.Generator) -> torch.Tensor:
    from hipnet.pipeline.core.kinematics import axis_angle_to_matrix

    jt = torch.eye(4).repeat(n_frames, 22, 1, 1)
    jt[:, :, :3, :3] = torch.as_tensor(axis_angle_to_matrix(torch.randn(n_frames, 22, 3, generator=gen).numpy()))
    jt[:, :, :3, 3] = torch.randn(n_frames, 22, 3, generator=gen) * 0.3
    return jt


@pytest.mark.parametrize("gradients", [False, True])
def test_where_every_part_runs_the_model_is_the_dense_model(gradients):
    dense, local = models()
    gen = torch.Generator().manual_seed(0)
    x, jt, subject = torch.rand(3, 40, 3, generator=gen) - 0.5, random_pose(3, gen), torch.tensor([0, 2, 1])
    a, b = dense(x, jt, subject, gradients=gradients), local(x, jt, subject, gradients=gradients)  # unbounded boxes
    for name in ("sdf", "parts") + (("grad", "part_grads") if gradients else ()):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=2e-6, rtol=0, msg=name)
    boxes = torch.stack([torch.full((22, 3), -2.0), torch.full((22, 3), 2.0)], 1)  # every point inside every box
    local.set_support(boxes)
    torch.testing.assert_close(local(x, jt, subject).sdf, a.sdf, atol=2e-6, rtol=0)


def test_a_point_just_inside_runs_its_part_and_ancestors_and_just_outside_takes_the_box_distance():
    dense, local = models(margin=0.05)
    boxes = far_boxes()
    local.set_support(boxes)
    wrist = boxes[L_WRIST, 1, 0].item()  # the wrist box's +x face
    x = torch.tensor([[[wrist + 0.049, 0.05, 0.05], [wrist + 0.051, 0.05, 0.05]]])  # just inside / outside its margin
    out, ref = local(x, identity_pose(1), torch.tensor([1])), dense(x, identity_pose(1), torch.tensor([1]))
    inside, outside = out.parts[0, 0], out.parts[0, 1]
    runs = torch.zeros(22, dtype=torch.bool)
    runs[ANCESTORS_OF_L_WRIST] = True
    # inside: the wrist and its ancestors give the dense values (they saw the same parents); the rest their distance
    torch.testing.assert_close(inside[runs], ref.parts[0, 0][runs], atol=2e-6, rtol=0)
    distance = box_distance(x[0, 0].expand(22, 3), boxes[:, 0], boxes[:, 1])[0]
    torch.testing.assert_close(inside[~runs], distance[~runs])
    # outside: no part runs; each part is its box distance, the wrist's just beyond the margin
    expected = box_distance(x[0, 1].expand(22, 3), boxes[:, 0], boxes[:, 1])[0]
    torch.testing.assert_close(outside, expected)
    assert outside[L_WRIST].item() == pytest.approx(0.051, abs=1e-6)
    assert (outside >= 0.05).all()  # a lower bound of the distance to each part, at least the margin
    # beyond every support the aggregation's residual is gated off: the SDF is the soft-min of the box distances
    base = softmin_union(out.parts[0, 1], SMALL.softmin_tau, math.log(22))
    torch.testing.assert_close(out.sdf[0, 1], base)
    assert local.agg_out.weight.abs().sum() > 0  # (there is a residual to gate: the weights were moved off zero)
    inside = torch.tensor([[[wrist - 0.01, 0.05, 0.05]]])
    within = local(inside, identity_pose(1), torch.tensor([1]))
    cond = local.condition(identity_pose(1), torch.tensor([1]))
    torch.testing.assert_close(within.sdf, local.aggregate(within.parts, cond))  # inside a box: the whole residual
    assert not torch.allclose(within.sdf, softmin_union(within.parts, SMALL.softmin_tau, math.log(22)))


def test_the_box_distance_is_exact_and_its_gradient_is_its_direction():
    lo, hi = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    q = torch.tensor([[2.0, 0.5, 0.5], [2.0, 3.0, 0.5], [0.5, 0.5, 0.5], [-3.0, -4.0, 0.2]], dtype=torch.float64,
                     requires_grad=True)
    dist, direction = box_distance(q, lo, hi)
    torch.testing.assert_close(dist, torch.tensor([1.0, 5**0.5, 0.0, 5.0], dtype=torch.float64))
    grad = torch.autograd.grad(dist.sum(), q)[0]
    torch.testing.assert_close(grad, direction)
    torch.testing.assert_close(grad[3], torch.tensor([-0.6, -0.8, 0.0], dtype=torch.float64))
    assert torch.equal(grad[2], torch.zeros(3, dtype=torch.float64))  # inside: zero, not NaN


def test_forward_mode_gradients_equal_autograd_with_part_support():
    _, local = models(margin=0.02, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    local.set_support(torch.stack([-torch.rand(22, 3, generator=gen) * 0.2, torch.rand(22, 3, generator=gen) * 0.2],
                                  1).double())
    x = ((torch.rand(2, 60, 3, generator=gen) - 0.5) * 0.8).double().requires_grad_(True)
    jt, subject = random_pose(2, gen).double(), torch.tensor([0, 1])
    out = local(x, jt, subject, gradients=True)
    auto = local(x, jt, subject)
    torch.testing.assert_close(out.sdf, auto.sdf)
    torch.testing.assert_close(out.grad, torch.autograd.grad(auto.sdf.sum(), x, retain_graph=True)[0])
    for k in (0, L_ELBOW, R_FOOT):
        torch.testing.assert_close(out.part_grads[..., k], torch.autograd.grad(auto.parts[..., k].sum(), x,
                                                                               retain_graph=True)[0])


def test_an_empty_part_a_level_with_no_points_and_the_loss_backward_are_finite():
    _, local = models()
    boxes = far_boxes()
    boxes[L_WRIST] = 0.0  # an empty part: the zero box at its joint (part_boxes' box for a joint that labels nothing)
    local.set_support(boxes)
    gen = torch.Generator().manual_seed(2)
    points = torch.rand(2, 30, 3, generator=gen) * 0.1 + torch.tensor([R_FOOT, 0.0, 0.0])  # only the right foot's
    batch = Batch(points=points, normals=torch.nn.functional.normalize(torch.randn(2, 30, 3, generator=gen), dim=-1),
                  labels=torch.full((2, 30), R_FOOT), eikonal=torch.rand(2, 30, 3, generator=gen) * 3,
                  joint_transforms=identity_pose(2), subject=torch.tensor([0, 1]))
    out = local(points, identity_pose(2), batch.subject)  # the arm levels (6, 7) have no point at all
    assert torch.isfinite(out.sdf).all()
    for gradients in ("autograd", "forward"):
        local.zero_grad()
        loss = hipnet_loss(local, batch, gradients=gradients)
        loss.total.backward()
        grads = {n: p.grad for n, p in local.named_parameters() if p.grad is not None}
        assert all(torch.isfinite(g).all() for g in grads.values())
        assert grads["subnets.w_point.0"][R_FOOT].abs().sum() > 0  # the part that ran learns
        assert grads["subnets.w_point.0"][L_WRIST].abs().sum() == 0  # the empty one has no point to learn from


def test_rows_put_each_part_first_in_order_and_levels_split_where_padding_is_least():
    need = torch.tensor([[False, True, False, True, True], [False, False, False, False, False]])
    order, counts = row_order(need)
    assert counts == [3, 0]
    assert order[0].tolist() == [1, 3, 4, 0, 2] and sorted(order[1].tolist()) == [0, 1, 2, 3, 4]
    assert level_groups([50, 4, 5, 0, 48]) == [[1, 2], [4, 0]]  # 2 x 5 + 2 x 50 rows, not 4 x 50
    assert level_groups([0, 0]) == [] and level_groups([7]) == [[0]]
    sub = subtree_matrix(SMPL22.parents, hierarchical=True)
    assert sub[:, L_WRIST].nonzero().flatten().tolist() == ANCESTORS_OF_L_WRIST
    assert torch.equal(subtree_matrix(SMPL22.parents, hierarchical=False), torch.eye(22))


def test_set_support_refuses_boxes_of_another_shape_or_inside_out():
    _, local = models()
    with pytest.raises(ValueError, match="lo <= hi"):
        local.set_support(far_boxes().flip(1))
    with pytest.raises(ValueError, match=r"\(J, 2, 3\)"):
        local.set_support(torch.zeros(21, 2, 3))
    with pytest.raises(ValueError, match="part_support"):
        models()[0].set_support(far_boxes())
