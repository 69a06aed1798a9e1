"""Evaluation (seed 000 section 4.2, FORMATS.md metric protocols): per test frame, then averaged over frames.

- uniform IoU (points in the bbox stretched 10% along its diagonal) and near-surface IoU (surface + N(0, 0.03));
- per-joint near-surface IoU: near points grouped by the joint label of their nearest ground-truth surface sample
  (table 7); a joint with no points in a frame does not count for that frame;
- Chamfer-L1 between the extracted mesh and the ground-truth mesh: 100k points sampled on each, the mean of
  accuracy (prediction to truth) and completeness (truth to prediction), in units of 1/10 of the longest edge of
  the ground-truth bbox, reported x1e-4; the same in millimetres; normal consistency (mean |n . n_nearest|, both
  directions);
- the SNARF variant (cube 1.1x the largest extent; near N(0, 0.01)) when the store holds it.

Everything here takes an SDF as a plain function of points, so the metrics are tested on analytic shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import SDF, Mesh, extract_mesh
from hipnet.pipeline.stages.surface import sample_surface
from hipnet.pipeline.store import Store


def iou(pred_inside: np.ndarray, gt_inside: np.ndarray) -> float:
    union = np.count_nonzero(pred_inside | gt_inside)
    return 1.0 if union == 0 else np.count_nonzero(pred_inside & gt_inside) / union


def joint_ious(pred_inside: np.ndarray, gt_inside: np.ndarray, labels: np.ndarray, n_joints: int) -> np.ndarray:
    """(J,) IoU of the points labelled with each joint; NaN where a joint has no points or an empty union."""
    out = np.full(n_joints, np.nan)
    for j in range(n_joints):
        m = labels == j
        union = np.count_nonzero((pred_inside | gt_inside) & m)
        if union:
            out[j] = np.count_nonzero(pred_inside & gt_inside & m) / union
    return out


@dataclass
class SurfaceScore:
    chamfer_l1_x1e4: float  # (accuracy + completeness) / 2, in units of (longest bbox edge / 10), times 1e4
    chamfer_mm: float
    normal_consistency: float


def surface_metrics(pred: Mesh, gt: Mesh, n: int = 100_000, seed: int = 0) -> SurfaceScore:
    from scipy.spatial import cKDTree

    if len(pred.faces) == 0:
        return SurfaceScore(float("inf"), float("inf"), 0.0)
    rng = np.random.default_rng(seed)
    a = sample_surface(pred.vertices.astype(np.float64), pred.faces, n, rng)
    b = sample_surface(gt.vertices.astype(np.float64), gt.faces, n, rng)
    d_ab, i_ab = cKDTree(b.points).query(a.points)
    d_ba, i_ba = cKDTree(a.points).query(b.points)
    extent = gt.vertices.max(0) - gt.vertices.min(0)
    unit = float(extent.max()) / 10
    mean = (d_ab.mean() + d_ba.mean()) / 2
    nc = (np.abs(np.sum(a.normals * b.normals[i_ab], 1)).mean() + np.abs(np.sum(b.normals * a.normals[i_ba], 1)).mean())
    return SurfaceScore(mean / unit * 1e4, mean * 1000, nc / 2)


@dataclass
class FrameScore:
    frame: int
    subject: str
    sequence: str
    uniform_iou: float
    near_iou: float
    joint_iou: list[float]
    snarf_uniform_iou: float | None = None
    snarf_near_iou: float | None = None
    surface: SurfaceScore | None = None


def model_sdf(model: HIPNet, joint_transforms: np.ndarray, code: torch.Tensor | None, device: str = "cpu",
              phi: torch.Tensor | None = None) -> SDF:
    """The trained network for one frame as a function of points (N, 3) -> SDF (N,). ``code``: the subject code
    (D,) (None in single-subject mode); ``phi``: a pose encoding (pose_dim,) to use instead of the transforms'."""
    jt = torch.as_tensor(joint_transforms, dtype=torch.float32, device=device)[None]
    code = None if code is None else code.to(device)[None]
    phi = None if phi is None else phi.to(device)[None]

    @torch.no_grad()
    def sdf(points: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(points, dtype=torch.float32, device=device)[None]
        return model(x, jt, code=code, phi=phi)[0][0].float().cpu().numpy()

    return sdf


@dataclass
class Evaluation:
    frames: list[FrameScore] = field(default_factory=list)
    meshes: dict[int, tuple[Mesh, Mesh]] = field(default_factory=dict)  # frame -> (prediction, truth)
    queries: int = 0

    def summary(self, joint_names: Sequence[str]) -> dict:
        f = self.frames
        out = {
            "frames": len(f),
            "uniform_miou": float(np.mean([s.uniform_iou for s in f])),
            "near_miou": float(np.mean([s.near_iou for s in f])),
            "per_joint_near_iou": dict(zip(joint_names, np.nanmean([s.joint_iou for s in f], 0).tolist(), strict=True)),
        }
        if f and f[0].snarf_uniform_iou is not None:
            out["snarf_uniform_miou"] = float(np.mean([s.snarf_uniform_iou for s in f]))
            out["snarf_near_miou"] = float(np.mean([s.snarf_near_iou for s in f]))
        surf = [s.surface for s in f if s.surface is not None]
        if surf:
            out["mesh_frames"] = len(surf)
            out["chamfer_l1_x1e4"] = float(np.mean([s.chamfer_l1_x1e4 for s in surf]))
            out["chamfer_mm"] = float(np.mean([s.chamfer_mm for s in surf]))
            out["normal_consistency"] = float(np.mean([s.normal_consistency for s in surf]))
        for key in ("subject", "sequence"):
            groups: dict[str, list[FrameScore]] = {}
            for s in f:
                groups.setdefault(getattr(s, key), []).append(s)
            out[f"per_{key}"] = {k: {"frames": len(v), "uniform_miou": float(np.mean([s.uniform_iou for s in v])),
                                     "near_miou": float(np.mean([s.near_iou for s in v]))}
                                 for k, v in sorted(groups.items())}
        return out

    def to_json(self, joint_names: Sequence[str]) -> dict:
        return {"summary": self.summary(joint_names), "frames": [asdict(s) for s in self.frames]}


def evaluate_store(store: Store, sdf_of: Callable[[int], SDF], frames: Sequence[int], mesh_frames: Sequence[int] = (),
                   resolution: int = 256, chamfer_points: int = 100_000, batch: int = 262_144,
                   progress: Callable[[int], None] | None = None) -> Evaluation:
    """Score ``frames`` of an evaluation store; ``sdf_of(i)`` gives frame i's SDF (canonical frame). Meshes are
    extracted (coarse-to-fine, bbox of the truth x1.1) for ``mesh_frames``."""
    if "eval" not in store.sections:
        raise ValueError(f"{store.path}: no evaluation points (a training store?); preprocess an evaluation split")
    n_joints = store.skeleton.num_joints
    faces = store.read("mesh/faces")
    result = Evaluation()
    mesh_set = set(mesh_frames)
    for i in frames:
        sdf = sdf_of(i)

        def inside(points, sdf=sdf):
            return np.concatenate([sdf(points[s : s + batch]) for s in range(0, len(points), batch)]) < 0

        u = inside(store.read("eval/uniform_points", i))
        nr = inside(store.read("eval/near_points", i))
        near_gt = store.read("eval/near_occupancy", i)
        subject, sequence, _ = store.frame_key(i).split("/")
        score = FrameScore(
            frame=int(i), subject=subject, sequence=sequence,
            uniform_iou=iou(u, store.read("eval/uniform_occupancy", i)),
            near_iou=iou(nr, near_gt),
            joint_iou=joint_ious(nr, near_gt, store.read("eval/near_labels", i), n_joints).tolist(),
        )
        result.queries += len(u) + len(nr)
        if "snarf" in store.sections:
            score.snarf_uniform_iou = iou(inside(store.read("snarf/uniform_points", i)),
                                          store.read("snarf/uniform_occupancy", i))
            score.snarf_near_iou = iou(inside(store.read("snarf/near_points", i)), store.read("snarf/near_occupancy", i))
        if i in mesh_set:
            truth = Mesh(store.read("mesh/vertices", i), faces)
            lo, hi = truth.vertices.min(0), truth.vertices.max(0)
            centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.1
            pred, spent = extract_mesh(sdf, centre - half, centre + half, resolution, batch=batch)
            result.queries += spent
            score.surface = surface_metrics(pred, truth, chamfer_points, seed=int(i))
            result.meshes[int(i)] = (pred, truth)
        result.frames.append(score)
        if progress is not None:
            progress(1)
    return result
