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
products; there is no Python loop over networks. Per-frame conditioning (phi, beta) enters the first and the skip
layer as one projection per frame, broadcast over that frame's points. ``naive_forward`` evaluates the same
parameters joint by joint, as the reference the tests and the benchmark compare against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hipnet.model.config import ModelConfig
from hipnet.pipeline.skeleton import Skeleton


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

    def forward(self, idx: torch.Tensor, xp: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Run the MLPs ``idx`` (k,) on point inputs ``xp`` (k, F, P, d_point) with per-frame ``cond`` (F, d_cond).
        Returns (k, F, P)."""
        k, nf, npts, _ = xp.shape
        inp = xp.reshape(k, nf * npts, -1)
        h = inp
        for layer in range(self.layers):
            if layer == self.skip:
                h = torch.cat([h, inp], dim=-1) / math.sqrt(2)
            y = torch.bmm(h, self.w_point[layer][idx]) + self.bias[layer][idx].unsqueeze(1)
            key = str(layer)
            if cond is not None and key in self.w_cond:
                c = torch.matmul(cond.unsqueeze(0), self.w_cond[key][idx])  # (k, F, out)
                y = (y.view(k, nf, npts, -1) + c.unsqueeze(2)).view(k, nf * npts, -1)
            h = y if layer == self.layers - 1 else F.softplus(y, beta=self.beta)
        return h.view(k, nf, npts)

    def forward_with_gradient(self, idx: torch.Tensor, xp: torch.Tensor, dxp: torch.Tensor,
                              cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` and, by forward-mode differentiation, the output's derivative along 3 directions: ``dxp``
        (k, F, P, 3, d_point) holds the derivative of the point input along each direction (the rows of the
        Jacobian of the input with respect to the query point). Returns (k, F, P) and (k, F, P, 3).

        The tangents go through the same stacked matmuls (conditioning is per frame, so it has no tangent) and
        softplus' derivative is sigmoid(beta y); a loss on the result is differentiated once, instead of the
        double backward that autograd's ``create_graph`` gradient needs."""
        k, nf, npts, _ = xp.shape
        inp = xp.reshape(k, nf * npts, -1)
        dinp = dxp.reshape(k, nf * npts * 3, -1)
        h, dh = inp, dinp
        for layer in range(self.layers):
            if layer == self.skip:
                h = torch.cat([h, inp], dim=-1) / math.sqrt(2)
                dh = torch.cat([dh, dinp], dim=-1) / math.sqrt(2)
            w = self.w_point[layer][idx]
            y = torch.bmm(h, w) + self.bias[layer][idx].unsqueeze(1)
            dy = torch.bmm(dh, w)
            key = str(layer)
            if cond is not None and key in self.w_cond:
                c = torch.matmul(cond.unsqueeze(0), self.w_cond[key][idx])  # (k, F, out)
                y = (y.view(k, nf, npts, -1) + c.unsqueeze(2)).view(k, nf * npts, -1)
            if layer == self.layers - 1:
                h, dh = y, dy
            else:
                h = F.softplus(y, beta=self.beta)
                slope = torch.sigmoid(self.beta * y)  # softplus'(y)
                dh = (dy.view(k, nf * npts, 3, -1) * slope.unsqueeze(2)).view(k, nf * npts * 3, -1)
        return h.view(k, nf, npts), dh.view(k, nf, npts, 3)


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
        if not self.cfg.local_frames:
            return x.unsqueeze(0).expand(len(idx), *x.shape)
        t = joint_transforms[:, idx]  # F, k, 4, 4
        rot, trans = t[..., :3, :3], t[..., :3, 3]
        local = torch.einsum("fkji,fpj->kfpi", rot, x) - torch.einsum("fkji,fkj->kfi", rot, trans).unsqueeze(2)
        return local

    def point_jacobian(self, x: torch.Tensor, joint_transforms: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """d(point input)/dx of the sub-networks ``idx``: (k, F, 3, 3), row a = the derivative along axis a; the
        identity in canonical coordinates, R^T (row a = R[a, :]) in joint frames."""
        nf = x.shape[0]
        if not self.cfg.local_frames:
            return torch.eye(3, dtype=x.dtype, device=x.device).expand(len(idx), nf, 3, 3)
        return joint_transforms[:, idx, :3, :3].transpose(0, 1)  # k, F, 3, 3: row a of R = d(R^T x)/dx_a

    def _softmin_offset(self, j: int) -> float:
        """log J with ``softmin_offset`` (then the soft-min equals F where all parts equal F, and lies up to
        tau log J above the closest part), else 0 (it lies at or below the closest part, within tau log J)."""
        return math.log(j) if self.cfg.softmin_offset else 0.0

    def aggregate(self, parts: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Final SDF (F, P) from part SDFs (F, P, J) and conditioning (F, C)."""
        nf, npts, _ = parts.shape
        c = cond.unsqueeze(1).expand(nf, npts, cond.shape[-1])
        h = F.softplus(self.agg_in(torch.cat([parts, c], dim=-1)), beta=self.cfg.softplus_beta)
        for layer in self.agg_hidden:
            h = F.softplus(layer(h), beta=self.cfg.softplus_beta)
        if self.cfg.aggregation == "softmin":  # smooth union; equals F when every part equals F
            tau = self.cfg.softmin_tau
            base = -tau * (torch.logsumexp(-parts / tau, dim=-1) - self._softmin_offset(parts.shape[-1]))
        else:
            base = parts @ self.agg_mean
        return base + self.agg_out(h).squeeze(-1)

    def aggregate_with_gradient(self, parts: torch.Tensor, dparts: torch.Tensor,
                                cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``aggregate`` and its derivative (F, P, 3) from the parts' derivatives ``dparts`` (F, P, 3, J)."""
        nf, npts, j = parts.shape
        c = cond.unsqueeze(1).expand(nf, npts, cond.shape[-1])
        beta = self.cfg.softplus_beta
        y = self.agg_in(torch.cat([parts, c], dim=-1))
        dy = dparts @ self.agg_in.weight[:, :j].T  # F, P, 3, hidden
        h, dh = F.softplus(y, beta=beta), dy * torch.sigmoid(beta * y).unsqueeze(2)
        for layer in self.agg_hidden:
            y = layer(h)
            dy = dh @ layer.weight.T
            h, dh = F.softplus(y, beta=beta), dy * torch.sigmoid(beta * y).unsqueeze(2)
        out, dout = self.agg_out(h).squeeze(-1), (dh @ self.agg_out.weight.T).squeeze(-1)
        if self.cfg.aggregation == "softmin":
            tau = self.cfg.softmin_tau
            base = -tau * (torch.logsumexp(-parts / tau, dim=-1) - self._softmin_offset(j))
            weights = torch.softmax(-parts / tau, dim=-1)  # d base / d part_k
        else:
            base = parts @ self.agg_mean
            weights = self.agg_mean.expand(nf, npts, j)
        dbase = (dparts * weights.unsqueeze(2)).sum(-1)
        return base + out, dbase + dout

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, joint_transforms: torch.Tensor, subject: torch.Tensor | None = None,
                code: torch.Tensor | None = None, phi: torch.Tensor | None = None, gradients: bool = False):
        """SDF of query points ``x`` (F, P, 3) for frames with canonical ``joint_transforms`` (F, J, 4, 4) and
        subject ids (F,) or subject codes (F, code_dim); ``phi`` (F, pose_dim) replaces the encoding of the joint
        transforms (which then only place the joint frames, with ``local_frames``). Returns (sdf (F, P), part
        SDFs (F, P, J)); with ``gradients``, ``forward_with_gradient``'s four tensors (through ``forward``, so a
        DDP wrapper sees the call)."""
        if gradients:
            if code is not None or phi is not None:
                raise ValueError("gradients=True takes subject ids, not codes or phi")
            return self.forward_with_gradient(x, joint_transforms, subject)
        cond = self.condition(joint_transforms, subject, code, phi)
        nf, npts, _ = x.shape
        outs: list[torch.Tensor | None] = [None] * self.skeleton.num_joints
        zeros = x.new_zeros(1, nf, npts, 1)
        start = 0
        for joints, parents in zip(self.levels, self.level_parents, strict=True):
            idx = self.level_order[start : start + len(joints)]
            start += len(joints)
            xp = self.point_inputs(x, joint_transforms, idx)
            if parents[0] < 0 or not self.cfg.hierarchical:  # the root level (or a flat model): no parent output
                parent = zeros.expand(len(joints), nf, npts, 1)
            else:
                parent = torch.stack([outs[p] for p in parents]).unsqueeze(-1)
            y = self.subnets(idx, torch.cat([xp, parent], dim=-1), cond)
            for k, j in enumerate(joints):
                outs[j] = y[k]
        parts = torch.stack(outs, dim=-1)  # F, P, J
        return self.aggregate(parts, cond), parts

    def forward_with_gradient(self, x: torch.Tensor, joint_transforms: torch.Tensor,
                              subject: torch.Tensor | None = None):
        """``forward`` plus the spatial gradients, by forward-mode differentiation level by level: returns (sdf
        (F, P), parts (F, P, J), grad (F, P, 3) = dF/dx, part_grads (F, P, 3, J) = dF_k/dx). Equal to autograd's
        ``grad`` of ``forward`` (tests, float64); the losses then need one backward instead of a double backward
        (``TrainConfig.gradients``)."""
        cond = self.condition(joint_transforms, subject)
        nf, npts, _ = x.shape
        outs: list[torch.Tensor | None] = [None] * self.skeleton.num_joints
        douts: list[torch.Tensor | None] = [None] * self.skeleton.num_joints
        start = 0
        for joints, parents in zip(self.levels, self.level_parents, strict=True):
            idx = self.level_order[start : start + len(joints)]
            start += len(joints)
            xp = self.point_inputs(x, joint_transforms, idx)
            jac = self.point_jacobian(x, joint_transforms, idx)  # k, F, 3, 3
            dxp = jac.unsqueeze(2).expand(len(joints), nf, npts, 3, 3)
            if parents[0] < 0 or not self.cfg.hierarchical:
                parent = x.new_zeros(len(joints), nf, npts, 1)
                dparent = x.new_zeros(len(joints), nf, npts, 3, 1)
            else:
                parent = torch.stack([outs[p] for p in parents]).unsqueeze(-1)
                dparent = torch.stack([douts[p] for p in parents]).unsqueeze(-1)
            y, dy = self.subnets.forward_with_gradient(idx, torch.cat([xp, parent], dim=-1),
                                                       torch.cat([dxp, dparent], dim=-1), cond)
            for k, j in enumerate(joints):
                outs[j], douts[j] = y[k], dy[k]
        parts, dparts = torch.stack(outs, dim=-1), torch.stack(douts, dim=-1)  # F, P, J and F, P, 3, J
        sdf, grad = self.aggregate_with_gradient(parts, dparts, cond)
        return sdf, parts, grad, dparts


def naive_forward(model: HIPNet, x: torch.Tensor, joint_transforms: torch.Tensor, subject: torch.Tensor | None = None):
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
    return model.aggregate(parts, cond), parts
