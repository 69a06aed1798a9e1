"""Test-time fitting as ``hipnet-fit`` runs it: what is observed, one fit with its scores, and its files.

The optimisation itself is ``hipnet.model.apps.fit_code``; this module chooses the observed points (sampled on an
evaluation store's ground-truth mesh, all over or only where a front camera sees it, or read from a point cloud),
scores a code with the evaluation's scorer (``hipnet.model.evaluate.score_frame``) and writes the result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hipnet.model.apps import fit_code, front_camera, front_visible, posed_mesh
from hipnet.model.config import FIT
from hipnet.model.data import read_finite
from hipnet.model.evaluate import score_frame
from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import Mesh, save_mesh
from hipnet.model.query import model_sdf
from hipnet.model.report import mesh_rows_png
from hipnet.pipeline.stages.surface import sample_surface
from hipnet.pipeline.store.reading import Store


def observed_points(store: Store, i: int, n: int, front_only: bool, seed: int) -> np.ndarray:
    """``n`` surface points (n, 3) of frame ``i``'s ground-truth mesh (canonical): uniform over the area, or only
    where a camera in front of the body sees the surface. Seeded by (seed, i)."""
    if "mesh" not in store.sections:
        raise ValueError(f"{store.path}: no ground-truth meshes (a training store?); use an evaluation store")
    v, f = read_finite(store, "mesh/vertices", i), store.read("mesh/faces")
    rng = np.random.default_rng([seed, i])
    if not front_only:
        return sample_surface(v, f, n, rng).points
    s = sample_surface(v, f, 8 * n, rng)
    seen = front_visible(v, f, s.points, s.normals, front_camera(v))
    if seen.sum() < n:
        raise ValueError(f"{store.path}: frame {i} shows only {seen.sum()} of {8 * n} samples to the front camera")
    return s.points[seen][:n]


def score_code(model: HIPNet, store: Store, i: int, code: torch.Tensor | None, device: str = "cpu") -> dict:
    """``{"uniform_iou", "near_iou"}`` of frame ``i`` with subject ``code`` (the evaluation's scorer); empty when
    the store has no evaluation points."""
    if "eval" not in store.sections:
        return {}
    score = score_frame(store, i, model_sdf(model, read_finite(store, "pose/joint_transforms", i), code, device))
    return {"uniform_iou": score.uniform_iou, "near_iou": score.near_iou}


@dataclass
class Observation:
    points: np.ndarray  # (P, 3) canonical frame
    joint_transforms: np.ndarray  # (J, 4, 4), the pose the points were observed in
    source: str  # where the points come from, for the report
    store: Store | None = None  # the evaluation store holding the ground truth, if any
    frame: int | None = None


def observe_store(store: Store, i: int, n_points: int, front_only: bool, seed: int) -> Observation:
    """``n_points`` points on frame ``i``'s ground-truth mesh (none: the mean code's "0 points" case)."""
    points = observed_points(store, i, n_points, front_only, seed) if n_points else np.zeros((0, 3))
    return Observation(points, read_finite(store, "pose/joint_transforms", i), f"{store.path}:{store.frame_key(i)}",
                       store, i)


def observe_cloud(cloud: Path, pose_store: Store, i: int, world: bool, n_points: int, seed: int) -> Observation:
    """A point cloud file (PLY/OBJ/XYZ: its vertices) observed in frame ``i``'s pose; ``world``: the cloud is in
    that frame's source frame (taken to the canonical one). At most ``n_points`` of them, drawn with ``seed``."""
    import trimesh

    points = np.asarray(trimesh.load(cloud, process=False).vertices, dtype=np.float64)
    bad = int((~np.isfinite(points).all(axis=1)).sum())
    if bad:
        raise ValueError(f"{cloud}: {bad} of {len(points)} points are not finite (NaN or inf)")
    if world:
        m = read_finite(pose_store, "pose/world_from_canonical", i).astype(np.float64)
        points = (points - m[:3, 3]) @ m[:3, :3]
    if n_points and len(points) > n_points:
        points = points[np.random.default_rng(seed).choice(len(points), n_points, replace=False)]
    return Observation(points, read_finite(pose_store, "pose/joint_transforms", i), str(cloud))


@dataclass
class FitResult:
    code: torch.Tensor  # (D,)
    mesh: Mesh  # the fitted subject in the observed pose
    truth: Mesh | None  # the ground-truth mesh, when the store has it
    report: dict = field(default_factory=dict)  # what fit.json holds


def fit_observation(model: HIPNet, obs: Observation, iters: int = FIT.iters, lr: float = FIT.lr,
                    resolution: int = FIT.resolution,
                    front_only: bool = False, device: str = "cpu") -> FitResult:
    """Fit a code to ``obs`` (no iterations without points), mesh it, score it when the store has ground truth."""
    t0 = time.time()
    result = fit_code(model, obs.points, obs.joint_transforms, iters if len(obs.points) else 0, lr, device=device)
    mesh = posed_mesh(model, obs.joint_transforms, result.code, resolution, device=device)
    report = {"source": obs.source, "points": len(obs.points), "front_only": front_only, "iters": iters, "lr": lr,
              "loss_first": result.losses[0] if result.losses else None,
              "loss_last": result.losses[-1] if result.losses else None, "wall_s": round(time.time() - t0, 1)}
    truth = None
    if obs.store is not None:
        report |= score_code(model, obs.store, obs.frame, result.code, device)
        if "mesh" in obs.store.sections:
            truth = Mesh(read_finite(obs.store, "mesh/vertices", obs.frame), obs.store.read("mesh/faces"))
    return FitResult(result.code, mesh, truth, report)


def write_fit(out: Path, fit: FitResult) -> None:
    """``code.npy``, ``mesh.ply``, ``fit.json`` and ``fit.png`` (ground truth beside the fit when known)."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "code.npy", fit.code.cpu().numpy())
    save_mesh(out / "mesh.ply", fit.mesh)
    (out / "fit.json").write_text(json.dumps(fit.report, indent=2) + "\n")
    if fit.truth is None:
        mesh_rows_png(out / "fit.png", [[fit.mesh]], col_labels=["fitted"])
    else:
        mesh_rows_png(out / "fit.png", [[fit.truth, fit.mesh]], col_labels=["ground truth", "fitted"])
