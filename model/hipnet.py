"""HIPNet (seed 000, section 3.2 and appendix A): an articulated SDF from per-joint sub-networks along a skeleton.

- Pose encoder Phi: the canonical joint transforms (J x 3 x 4) -> phi.
- Subject codes beta: an auto-decoder table (GLO), 256-d, N(0, 1e-4 std); absent in single-subject mode.
- One sub-network per joint: 8 fully connected layers of 256, the input concatenated again before layer 4,
  softplus; input = (x, phi, beta) plus, for every joint but the root, the parent's output. Geometric
  initialisation (SAL/IGR): every sub-network starts as the SDF of a sphere.
- Aggregation network: all sub-network outputs (with phi and beta) -> the final SDF. It is a learnt linear mean
  of the part SDFs (or, with ``aggregation="softmin"``, their smooth minimum) plus an MLP residual whose last
  layer starts at zero, so the whole model starts as the sphere too.

The joints of one tree depth run together: their weights are stacked (J, in, out) and applied with batched matrix
products; there is no Python loop over networks. The arithmetic is ``model/functional.py``'s pure functions; this
module holds the parameters and the one loop over the skeleton's levels (``HIPNet._parts``). Per-frame
conditioning (phi, beta) enters the first and the skip layer as one projection per frame, broadcast over that
frame's points. ``naive_forward`` evaluates the same parameters joint by joint, as the reference the tests and the
benchmark compare against.

With ``ModelConfig.part_support`` (beyond the paper) each sub-network runs only on the points near its part's box
or a descendant's (``model/partlocal.py``); elsewhere a part is its box distance, and the aggregation's residual
is gated off beyond every box.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hipnet.model.config import ModelConfig
from hipnet.model.functional import (
    SDFOutput,
    joint_points,
    joint_points_jacobian,
    softmin_union,
    softmin_weights,
    stacked_mlp,
)
from hipnet.model.partlocal import UNBOUNDED, subtree_matrix, supported_parts
from hipnet.pipeline.core.skeleton import Skeleton


class StackedMLP(nn.Module):
    """``J`` MLPs of the same shape. Input = point part (per point, per joint) and condition part (per frame).

    Layer ``skip`` sees ``cat(h, input) / sqrt(2)`` (IGR's skip). Weights are (J, in, out) tensors so any subset of
    joints runs as one batched matmul.
    """

    def __init__(self, n: int, d_point: int, d_cond: int, hidden: int, layers: int, skip: int, beta: float,
                 radius: float) -> None:
        super().__init__()
        self.n, self.d_point, self.d_cond, self.hidden, self.layers, self.skip, self.beta = (
            n, d_point, d_cond, hidden, layers, skip, beta)
        self.w_point = nn.ParameterList()  # per layer: (n, in_point, out)
        self.w_cond = nn.ParameterDict()  # only for layer 0 and the skip layer: (n, d_cond, out)
        self.bias = nn.ParameterList()
        for layer in range(layers):
            out = 1 if layer == layers - 1 else hidden
            if layer == 0:
                d_in = d_point
            elif layer == skip:
                d_in = hidden + d_point
            else:
                d_in = hidden
            w = torch.zeros(n, d_in, out)
            b = torch.zeros(n, out)
            if layer == layers - 1:  # geometric initialisation: f(x) ~ |x| - r
                fan = d_in
                nn.init.normal_(w, mean=math.sqrt(math.pi) / math.sqrt(fan), std=1e-4)
                b.fill_(-radius)
            else:
                nn.init.normal_(w, 0.0, math.sqrt(2) / math.sqrt(out))
                if layer == 0:
                    w[:, 3:] = 0.0  # only x drives the initial SDF; parent output etc. start at zero weight
                if layer == skip:
                    w[:, hidden + 3:] = 0.0
            self.w_point.append(nn.Parameter(w))
            self.bias.append(nn.Parameter(b))
            if (layer == 0 or layer == skip) and d_cond:
                self.w_cond[str(layer)] = nn.Parameter(torch.zeros(n, d_cond, out))
        self._calibrate_sphere(radius)

    @torch.no_grad()
    def _calibrate_sphere(self, radius: float) -> None:
        """Rescale each MLP's last layer so its initial output best fits ``|x| - radius`` (least squares on fixed
        probe points in the unit ball). Softplus is not ReLU at the scale of a body: without this, geometric
        initialisation gives about ``0.83 |x| - radius + 0.17`` (the softplus offset ``log 2 / beta`` summed over a
        layer); with it the initial parts are centred spheres of the right radius, up to the random bumps."""
        k = torch.arange(4096, dtype=torch.float64) + 0.5
        z = 1 - 2 * k / 4096
        phi = k * math.pi * (3 - math.sqrt(5))  # Fibonacci directions
        direction = torch.stack([torch.sqrt(1 - z**2) * torch.cos(phi), z, torch.sqrt(1 - z**2) * torch.sin(phi)], 1)
        r = (k % 16 + 0.5) / 16  # radii in (0, 1)
        x = (direction * r[:, None]).float()
        xp = torch.cat([x, torch.zeros(len(x), self.d_point - 3)], dim=1)
        idx = torch.arange(self.n)
        out = self(idx, xp.expand(self.n, 1, *xp.shape), None).reshape(self.n, -1).double()
        design = torch.stack([out, torch.ones_like(out)], dim=-1)  # n, P, 2
        target = (r - radius).expand(self.n, -1).unsqueeze(-1)
        sol = torch.linalg.lstsq(design, target).solution.squeeze(-1)  # n, 2: scale, shift
        scale, shift = sol[:, 0].float(), sol[:, 1].float()
        self.w_point[-1].mul_(scale.view(-1, 1, 1))
        self.bias[-1].mul_(scale.view(-1, 1)).add_(shift.view(-1, 1))

    def run(self, idx: torch.Tensor, xp: torch.Tensor, cond: torch.Tensor | None,
            dxp: torch.Tensor | None = None,
            frame_of: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``functional.stacked_mlp`` with this stack's parameters: the MLPs ``idx`` (k,) on point inputs ``xp``
        (k, F, P, d_point), or rows (k, R, d_point) of frames ``frame_of`` (k, R), with per-frame ``cond``
        (F, d_cond), and the derivatives along ``dxp`` when given."""
        w_cond = {int(key): w for key, w in self.w_cond.items()}
        return stacked_mlp(list(self.w_point), list(self.bias), w_cond, idx, xp, cond, self.skip, self.beta, dxp,
                           frame_of)

    def forward(self, idx: torch.Tensor, xp: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The MLPs ``idx`` on ``xp`` (see ``run``): (k, F, P)."""
        return self.run(idx, xp, cond)[0]


class HIPNet(nn.Module):
    def __init__(self, skeleton: Skeleton, n_subjects: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.skeleton = skeleton
        j = skeleton.num_joints
        self.register_buffer("parents", torch.as_tensor(skeleton.parents, dtype=torch.long), persistent=False)
        # the tree levels: joint ids as Python ints (the structure of the loop, no device round trip) and, as one
        # device buffer in level order sliced by those offsets, the index tensors the batched matmuls gather with
        self.levels = [[int(j) for j in lv] for lv in skeleton.levels()]
        self.level_parents = [[skeleton.parents[j] for j in lv] for lv in self.levels]
        self.register_buffer("level_order", torch.as_tensor([j for lv in self.levels for j in lv], dtype=torch.long),
                             persistent=False)
        self.pose_encoder = nn.Sequential(
            nn.Linear(j * 12, cfg.pose_hidden), nn.Softplus(beta=cfg.softplus_beta),
            nn.Linear(cfg.pose_hidden, cfg.pose_hidden), nn.Softplus(beta=cfg.softplus_beta),
            nn.Linear(cfg.pose_hidden, cfg.pose_dim),
        )
        self.code_dim = cfg.code_dim if n_subjects > 1 else 0
        self.codes = nn.Embedding(n_subjects, self.code_dim) if self.code_dim else None
        if self.codes is not None:
            nn.init.normal_(self.codes.weight, 0.0, cfg.code_init_std)
        d_cond = cfg.pose_dim + self.code_dim
        self.subnets = StackedMLP(j, 3 + 1, d_cond, cfg.hidden, cfg.layers, cfg.skip, cfg.softplus_beta,
                                  cfg.sphere_radius)
        # aggregation: mean of the part SDFs + an MLP residual over (parts, phi, beta), last layer zero
        self.agg_mean = nn.Parameter(torch.full((j,), 1.0 / j))
        self.agg_in = nn.Linear(j + d_cond, cfg.aggregator_hidden)
        self.agg_hidden = nn.ModuleList(
            nn.Linear(cfg.aggregator_hidden, cfg.aggregator_hidden) for _ in range(cfg.aggregator_layers - 1)
        )
        self.agg_out = nn.Linear(cfg.aggregator_hidden, 1)
        nn.init.zeros_(self.agg_out.weight)
        nn.init.zeros_(self.agg_out.bias)
        if cfg.part_support:
            # each part's box in its joint's frame (J, 2, 3: lo, hi), saved with the weights; until set_support, a
            # box no query reaches the edge of, so every part runs everywhere (the dense model)
            self.register_buffer("support", torch.tensor([-UNBOUNDED, UNBOUNDED]).view(1, 2, 1).repeat(j, 1, 3))
            # subtree[a, b] = 1 where b is a or below a: a joint runs where it or a descendant is near
            self.register_buffer("subtree", subtree_matrix(skeleton.parents, cfg.hierarchical), persistent=False)

    # ------------------------------------------------------------------------------------------ pieces

    def encode_pose(self, joint_transforms: torch.Tensor) -> torch.Tensor:
        """phi = Phi(theta) (F, pose_dim) from canonical joint transforms (F, J, 4, 4)."""
        return self.pose_encoder(joint_transforms[:, :, :3, :].flatten(1))

    def condition(self, joint_transforms: torch.Tensor, subject: torch.Tensor | None,
                  code: torch.Tensor | None = None, phi: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame conditioning (F, pose_dim + code_dim): phi = Phi(theta) (or ``phi`` given directly, for
        interpolation in the learnt pose space), then the subject code: row ``subject`` of the table, or ``code``
        (F, code_dim) given directly (fitting, sampling, blending)."""
        if phi is None:
            phi = self.encode_pose(joint_transforms)
        if self.codes is None:
            return phi
        if code is None:
            code = self.codes(subject)
        return torch.cat([phi, code.to(phi.dtype)], dim=-1)

    def point_inputs(self, x: torch.Tensor, joint_transforms: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The query point each sub-network ``idx`` sees: x (canonical), or x in its joint's frame (option)."""
        return joint_points(x, joint_transforms, idx, self.cfg.local_frames)

    def _softmin_offset(self, j: int) -> float:
        """log J with ``softmin_offset`` (then the soft-min equals F where all parts equal F, and lies up to
        tau log J above the closest part), else 0 (it lies at or below the closest part, within tau log J)."""
        return math.log(j) if self.cfg.softmin_offset else 0.0

    def _aggregator_input(self, parts: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The aggregation network's first layer on (parts, phi, beta): (F, P, hidden), the conditioning's share
        computed once per frame and broadcast over its points."""
        j = parts.shape[-1]
        per_frame = F.linear(cond, self.agg_in.weight[:, j:], self.agg_in.bias)  # F, hidden
        return parts @ self.agg_in.weight[:, :j].T + per_frame.unsqueeze(1)

    def aggregate(self, parts: torch.Tensor, cond: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """Final SDF (F, P) from part SDFs (F, P, J) and conditioning (F, C); the MLP residual times ``gate`` (F, P)
        when given (part-local evaluation: 0 beyond every part's support)."""
        h = F.softplus(self._aggregator_input(parts, cond), beta=self.cfg.softplus_beta)
        for layer in self.agg_hidden:
            h = F.softplus(layer(h), beta=self.cfg.softplus_beta)
        if self.cfg.aggregation == "softmin":  # smooth union; equals F when every part equals F
            base = softmin_union(parts, self.cfg.softmin_tau, self._softmin_offset(parts.shape[-1]))
        else:
            base = parts @ self.agg_mean
        residual = self.agg_out(h).squeeze(-1)
        return base + (residual if gate is None else gate * residual)

    def aggregate_with_gradient(self, parts: torch.Tensor, dparts: torch.Tensor, cond: torch.Tensor,
                                gate: torch.Tensor | None = None,
                                dgate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``aggregate`` and its derivative (F, P, 3) from the parts' derivatives ``dparts`` (F, P, 3, J) (and the
        gate's, ``dgate`` (F, P, 3))."""
        nf, npts, j = parts.shape
        beta = self.cfg.softplus_beta
        y = self._aggregator_input(parts, cond)
        dy = dparts @ self.agg_in.weight[:, :j].T  # F, P, 3, hidden
        h, dh = F.softplus(y, beta=beta), dy * torch.sigmoid(beta * y).unsqueeze(2)
        for layer in self.agg_hidden:
            y = layer(h)
            dy = dh @ layer.weight.T
            h, dh = F.softplus(y, beta=beta), dy * torch.sigmoid(beta * y).unsqueeze(2)
        out, dout = self.agg_out(h).squeeze(-1), (dh @ self.agg_out.weight.T).squeeze(-1)
        if self.cfg.aggregation == "softmin":
            base = softmin_union(parts, self.cfg.softmin_tau, self._softmin_offset(j))
            weights = softmin_weights(parts, self.cfg.softmin_tau)  # d base / d part_k
        else:
            base = parts @ self.agg_mean
            weights = self.agg_mean.expand(nf, npts, j)
        dbase = (dparts * weights.unsqueeze(2)).sum(-1)
        if gate is not None:
            out, dout = gate * out, gate.unsqueeze(-1) * dout + out.unsqueeze(-1) * dgate
        return base + out, dbase + dout

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, joint_transforms: torch.Tensor, subject: torch.Tensor | None = None,
                code: torch.Tensor | None = None, phi: torch.Tensor | None = None,
                gradients: bool = False) -> SDFOutput:
        """SDF of query points ``x`` (F, P, 3) for frames with canonical ``joint_transforms`` (F, J, 4, 4) and
        subject ids (F,) or subject codes (F, code_dim); ``phi`` (F, pose_dim) replaces the encoding of the joint
        transforms (which then only place the joint frames, with ``local_frames``). Returns an ``SDFOutput``: the
        SDF (F, P) and the part SDFs (F, P, J); with ``gradients``, also dF/dx (F, P, 3) and dF_k/dx (F, P, 3, J) by
        forward-mode differentiation, equal to autograd's (tests, float64), so that a loss on them needs one
        backward instead of a double backward (``TrainConfig.gradients``)."""
        if gradients and (code is not None or phi is not None):
            raise ValueError("gradients=True takes subject ids, not codes or phi")
        cond = self.condition(joint_transforms, subject, code, phi)
        parts, dparts, gate, dgate = self._parts(x, joint_transforms, cond, gradients)
        if not gradients:
            return SDFOutput(self.aggregate(parts, cond, gate), parts)
        sdf, grad = self.aggregate_with_gradient(parts, dparts, cond, gate, dgate)
        return SDFOutput(sdf, parts, grad, dparts)

    def forward_with_gradient(self, x: torch.Tensor, joint_transforms: torch.Tensor,
                              subject: torch.Tensor | None = None) -> SDFOutput:
        """``forward(..., gradients=True)``."""
        return self.forward(x, joint_transforms, subject, gradients=True)

    @torch.no_grad()
    def set_support(self, boxes: torch.Tensor) -> None:
        """Each part's support box (J, 2, 3: lo, hi in its joint's frame), e.g. ``model.support.part_boxes``."""
        if not self.cfg.part_support:
            raise ValueError("set_support needs a model with part_support")
        if boxes.shape != self.support.shape or not bool((boxes[:, 0] <= boxes[:, 1]).all()):
            raise ValueError(f"support boxes must be (J, 2, 3) = {tuple(self.support.shape)} with lo <= hi, got "
                             f"{tuple(boxes.shape)}")
        self.support.copy_(boxes)

    def _parts(self, x: torch.Tensor, joint_transforms: torch.Tensor, cond: torch.Tensor, tangents: bool) -> tuple:
        """The part SDFs (F, P, J), level by level along the skeleton (each joint's sub-network sees its parent's
        output), and with ``tangents`` their derivatives (F, P, 3, J) carried alongside (else None); then the
        aggregation residual's gate (F, P) and its derivative (F, P, 3), None for the dense model."""
        if self.cfg.part_support:
            return supported_parts(self, x, joint_transforms, cond, tangents)
        nf, npts, _ = x.shape
        local = self.cfg.local_frames
        outs: list[torch.Tensor | None] = [None] * self.skeleton.num_joints
        douts: list[torch.Tensor | None] = [None] * self.skeleton.num_joints
        start = 0
        for joints, parents in zip(self.levels, self.level_parents, strict=True):
            idx = self.level_order[start : start + len(joints)]
            start += len(joints)
            k = len(joints)
            xp = joint_points(x, joint_transforms, idx, local)
            root = parents[0] < 0 or not self.cfg.hierarchical  # the root level (or a flat model): no parent output
            parent = x.new_zeros(1, nf, npts, 1).expand(k, nf, npts, 1) if root else \
                torch.stack([outs[p] for p in parents]).unsqueeze(-1)
            dxp = None
            if tangents:
                jac = joint_points_jacobian(x, joint_transforms, idx, local).unsqueeze(2).expand(k, nf, npts, 3, 3)
                dparent = x.new_zeros(k, nf, npts, 3, 1) if root else \
                    torch.stack([douts[p] for p in parents]).unsqueeze(-1)
                dxp = torch.cat([jac, dparent], dim=-1)
            y, dy = self.subnets.run(idx, torch.cat([xp, parent], dim=-1), cond, dxp)
            for i, j in enumerate(joints):
                outs[j] = y[i]
                if tangents:
                    douts[j] = dy[i]
        parts = torch.stack(outs, dim=-1)  # F, P, J
        return parts, torch.stack(douts, dim=-1) if tangents else None, None, None  # dparts: F, P, 3, J


def naive_forward(model: HIPNet, x: torch.Tensor, joint_transforms: torch.Tensor,
                  subject: torch.Tensor | None = None) -> SDFOutput:
    """Reference evaluation of the same parameters: one joint at a time, in skeleton order, plain matmuls."""
    m, cfg = model.subnets, model.cfg
    cond = model.condition(joint_transforms, subject)
    nf, npts, _ = x.shape
    outs = []
    for j in range(model.skeleton.num_joints):
        p = model.skeleton.parents[j]
        parent = outs[p].unsqueeze(-1) if p >= 0 and cfg.hierarchical else x.new_zeros(nf, npts, 1)
        xj = model.point_inputs(x, joint_transforms, torch.tensor([j]))[0]
        inp = torch.cat([xj, parent], dim=-1)
        h = inp
        for layer in range(m.layers):
            if layer == m.skip:
                h = torch.cat([h, inp], dim=-1) / math.sqrt(2)
            y = h @ m.w_point[layer][j] + m.bias[layer][j]
            if str(layer) in m.w_cond:
                y = y + (cond @ m.w_cond[str(layer)][j]).unsqueeze(1)
            h = y if layer == m.layers - 1 else F.softplus(y, beta=cfg.softplus_beta)
        outs.append(h.squeeze(-1))
    parts = torch.stack(outs, dim=-1)
    return SDFOutput(model.aggregate(parts, cond), parts)
