"""The toy of bench/toy_articulation.py: a 3-capsule arm with its exact SDF, its oriented surface samples and labels,
training batches shaped like the real loader's, the held-out evaluation set and the trivial baselines."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hipnet.model.data import oriented_distance
from hipnet.model.hipnet import HIPNet
from hipnet.model.losses import Batch
from hipnet.pipeline.core.skeleton import Skeleton

SKELETON = Skeleton(("torso", "upper_arm", "forearm"), (-1, 0, 1))
TORSO = (np.array([0.0, -0.30, 0.0]), np.array([0.0, 0.30, 0.0]), 0.10)  # a, b, radius (rest = posed: root fixed)
SHOULDER = np.array([0.20, 0.28, 0.0])  # hanging straight down, the upper arm clears the torso by 3.5 cm
UPPER, FORE = (0.32, 0.065), (0.30, 0.055)  # length, radius (rest direction +x)


# ------------------------------------------------------------------------------------------------ the toy shape


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class Pose:
    transforms: np.ndarray  # (3, 4, 4) [G_j | J_j]: global rotation relative to rest, posed joint position
    capsules: list  # [(a, b, r)] per joint


def make_pose(shoulder_z: float, shoulder_y: float, elbow: float) -> Pose:
    """Angles in degrees."""
    r1 = rot_z(math.radians(shoulder_z)) @ rot_y(math.radians(shoulder_y))
    r2 = r1 @ rot_z(math.radians(elbow))
    elbow_pos = SHOULDER + r1 @ np.array([UPPER[0], 0.0, 0.0])
    hand = elbow_pos + r2 @ np.array([FORE[0], 0.0, 0.0])
    t = np.tile(np.eye(4), (3, 1, 1))
    for j, (rot, pos) in enumerate([(np.eye(3), np.zeros(3)), (r1, SHOULDER), (r2, elbow_pos)]):
        t[j, :3, :3], t[j, :3, 3] = rot, pos
    return Pose(t, [TORSO, (SHOULDER, elbow_pos, UPPER[1]), (elbow_pos, hand, FORE[1])])


def random_poses(n: int, seed: int) -> list[Pose]:
    rng = np.random.default_rng(seed)
    return [make_pose(rng.uniform(-95, 70), rng.uniform(-45, 45), rng.uniform(0, 140)) for _ in range(n)]


def capsule_sdf(x: np.ndarray, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    ab = b - a
    t = np.clip((x - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(x - (a + t[..., None] * ab), axis=-1) - r


def part_sdfs(x: np.ndarray, pose: Pose) -> np.ndarray:
    """(..., J) the capsule SDFs."""
    return np.stack([capsule_sdf(x, *c) for c in pose.capsules], axis=-1)


def toy_sdf(x: np.ndarray, pose: Pose) -> np.ndarray:
    """The toy's SDF: min over the capsule SDFs (exact outside the union; the occupancy is exact)."""
    return part_sdfs(x, pose).min(-1)


def sample_capsule(a: np.ndarray, b: np.ndarray, r: float, n: int, rng: np.random.Generator):
    """``n`` area-uniform points on a capsule's surface and their normals."""
    axis = b - a
    length = np.linalg.norm(axis)
    u = axis / length
    cyl = 2 * math.pi * r * length / (2 * math.pi * r * length + 4 * math.pi * r * r)
    on_cyl = rng.random(n) < cyl
    # cylinder: an orthonormal frame around the axis
    helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    ang = rng.uniform(0, 2 * math.pi, n)
    radial = np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2
    p_cyl = a + rng.uniform(0, length, n)[:, None] * u + r * radial
    # two hemispheres = one sphere split by the sign along the axis
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    p_sph = np.where((d @ u >= 0)[:, None], b, a) + r * d
    pts = np.where(on_cyl[:, None], p_cyl, p_sph)
    nrm = np.where(on_cyl[:, None], radial, d)
    return pts, nrm


def sample_surface(pose: Pose, n: int, rng: np.random.Generator):
    """About ``n`` area-uniform oriented samples of the union's surface and their labels (the capsule a point lies
    on; points inside another capsule are dropped)."""
    areas = np.array([2 * math.pi * r * np.linalg.norm(b - a) + 4 * math.pi * r * r for a, b, r in pose.capsules])
    counts = np.maximum(1, np.round(n * areas / areas.sum() * 1.3).astype(int))
    pts, nrm, lab = [], [], []
    for j, (c, k) in enumerate(zip(pose.capsules, counts, strict=True)):
        p, m = sample_capsule(*c, k, rng)
        others = np.delete(part_sdfs(p, pose), j, axis=1)
        keep = (others > 1e-6).all(1)
        pts.append(p[keep])
        nrm.append(m[keep])
        lab.append(np.full(keep.sum(), j))
    pts, nrm, lab = np.concatenate(pts), np.concatenate(nrm), np.concatenate(lab)
    idx = rng.permutation(len(pts))[:n]
    return pts[idx].astype(np.float32), nrm[idx].astype(np.float32), lab[idx].astype(np.int64)


@dataclass
class ToyData:
    poses: list
    points: list  # per frame (S, 3) surface pools
    normals: list
    labels: list

    @classmethod
    def build(cls, n_poses: int, pool: int, seed: int, extra: list | None = None) -> ToyData:
        poses = random_poses(n_poses, seed) + (extra or [])
        rng = np.random.default_rng(seed + 1)
        samples = [sample_surface(p, pool, rng) for p in poses]
        return cls(poses, *[[s[i] for s in samples] for i in range(3)])

    def transforms(self, idx) -> torch.Tensor:
        return torch.tensor(np.stack([self.poses[i].transforms for i in idx]), dtype=torch.float32)


def sample_batch(data: ToyData, rng: np.random.Generator, frames: int, points: int, eikonal: int,
                 sdf_targets: bool, eikonal_mode: str = "mixed", bbox_margin: float = 0.1,
                 near_sigma: float = 0.03) -> Batch:
    """One step's batch, as ``FrameStream._sample`` draws it (``eikonal_mode``: mixed = half uniform in the frame's
    bbox grown by ``bbox_margin``, half surface + N(0, near_sigma); uniform; near)."""
    idx = rng.choice(len(data.poses), size=frames, replace=False)
    out = {k: [] for k in ("points", "normals", "labels", "eikonal", "eikonal_sdf")}
    for i in idx:
        pts, nrm, lab = data.points[i], data.normals[i], data.labels[i]
        s = rng.choice(len(pts), size=points, replace=points > len(pts))
        n_uniform = {"mixed": eikonal // 2, "uniform": eikonal, "near": 0}[eikonal_mode]
        lo, hi = pts.min(0) - bbox_margin, pts.max(0) + bbox_margin
        uniform = rng.uniform(lo, hi, size=(n_uniform, 3))
        near = pts[rng.integers(0, len(pts), eikonal - n_uniform)]
        near = near + rng.normal(0.0, near_sigma, size=near.shape)
        eik = np.concatenate([uniform, near]).astype(np.float32)
        out["points"].append(pts[s])
        out["normals"].append(nrm[s])
        out["labels"].append(lab[s])
        out["eikonal"].append(eik)
        out["eikonal_sdf"].append(oriented_distance(pts, nrm, eik) if sdf_targets else np.zeros(len(eik), np.float32))
    t = {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}
    return Batch(points=t["points"], normals=t["normals"], labels=t["labels"], eikonal=t["eikonal"],
                 joint_transforms=data.transforms(idx), subject=torch.zeros(frames, dtype=torch.long),
                 eikonal_sdf=t["eikonal_sdf"] if sdf_targets else None)


# ------------------------------------------------------------------------------------------------ evaluation


@dataclass
class EvalSet:
    data: ToyData
    uniform: list  # per pose (U, 3)
    near: list  # per pose (N, 3)
    uniform_sdf: list
    near_sdf: list

    @classmethod
    def build(cls, data: ToyData, n: int, seed: int) -> EvalSet:
        rng = np.random.default_rng(seed)
        uni, near = [], []
        for pts in data.points:
            lo, hi = pts.min(0), pts.max(0)
            grow = 0.05 * np.linalg.norm(hi - lo)
            uni.append(rng.uniform(lo - grow, hi + grow, size=(n, 3)).astype(np.float32))
            near.append((pts[rng.integers(0, len(pts), n)] + rng.normal(0, 0.03, (n, 3))).astype(np.float32))
        return cls(data, uni, near, [toy_sdf(u, p) for u, p in zip(uni, data.poses, strict=True)],
                   [toy_sdf(u, p) for u, p in zip(near, data.poses, strict=True)])


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = (pred | gt).sum()
    return float((pred & gt).sum() / union) if union else 1.0


@torch.no_grad()
def model_sdf(model: HIPNet, x: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    jt = torch.tensor(transforms[None], dtype=torch.float32)
    return np.concatenate([model(torch.from_numpy(c[None]), jt)[0][0].numpy() for c in np.array_split(x, 4)])


def score(sdf_fn, ev: EvalSet) -> dict:
    """``sdf_fn(points, pose_index) -> F``; means over the poses of: the IoUs, the near-surface IoU per part (near
    points grouped by their nearest capsule, as the per-joint IoU of ``model.evaluate``) and mean |F - SDF| near the
    surface."""
    u, n, err, parts = [], [], [], []
    for i, pose in enumerate(ev.data.poses):
        fu, fn = sdf_fn(ev.uniform[i], i), sdf_fn(ev.near[i], i)
        gt = ev.near_sdf[i] < 0
        u.append(iou(fu < 0, ev.uniform_sdf[i] < 0))
        n.append(iou(fn < 0, gt))
        err.append(float(np.abs(fn - ev.near_sdf[i]).mean()))
        label = part_sdfs(ev.near[i], pose).argmin(-1)
        parts.append([iou((fn < 0)[label == j], gt[label == j]) for j in range(SKELETON.num_joints)])
    part = np.mean(parts, axis=0)
    return {"uniform_iou": float(np.mean(u)), "near_iou": float(np.mean(n)), "near_abs_err": float(np.mean(err)),
            "part_near_iou": {name: float(x) for name, x in zip(SKELETON.names, part, strict=True)}}


def mean_shape_baseline(train: ToyData, ev: EvalSet) -> dict:
    """A pose-agnostic shape: inside where more than half of the training poses are inside (a model that ignores
    the pose can at best do about this well)."""
    def f(x, _i):
        inside = np.mean([toy_sdf(x, p) < 0 for p in train.poses], axis=0)
        return 0.5 - inside  # only its sign is meaningful

    out = score(f, ev)
    out["near_abs_err"] = None
    return out
