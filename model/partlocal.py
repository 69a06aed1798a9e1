"""Part-local evaluation of HIPNet (``ModelConfig.part_support``, beyond the paper): each level's sub-networks run
only on the query points near their part's box or a descendant's; elsewhere a part is its box distance, and the
aggregation's residual is gated off beyond every box. ``model/hipnet.py`` calls ``supported_parts``; the boxes come
from ``model/support.py``."""

from __future__ import annotations

import torch

from hipnet.model.functional import box_distance, joint_points, joint_points_jacobian

UNBOUNDED = 1e4  # m: the half-width of a support box that contains every query


def subtree_matrix(parents, hierarchical: bool) -> torch.Tensor:
    """(J, J) float: entry [a, b] is 1 where joint b is joint a or (with ``hierarchical``) one of its descendants."""
    j = len(parents)
    m = torch.eye(j)
    if hierarchical:
        for b in range(j):
            a = parents[b]
            while a >= 0:
                m[a, b] = 1.0
                a = parents[a]
    return m



def supported_parts(self, x: torch.Tensor, joint_transforms: torch.Tensor, cond: torch.Tensor,
                     tangents: bool) -> tuple:
    """``HIPNet._parts`` with ``part_support`` (``self``: the HIPNet): each level's sub-networks on their own points only.

    A joint runs on the points within ``support_margin`` of its box or of a descendant's (its children read its
    output there). Each level's joints run as at most two stacked calls (``level_groups``), each joint's points
    gathered into rows padded to its group's largest count; the results are scattered over the part's box
    distance, which every point the joint does not run on keeps (with that distance's gradient as tangent). The
    aggregation's residual is gated to vanish beyond every support (``support_blend``)."""
    nf, npts, _ = x.shape
    n, j = nf * npts, self.skeleton.num_joints
    every = torch.arange(j, device=x.device)
    q = joint_points(x, joint_transforms, every, True).reshape(j, n, 3)  # each joint's frame
    lo, hi = self.support[:, 0].unsqueeze(1).to(x.dtype), self.support[:, 1].unsqueeze(1).to(x.dtype)
    margin = self.cfg.support_margin
    near = ((q >= lo - margin) & (q <= hi + margin)).all(-1)
    need = (self.subtree.to(x.dtype) @ near.to(x.dtype)) > 0  # J, n
    order, counts = row_order(need)
    fill, direction = box_distance(q, lo, hi)  # J, n; J, n, 3
    frame = torch.arange(nf, device=x.device).repeat_interleave(npts)  # n
    inputs = (q if self.cfg.local_frames else x.reshape(1, n, 3).expand(j, n, 3)).reshape(j * n, 3)
    jac = dfill = None
    if tangents:
        jac = joint_points_jacobian(x, joint_transforms, every, self.cfg.local_frames)  # J, F, 3, 3
        rot_t = joint_points_jacobian(x, joint_transforms, every, True)  # J, F, 3, 3: d q / d x per frame
        dfill = torch.einsum("jfai,jfpi->jfpa", rot_t, direction.view(j, nf, npts, 3)).reshape(j, n, 3)
    outs: list[torch.Tensor] = list(fill)
    douts: list[torch.Tensor | None] = list(dfill) if tangents else [None] * j
    for joints in self.levels:
        for group in level_groups([counts[i] for i in joints]):
            members = [joints[i] for i in group]
            idx = torch.tensor(members, device=x.device)
            rows = order[idx, : max(counts[i] for i in members)]  # k, M
            y, dy = _run_rows(self, idx, members, rows, [counts[i] for i in members], inputs, frame, cond, jac,
                                   outs, douts)
            for i, joint in enumerate(members):
                outs[joint], douts[joint] = y[i], None if dy is None else dy[i]
    parts = torch.stack(outs, dim=-1).view(nf, npts, j)
    # the residual fades out beyond the supports (a smoothstep over the margin from the nearest box), where the
    # SDF is the soft-min of the box distances: the residual need not correct that far field
    nearest, which = fill.min(0)
    gate, slope = support_blend(nearest, margin)
    dgate = None if dfill is None else \
        (slope.unsqueeze(-1) * dfill[which, torch.arange(n, device=x.device)]).view(nf, npts, 3)
    return parts, torch.stack(douts, dim=-1).view(nf, npts, 3, j) if tangents else None, gate.view(nf, npts), \
        dgate

def _run_rows(self, idx, members, rows, counts, inputs, frame, cond, jac, outs, douts):
    """The sub-networks ``idx`` (k,; joints ``members``) on their ``rows`` (k, M; the first ``counts`` of each are
    its points, the rest padding), scattered into their parts' current values: (k, n) and, with tangents,
    (k, n, 3)."""
    k, m = rows.shape
    n = inputs.shape[0] // self.skeleton.num_joints
    valid = torch.arange(m, device=rows.device) < torch.tensor(counts, device=rows.device).unsqueeze(1)
    xp = inputs.index_select(0, (idx.unsqueeze(1) * n + rows).view(-1)).view(k, m, 3)
    parents = [self.skeleton.parents[i] for i in members]
    root = parents[0] < 0 or not self.cfg.hierarchical
    flat = (torch.arange(k, device=rows.device).unsqueeze(1) * n + rows).view(-1)  # row r of member i
    parent = xp.new_zeros(k, m, 1) if root else \
        torch.stack([outs[p] for p in parents]).view(-1).index_select(0, flat).view(k, m, 1)
    row_frame = frame[rows]  # k, M
    dxp = None
    if douts[members[0]] is not None:
        dparent = xp.new_zeros(k, m, 3, 1) if root else \
            torch.stack([douts[p] for p in parents]).view(-1, 3).index_select(0, flat).view(k, m, 3, 1)
        step = jac.shape[1]
        own_jac = jac.reshape(-1, 3, 3).index_select(0, (idx.unsqueeze(1) * step + row_frame).view(-1))
        dxp = torch.cat([own_jac.view(k, m, 3, 3), dparent], dim=-1)  # k, M, 3, 4
    value, dvalue = self.subnets.run(idx, torch.cat([xp, parent], dim=-1), cond, dxp, row_frame)
    y = torch.stack([outs[i] for i in members])
    y = y.scatter(1, rows, torch.where(valid, value, y.gather(1, rows)))
    if dvalue is None:
        return y, None
    dy = torch.stack([douts[i] for i in members])
    rows3 = rows.unsqueeze(-1).expand(k, m, 3)
    return y, dy.scatter(1, rows3, torch.where(valid.unsqueeze(-1), dvalue, dy.gather(1, rows3)))



def support_blend(distance: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A smoothstep from 1 at ``distance`` 0 to 0 at ``margin`` and beyond (continuous with its first derivative),
    and its derivative by the distance."""
    scale = max(margin, torch.finfo(distance.dtype).tiny)
    t = (distance / scale).clamp(0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t), -6.0 * t * (1.0 - t) / scale


def row_order(need: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """For each joint (row of ``need``, (J, n) bool): a permutation of the n points with the points it runs on
    first, each part in its original order (J, n), and their counts (one transfer to the host per call)."""
    need_i = need.long()
    count = need_i.sum(1, keepdim=True)
    position = torch.where(need, need_i.cumsum(1) - 1, count + (1 - need_i).cumsum(1) - 1)
    points = torch.arange(need.shape[1], device=need.device).expand_as(position)
    return torch.empty_like(position).scatter_(1, position, points), count.squeeze(1).tolist()


def level_groups(counts: list[int]) -> list[list[int]]:
    """The joints of one level (positions in ``counts``, their point counts) as at most two stacked calls: the
    split of the joints sorted by count that pads least (each call pads its joints to its largest count); joints
    with no point run in neither."""
    ranked = sorted((i for i, c in enumerate(counts) if c), key=lambda i: counts[i])
    if len(ranked) < 2:
        return [ranked] if ranked else []

    def padded(split: int) -> int:
        return split * counts[ranked[split - 1]] + (len(ranked) - split) * counts[ranked[-1]]

    split = min(range(1, len(ranked) + 1), key=padded)
    return [group for group in (ranked[:split], ranked[split:]) if group]
