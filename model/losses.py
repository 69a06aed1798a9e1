"""The loss of equation 2 (seed 000, section 3.4):

    L = L_surface + l_eik L_eikonal + l_n L_normal + sum_k (L_surface^(k) + l_n L_normal^(k))

L_surface = mean |F(x)| and L_normal = mean ||grad F(x) - n(x)|| over surface points; L_eikonal = mean
(||grad F|| - 1)^2 over points uniform in the canonical bbox and near the surface; the per-joint terms apply the
surface and normal losses to sub-network k's own output F_k on the surface points labelled k (geodesic labels). The
paper writes sums; we use means over points (the same minimiser, weights independent of the point count), and the
per-joint terms are averaged over all labelled points (each point counts once, for its own joint).

Beyond the paper (off unless ``lambda_sdf > 0``; the ``fast`` preset uses it): an L1 term pulling F at the eikonal
points towards the signed distance to the nearest oriented surface sample (``model.data.oriented_distance``). The
paper's loss only sees the surface and the eikonal constraint; this term removes spurious inside regions far from
the body in a few hundred steps instead of many thousands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import NamedTuple

import torch

from hipnet.model.config import TrainConfig
from hipnet.model.hipnet import HIPNet


@dataclass
class Batch:
    points: torch.Tensor  # (F, P, 3) surface points, canonical frame
    normals: torch.Tensor  # (F, P, 3)
    labels: torch.Tensor  # (F, P) long, joint index
    eikonal: torch.Tensor  # (F, E, 3) eikonal points
    joint_transforms: torch.Tensor  # (F, J, 4, 4)
    subject: torch.Tensor  # (F,) long, code index
    eikonal_sdf: torch.Tensor | None = None  # (F, E) estimated signed distance of the eikonal points (lambda_sdf)

    @classmethod
    def from_dict(cls, raw: Mapping[str, torch.Tensor | None]) -> Batch:
        """The batch in ``raw`` (a loader's dict), field by field name; keys that are not fields are ignored."""
        optional = {f.name for f in fields(cls) if f.default is None}
        missing = [f.name for f in fields(cls) if f.name not in raw and f.name not in optional]
        if missing:
            raise ValueError(f"batch lacks {missing} (has {sorted(raw)})")
        return cls(**{f.name: raw.get(f.name) for f in fields(cls)})

    def to(self, device) -> Batch:
        return replace(self, **{f.name: t.to(device, non_blocking=True) for f in fields(self)
                                if (t := getattr(self, f.name)) is not None})


class LossResult(NamedTuple):
    """The loss to minimise and its named terms (``total`` among them), each a detached 0-d tensor: reading them
    as floats synchronises with the device, so the trainer does it on logging steps only."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


# what the trainer calls: (the module to run, which may be DDP-wrapped; the batch) -> loss and its terms
LossFn = Callable[[torch.nn.Module, Batch], LossResult]


def gradient(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d(sum y)/dx, kept in the graph (the losses differentiate it again)."""
    return torch.autograd.grad(y.sum(), x, create_graph=True)[0]


def hipnet_loss(model: HIPNet, batch: Batch, lambda_eikonal: float = 0.1, lambda_normal: float = 0.1,
                subnet_losses: bool = True, forward=None, lambda_sdf: float = 0.0,
                gradients: str = "autograd") -> LossResult:
    """Total loss and its terms (detached 0-d tensors, for logging). ``forward`` defaults to ``model`` (tests pass
    the naive one). ``lambda_sdf > 0`` adds lambda_sdf * mean |F(x) - d(x)| over the eikonal points,
    d = ``batch.eikonal_sdf``. ``gradients``: how dF/dx and dF_k/dx are obtained: "autograd" (a
    ``create_graph`` gradient, so the step is a double backward) or "forward" (``HIPNet.forward(gradients=True)``:
    the same values, one backward)."""
    forward = forward or model
    n_surface = batch.points.shape[1]
    x = torch.cat([batch.points, batch.eikonal], dim=1)
    if gradients == "forward":
        out = forward(x, batch.joint_transforms, batch.subject, gradients=True)
        sdf, parts, grad, part_grads = out.sdf.float(), out.parts.float(), out.grad.float(), out.part_grads
    else:
        x = x.requires_grad_(True)
        out = forward(x, batch.joint_transforms, batch.subject)
        sdf, parts = out.sdf.float(), out.parts.float()
        grad = gradient(sdf, x).float()
    g_surface, g_eik = grad[:, :n_surface], grad[:, n_surface:]
    surface = sdf[:, :n_surface].abs().mean()
    normal = (g_surface - batch.normals).norm(dim=-1).mean()
    eikonal = ((g_eik.norm(dim=-1) - 1) ** 2).mean()
    total = surface + lambda_eikonal * eikonal + lambda_normal * normal
    terms = {"surface": surface, "eikonal": eikonal, "normal": normal}
    if lambda_sdf:
        if batch.eikonal_sdf is None:
            raise ValueError("lambda_sdf > 0 needs batch.eikonal_sdf (FrameStream(sdf_targets=True))")
        target = batch.eikonal_sdf
        known = torch.isfinite(target)  # NaN: no target there (TrainConfig.sdf_target_band)
        error = (sdf[:, n_surface:] - torch.where(known, target, 0.0)).abs()
        distance = (error * known).sum() / known.sum().clamp(min=1)
        total = total + lambda_sdf * distance
        terms["sdf"] = distance
    if subnet_losses:
        own = parts[:, :n_surface].gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)  # F_label(x)
        if gradients == "forward":
            index = batch.labels[:, :, None, None].expand(-1, -1, 3, 1)
            g_own = part_grads[:, :n_surface].gather(-1, index).squeeze(-1).float()
        else:
            g_own = gradient(own, x)[:, :n_surface].float()
        sub_surface = own.abs().mean()
        sub_normal = (g_own - batch.normals).norm(dim=-1).mean()
        total = total + sub_surface + lambda_normal * sub_normal
        terms |= {"sub_surface": sub_surface, "sub_normal": sub_normal}
    return LossResult(total, {"total": total.detach()} | {k: v.detach() for k, v in terms.items()})


def loss_for(cfg: TrainConfig) -> LossFn:
    """Equation 2 with ``cfg``'s weights: the trainer's default loss."""
    return partial(hipnet_loss, lambda_eikonal=cfg.lambda_eikonal, lambda_normal=cfg.lambda_normal,
                   subnet_losses=cfg.subnet_losses, lambda_sdf=cfg.lambda_sdf, gradients=cfg.gradients)
