"""NASA (seed 003, the deformable model) against a per-bone reference written from the paper's equations, and its
loss on a tiny problem; the flat-hierarchy ablation switch of HIPNet."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from hipnet.model.config import PRESETS
from hipnet.model.hipnet import HIPNet, naive_forward
from hipnet.model.nasa import NASA, NasaBatch, NasaConfig, nasa_loss
from hipnet.pipeline.core.skeleton import Skeleton

SKEL = Skeleton(["root", "a", "b"], [-1, 0, 1])


def random_pose(frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(frames, 3, 3, 3, generator=g)).Q  # random rotations (and reflections)
    q = q * torch.linalg.det(q)[..., None, None].sign()
    jt = torch.eye(4).repeat(frames, 3, 1, 1)
    jt[..., :3, :3] = q
    jt[..., :3, 3] = torch.randn(frames, 3, 3, generator=g) * 0.3
    return jt


def reference_logits(model: NASA, x: torch.Tensor, jt: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
    """Equation 8 bone by bone: B_b^-1 x by a matrix inverse, the pose {B_c^-1 t_0} by inverses too."""
    out = torch.zeros(*x.shape[:2], 3)
    for f in range(x.shape[0]):
        inv = torch.linalg.inv(jt[f].double()).float()  # (J, 4, 4)
        origin = inv[:, :3, 3].reshape(-1)  # B_c^-1 applied to (0, 0, 0, 1)
        for b in range(3):
            local = x[f] @ inv[b, :3, :3].T + inv[b, :3, 3]
            h = torch.cat([local, (origin @ model.project[b]).expand(len(local), -1),
                           model.codes(subject[f]).expand(len(local), -1)], dim=-1)
            for i, (w, bias) in enumerate(zip(model.weights, model.biases, strict=True)):
                y = h @ w[b] + bias[b, 0]
                if i == len(model.weights) - 1:
                    h = y
                else:
                    y = F.leaky_relu(y, 0.1)
                    h = h + y if y.shape == h.shape else y
            out[f, :, b] = h[:, 0]
    return out


def test_nasa_matches_a_per_bone_reference():
    torch.manual_seed(0)
    model = NASA(SKEL, 3, NasaConfig(width=8, code_dim=4))
    torch.nn.init.normal_(model.codes.weight)
    x, jt, subject = torch.randn(2, 50, 3) * 0.4, random_pose(2), torch.tensor([0, 2])
    torch.testing.assert_close(model.part_logits(x, jt, subject), reference_logits(model, x, jt, subject),
                               rtol=1e-4, atol=1e-5)
    sdf, logits = model(x, jt, subject)[:2]
    blended = torch.logsumexp(5.0 * logits, -1) / 5.0
    torch.testing.assert_close(sdf, 0.5 - torch.sigmoid(blended))


def test_nasa_learns_a_ball_and_its_skinning_labels():
    """A ball of radius 0.3 about the origin in every pose; vertices on it labelled by x's sign (two 'bones')."""
    torch.manual_seed(0)
    model = NASA(SKEL, 1, NasaConfig(width=16))
    g = torch.Generator().manual_seed(1)
    pts = (torch.rand(4, 400, 3, generator=g) - 0.5) * 1.2
    verts = F.normalize(torch.randn(4, 200, 3, generator=g), dim=-1) * 0.3
    batch = NasaBatch(points=pts, occupancy=(pts.norm(dim=-1) < 0.3).float(), vertices=verts,
                      vertex_labels=(verts[..., 0] > 0).long(), joint_transforms=random_pose(4),
                      subject=torch.zeros(4, dtype=torch.long))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        loss, terms = nasa_loss(model, batch)
        first = first if first is not None else {k: float(v) for k, v in terms.items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = {k: float(v) for k, v in nasa_loss(model, batch)[1].items()}
    assert last["occupancy"] < 0.25 * first["occupancy"] and last["weights"] < 0.5 * first["weights"]
    inside = model(pts, batch.joint_transforms)[0] < 0
    assert (inside == (pts.norm(dim=-1) < 0.3)).float().mean() > 0.9


def test_flat_model_children_ignore_their_parent():
    cfg = replace(PRESETS["small"].model, hidden=16, layers=3, skip=1, pose_dim=8, pose_hidden=16, code_dim=0)
    x, jt = torch.randn(2, 30, 3) * 0.3, random_pose(2)
    parts = {}
    for hierarchical in (True, False):
        torch.manual_seed(0)
        m = HIPNet(SKEL, 1, replace(cfg, hierarchical=hierarchical))
        with torch.no_grad():
            m.subnets.w_point[0][:, 3].normal_()  # let the children use the parent input (zero at init)
        before = m(x, jt)[1]
        torch.testing.assert_close(before, naive_forward(m, x, jt)[1])
        with torch.no_grad():
            m.subnets.bias[-1][0].add_(0.5)  # move the root part only
        parts[hierarchical] = (before, m(x, jt)[1])
    flat_before, flat_after = parts[False]
    torch.testing.assert_close(flat_before[..., 1:], flat_after[..., 1:])  # children unchanged
    hier_before, hier_after = parts[True]
    assert not torch.allclose(hier_before[..., 1:], hier_after[..., 1:])
    assert np.allclose((flat_after - flat_before)[..., 0].detach().numpy(), 0.5, atol=1e-5)
