"""The network's arithmetic as pure functions of tensors (as smplx keeps ``lbs.py`` apart from its modules): the
query point in each joint's frame, the stacked per-joint MLPs with their forward-mode tangents, and the soft-min
union. ``model/hipnet.py`` holds the parameters and the one loop over the skeleton's levels that calls these.

Every function takes the tensors it works on and returns new ones; none reads module state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class SDFOutput(NamedTuple):
    """What a network returns for query points (F, P, 3): the SDF (F, P), the part values (F, P, J) (HIPNet's part
    SDFs, NASA's part logits) and, when asked for, the spatial gradients dF/dx (F, P, 3) and dF_k/dx (F, P, 3, J)."""

    sdf: torch.Tensor
    parts: torch.Tensor
    grad: torch.Tensor | None = None
    part_grads: torch.Tensor | None = None


def joint_points(x: torch.Tensor, joint_transforms: torch.Tensor, idx: torch.Tensor, local: bool) -> torch.Tensor:
    """The query points ``x`` (F, P, 3) as the sub-networks of joints ``idx`` (k,) see them, (k, F, P, 3): in the
    canonical frame, or with ``local`` in each joint's frame, R^T (x - t) for its posed transform [R | t]."""
    if not local:
        return x.unsqueeze(0).expand(len(idx), *x.shape)
    t = joint_transforms[:, idx]  # F, k, 4, 4
    rot, trans = t[..., :3, :3], t[..., :3, 3]
    return torch.einsum("fkji,fpj->kfpi", rot, x) - torch.einsum("fkji,fkj->kfi", rot, trans).unsqueeze(2)


def joint_points_jacobian(x: torch.Tensor, joint_transforms: torch.Tensor, idx: torch.Tensor,
                          local: bool) -> torch.Tensor:
    """d(joint_points)/dx for the joints ``idx``: (k, F, 3, 3), row a = the derivative along axis a; the identity
    in the canonical frame, R^T (row a = R[a, :]) in joint frames."""
    if not local:
        return torch.eye(3, dtype=x.dtype, device=x.device).expand(len(idx), x.shape[0], 3, 3)
    return joint_transforms[:, idx, :3, :3].transpose(0, 1)


def stacked_mlp(w_point: list[torch.Tensor], bias: list[torch.Tensor], w_cond: dict[int, torch.Tensor],
                idx: torch.Tensor, xp: torch.Tensor, cond: torch.Tensor | None, skip: int, beta: float,
                dxp: torch.Tensor | None = None,
                frame_of: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The MLPs ``idx`` (k,) of a stack, as one batched matmul per layer.

    ``w_point[l]`` (J, in, out) and ``bias[l]`` (J, out) are layer l's weights of every MLP; ``w_cond[l]``
    (J, d_cond, out), for the first and the skip layer, projects the per-frame ``cond`` (F, d_cond), broadcast over
    the frame's points. Layer ``skip`` sees ``cat(h, input) / sqrt(2)`` (IGR's skip); softplus(beta) between layers.
    ``xp`` (k, F, P, d_point) holds the point inputs. Returns (k, F, P) and, when ``dxp`` (k, F, P, 3, d_point)
    gives the inputs' derivatives along 3 directions, the output's (k, F, P, 3) by forward-mode differentiation
    (the conditioning has no tangent; softplus' derivative is sigmoid(beta y)); else None.

    With ``frame_of`` (k, R) the inputs are rows of any frames (part-local evaluation: each MLP its own points):
    ``xp`` is (k, R, d_point), row r of MLP i belongs to frame ``frame_of[i, r]``, ``dxp`` is (k, R, 3, d_point),
    and the results are (k, R) and (k, R, 3)."""
    if frame_of is None:
        k, nf, npts, _ = xp.shape
        shape = (k, nf, npts)
    else:
        k, nf, npts = xp.shape[0], None, None
        shape = (k, xp.shape[1])
    rows = math.prod(shape[1:])
    inp = xp.reshape(k, rows, -1)
    dinp = None if dxp is None else dxp.reshape(k, rows * 3, -1)
    h, dh = inp, dinp
    last = len(w_point) - 1
    for layer in range(len(w_point)):
        if layer == skip:
            h = torch.cat([h, inp], dim=-1) / math.sqrt(2)
            if dh is not None:
                dh = torch.cat([dh, dinp], dim=-1) / math.sqrt(2)
        w = w_point[layer][idx]
        y = torch.bmm(h, w) + bias[layer][idx].unsqueeze(1)
        dy = None if dh is None else torch.bmm(dh, w)
        if cond is not None and layer in w_cond:
            c = torch.matmul(cond.unsqueeze(0), w_cond[layer][idx])  # (k, F, out)
            if frame_of is None:
                y = (y.view(k, nf, npts, -1) + c.unsqueeze(2)).view(k, rows, -1)
            else:
                rows_of = (torch.arange(k, device=c.device).unsqueeze(1) * c.shape[1] + frame_of).view(-1)
                y = y + c.reshape(-1, c.shape[-1]).index_select(0, rows_of).view(k, shape[1], -1)
        if layer == last:
            h, dh = y, dy
        else:
            h = F.softplus(y, beta=beta)
            if dy is not None:
                slope = torch.sigmoid(beta * y)  # softplus'(y)
                dh = (dy.view(k, rows, 3, -1) * slope.unsqueeze(2)).view(k, rows * 3, -1)
    return h.view(shape), None if dh is None else dh.view(*shape, 3)


def softmin_union(parts: torch.Tensor, tau: float, offset: float) -> torch.Tensor:
    """Smooth minimum of the part SDFs (F, P, J) -> (F, P): -tau (logsumexp(-parts / tau) - offset). With offset
    log J it equals F where every part equals F and lies up to tau log J above the closest part; with 0 it lies at
    or below the closest part, within tau log J."""
    return -tau * (torch.logsumexp(-parts / tau, dim=-1) - offset)


def softmin_weights(parts: torch.Tensor, tau: float) -> torch.Tensor:
    """d softmin_union / d part_k (F, P, J): a softmax of -parts / tau."""
    return torch.softmax(-parts / tau, dim=-1)


def box_distance(q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance from points ``q`` (..., 3) to the axis-aligned boxes [``lo``, ``hi``] (broadcast against
    ``q``): (...), 0 inside; and its direction (..., 3), the unit vector from the box's closest point (0 inside),
    which is the distance's gradient with respect to ``q``.

    The distance is returned as ``d . u`` with the direction ``u`` held constant, which has the distance's value
    and first derivative; its second derivative is taken as zero, which no parameter's gradient reads (the box
    has no parameters), and it spares the norm's backward over every joint and point."""
    d = q - torch.maximum(torch.minimum(q, hi), lo)
    with torch.no_grad():
        dist = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
        direction = d / dist.clamp_min(torch.finfo(d.dtype).tiny)
    return (d * direction).sum(-1), direction
