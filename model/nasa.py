"""NASA, the deformable model "D" (seed 003, section 4.3): the baseline HIPNet was published against, here so both
train on the same stores and are scored by the same evaluation code.

For every bone b (one per skeleton joint; the joint transform ``B_b = [G_b | J_b]`` of docs/architecture.md section 3):

- the query in the bone's frame, ``B_b^-1 x = G_b^T (x - J_b)``;
- the part-specific pose, ``Pi_b [{B_c^-1 t_0}_c]``: the model origin t_0 (the canonical pelvis, 0) seen from every
  bone's frame, ``-G_c^T J_c`` (J x 3), projected by a learnt linear map to D = 4 numbers;
- an MLP (4 layers of ``width`` with residual connections, leaky ReLU 0.1) gives the part's occupancy logit.

The parts are blended with a soft maximum (the paper: "softmax whenever a max was employed"): the model's logit is
``logsumexp(k l_b) / k`` (k = ``soft_blend``), its occupancy the sigmoid of that. Training (section 4.4): squared
error of the occupancy on points uniform in the bbox and near the surface, plus ``lambda_weights`` x the auxiliary
term on mesh vertices labelled by the argmax of their skinning weights (part b's occupancy 0.5 on its own vertices,
0 on the others).

One departure, named: ``code_dim > 0`` adds an auto-decoded subject code to every part's input (NASA trains one
model per subject; the harness trains one model on many subjects, as HIPNet does). ``code_dim: 0`` is NASA as
published.

``forward`` returns ``0.5 - occupancy`` as the "SDF" (negative inside, the 0.5 level set at zero), so the
evaluation, meshing and fitting code that takes a HIPNet takes this model unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hipnet.model.functional import SDFOutput
from hipnet.pipeline.core.skeleton import Skeleton


@dataclass(frozen=True)
class NasaConfig:
    width: int = 40  # neurons per layer of every part MLP (the paper: 40 for the structured models)
    layers: int = 4
    pose_dim: int = 4  # D, the size of each part's projected pose (the paper: 4)
    code_dim: int = 32  # subject code size; 0 = NASA as published (one subject per model)
    code_init_std: float = 1e-4
    soft_blend: float = 5.0  # k of the soft maximum over parts
    leaky: float = 0.1
    lambda_weights: float = 0.5  # the auxiliary skinning-weight loss (the paper: 0.5)


class NASA(nn.Module):
    def __init__(self, skeleton: Skeleton, n_subjects: int, cfg: NasaConfig) -> None:
        super().__init__()
        self.cfg, self.skeleton = cfg, skeleton
        j = skeleton.num_joints
        self.code_dim = cfg.code_dim if n_subjects > 1 else 0
        self.codes = nn.Embedding(n_subjects, self.code_dim) if self.code_dim else None
        if self.codes is not None:
            nn.init.normal_(self.codes.weight, 0.0, cfg.code_init_std)
        self.project = nn.Parameter(torch.randn(j, 3 * j, cfg.pose_dim) / math.sqrt(3 * j))  # Pi_b
        d_in = 3 + cfg.pose_dim + self.code_dim
        dims = [d_in] + [cfg.width] * (cfg.layers - 1) + [1]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(j, a, b) * math.sqrt(2.0 / a)) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(j, 1, b)) for b in dims[1:])

    def part_logits(self, x: torch.Tensor, joint_transforms: torch.Tensor, subject: torch.Tensor | None = None,
                    code: torch.Tensor | None = None) -> torch.Tensor:
        """Occupancy logits of every part (F, P, J) at canonical points ``x`` (F, P, 3)."""
        nf, npts, _ = x.shape
        j = self.skeleton.num_joints
        rot, trans = joint_transforms[..., :3, :3], joint_transforms[..., :3, 3]  # (F, J, 3, 3), (F, J, 3)
        local = torch.einsum("fjab,fpa->jfpb", rot, x) - torch.einsum("fjab,fja->jfb", rot, trans).unsqueeze(2)
        origin = -torch.einsum("fjab,fja->fjb", rot, trans).reshape(nf, 3 * j)  # {B_c^-1 t_0}_c
        pose = torch.einsum("fi,jid->jfd", origin, self.project)  # (J, F, D)
        cond = [pose]
        if self.codes is not None:
            c = self.codes(subject) if code is None else code
            cond.append(c.to(x.dtype).unsqueeze(0).expand(j, nf, self.code_dim))
        cond = torch.cat(cond, dim=-1).unsqueeze(2).expand(j, nf, npts, -1)
        h = torch.cat([local, cond], dim=-1).reshape(j, nf * npts, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            y = torch.baddbmm(b, h, w)
            if i == last:
                h = y
            else:
                y = F.leaky_relu(y, self.cfg.leaky)
                h = h + y if y.shape == h.shape else y  # residual wherever the widths agree
        return h.reshape(j, nf, npts).permute(1, 2, 0)

    def blend(self, logits: torch.Tensor) -> torch.Tensor:
        """Soft maximum over parts (F, P, J) -> (F, P) logit."""
        k = self.cfg.soft_blend
        return torch.logsumexp(k * logits, dim=-1) / k

    def forward(self, x: torch.Tensor, joint_transforms: torch.Tensor, subject: torch.Tensor | None = None,
                code: torch.Tensor | None = None, phi: torch.Tensor | None = None) -> SDFOutput:
        """``SDFOutput(0.5 - occupancy (F, P), part logits (F, P, J))``: the same call, result and sign as HIPNet's
        SDF."""
        if phi is not None:
            raise ValueError("NASA has no learnt pose space: interpolate joint transforms instead")
        logits = self.part_logits(x, joint_transforms, subject, code)
        return SDFOutput(0.5 - torch.sigmoid(self.blend(logits)), logits)


@dataclass
class NasaBatch:
    points: torch.Tensor  # (F, P, 3) uniform and near-surface points, canonical frame
    occupancy: torch.Tensor  # (F, P) float, 1 inside
    vertices: torch.Tensor  # (F, V, 3) mesh vertices
    vertex_labels: torch.Tensor  # (F, V) long, argmax of the skinning weights
    joint_transforms: torch.Tensor  # (F, J, 4, 4)
    subject: torch.Tensor  # (F,) long


def nasa_loss(model: NASA, batch: NasaBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Equation 9 of seed 003: occupancy L2 + lambda x the skinning-weight auxiliary term (equation 10)."""
    logits = model.part_logits(batch.points, batch.joint_transforms, batch.subject)
    occupancy = ((torch.sigmoid(model.blend(logits)) - batch.occupancy) ** 2).mean()
    part = torch.sigmoid(model.part_logits(batch.vertices, batch.joint_transforms, batch.subject))  # F, V, J
    target = 0.5 * F.one_hot(batch.vertex_labels, part.shape[-1]).to(part.dtype)
    weights = ((part - target) ** 2).mean()
    total = occupancy + model.cfg.lambda_weights * weights
    return total, {"total": total.detach(), "occupancy": occupancy.detach(), "weights": weights.detach()}


class NasaSampler:
    """Training batches for NASA from a training store written with evaluation arrays (``eval_on_train``): per
    frame ``points`` uniform + ``points`` near-surface samples with occupancy and ``vertices`` mesh vertices with
    their skinning-weight labels. Frames and points are drawn by a generator seeded by (seed, step), so a step's
    batch does not depend on what ran before it."""

    def __init__(self, store, vertex_labels: dict[str, np.ndarray], frames_per_step: int, points: int, vertices: int,
                 seed: int) -> None:
        missing = [s for s in ("eval", "mesh") if s not in store.sections]
        if missing:
            raise ValueError(f"{store.path}: NASA trains on occupancy samples and meshes; this store lacks "
                             f"{missing} (preprocess the training split with evaluation arrays)")
        unknown = sorted(set(store.subjects) - set(vertex_labels))
        if unknown:
            raise ValueError(f"{store.path}: no skinning-weight labels for subjects {unknown}")
        self.store, self.frames_per_step, self.points, self.vertices, self.seed = (
            store, frames_per_step, points, vertices, seed)
        self.subject_ids = store.read("frame/subject").astype(np.int64)
        self.labels = [np.asarray(vertex_labels[name], dtype=np.int64) for name in store.subjects]

    def batch(self, step: int) -> NasaBatch:
        rng = np.random.default_rng([self.seed, step])
        frames = np.sort(rng.choice(self.store.n_frames, self.frames_per_step, replace=False))
        pts, occ, verts, vlab = [], [], [], []
        for i in frames:
            p, o = [], []
            for kind in ("uniform", "near"):
                all_p = self.store.read(f"eval/{kind}_points", int(i))
                pick = rng.choice(len(all_p), self.points, replace=False)
                p.append(all_p[pick])
                o.append(self.store.read(f"eval/{kind}_occupancy", int(i))[pick])
            v = self.store.read("mesh/vertices", int(i))
            pick = rng.choice(len(v), min(self.vertices, len(v)), replace=False)
            pts.append(np.concatenate(p))
            occ.append(np.concatenate(o))
            verts.append(v[pick])
            vlab.append(self.labels[self.subject_ids[i]][pick])
        t = torch.as_tensor
        return NasaBatch(t(np.stack(pts)), t(np.stack(occ), dtype=torch.float32), t(np.stack(verts)),
                         t(np.stack(vlab)), t(self.store.read("pose/joint_transforms", frames)),
                         t(self.subject_ids[frames]))
