"""Toy articulation benchmark (issue 14, point 5): can HIPNet's paper formulation articulate a 3-bone shape?

The toy: a torso capsule (the root, fixed at the origin like a canonicalised pelvis), an upper arm hanging from a
shoulder beside it and a forearm, in random poses (shoulder: rotation about z in [-95, 70] degrees and about y in
[-45, 45]; elbow: about its z in [0, 140]). Its SDF is the minimum of the three capsule SDFs: exact outside the
union (the occupancy is exact everywhere; inside, where capsules overlap, it bounds the distance). Training data
mirror the real loader (``model.data.FrameStream``): per frame an area-uniform pool of oriented surface samples
(each capsule sampled, points inside another capsule dropped, label = its capsule), per step ``frames`` frames x
``points`` surface samples and ``eikonal`` points (half uniform in the frame's bbox grown by 0.1, half surface +
N(0, 0.03)), and for ``lambda_sdf`` the oriented-sample distance of ``model.data.oriented_distance``.

The real ``HIPNet`` (a 3-joint ``Skeleton``, one subject) and the real ``hipnet_loss`` are trained for each variant
(the ``small`` preset's network, lr 1e-3, unless the variant says otherwise) and scored on held-out poses: IoU of
F < 0 against the exact occupancy on points uniform in the bbox (grown 5% of its diagonal a side) and near the
surface (N(0, 0.03)), mean |F - SDF| on the near points, and the same against two trivial baselines (the initial
sphere; the pose-agnostic "mean shape", inside where most training poses are inside).

    .venv/bin/python bench/toy_articulation.py            # all variants: table, bench/results/toy_articulation.json,
                                                          # docs/toy_articulation.png
    .venv/bin/python bench/toy_articulation.py --only paper,all3 --steps 300 --no-write
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from hipnet.model.config import PRESETS, ModelConfig
from hipnet.model.data import oriented_distance
from hipnet.model.hipnet import HIPNet
from hipnet.model.losses import Batch, hipnet_loss
from hipnet.pipeline.skeleton import Skeleton

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


# ------------------------------------------------------------------------------------------------ variants


@dataclass
class Variant:
    name: str
    note: str
    model: dict = field(default_factory=dict)  # ModelConfig overrides on the small preset's network
    lr: float = 1e-3
    cosine: bool = False
    lambda_sdf: float = 0.0
    lambda_eikonal: float = 0.1
    subnet_losses: bool = True
    eikonal_mode: str = "mixed"
    init_centres: str = ""  # "body": every initial sphere at the training samples' centroid; "parts": each at its
    # part's mean position (default: the origin)
    steps: int | None = None  # default: the run's --steps
    default: bool = True  # in the default run (the others: --only)


def variants(steps: int) -> list[Variant]:
    local, softmin = {"local_frames": True}, {"aggregation": "softmin"}
    return [
        Variant("paper", "global x, learnt mean, eq. 2 (small preset network, lr 1e-3); trained 6x the steps",
                steps=6 * steps),
        Variant("+local", "paper + local frames", model=local),
        Variant("+softmin", "paper + soft-min aggregation", model=softmin),
        Variant("+sdf", "paper + L1 distance term", lambda_sdf=1.0),
        Variant("+all3", "local + softmin + sdf", model=local | softmin, lambda_sdf=1.0),
        Variant("fast", "fast preset: all3, 32 wide, lr 4e-3 cosine", model=local | softmin | {"hidden": 32},
                lr=4e-3, cosine=True, lambda_sdf=1.0, default=False),
        # the paper's ladder switches (table 6)
        Variant("paper flat", "paper, hierarchical=False", model={"hierarchical": False}),
        Variant("paper no-sub", "paper without the per-joint terms", subnet_losses=False),
        # candidate fixes within the paper's formulation
        Variant("paper lr1e-4", "paper at the paper's lr", lr=1e-4),
        Variant("paper r0.15", "paper, initial spheres of radius 0.15", model={"sphere_radius": 0.15}, default=False),
        Variant("paper body-centred", "paper, initial spheres (r 0.35) at the body's centroid",
                model={"sphere_radius": 0.35}, init_centres="body"),
        Variant("paper part-centred", "paper, initial spheres (r 0.15) at each part's mean position",
                model={"sphere_radius": 0.15}, init_centres="parts", default=False),
        Variant("paper eik-sum", "paper, eikonal weight as eq. 2 read with sums (0.1 / points per step)",
                lambda_eikonal=0.1 / (FRAMES * POINTS)),
        Variant("paper eik-uniform", "paper, all eikonal points uniform in the bbox", eikonal_mode="uniform",
                default=False),
    ]


def model_config(v: Variant) -> ModelConfig:
    small = PRESETS["small"].model
    return replace(small, code_dim=0, **v.model)


@torch.no_grad()
def centre_spheres(model: HIPNet, centres: np.ndarray) -> None:
    """Move each sub-network's initial sphere to ``centres[j]`` (J, 3): its function becomes f(x - c) by shifting
    the biases of the layers that read x (layer 0 and the skip layer)."""
    m = model.subnets
    c = torch.tensor(centres, dtype=torch.float32)
    m.bias[0].sub_(torch.einsum("ji,jio->jo", c, m.w_point[0][:, :3]))
    m.bias[m.skip].sub_(torch.einsum("ji,jio->jo", c, m.w_point[m.skip][:, m.hidden : m.hidden + 3]) / math.sqrt(2))


def part_centres(data: ToyData, body: bool = False) -> np.ndarray:
    """(J, 3): each part's mean sample position over the training poses, or (``body``) the centroid of all."""
    if body:
        return np.tile(np.concatenate(data.points).mean(0), (SKELETON.num_joints, 1))
    return np.stack([np.concatenate([p[lab == j] for p, lab in zip(data.points, data.labels, strict=True)]).mean(0)
                     for j in range(SKELETON.num_joints)])


FRAMES, POINTS, EIKONAL = 4, 250, 500  # per step: frames x (surface + eikonal) points


def train_variant(v: Variant, train: ToyData, ev: EvalSet, steps: int, eval_every: int, seed: int = 0,
                  log=print) -> tuple[HIPNet, list[dict]]:
    """Train variant ``v`` from a fixed seed; the curve of held-out scores every ``eval_every`` steps, with the
    training wall and CPU seconds (the scoring excluded)."""
    torch.manual_seed(seed)
    model = HIPNet(SKELETON, 1, model_config(v))
    if v.init_centres:
        centre_spheres(model, part_centres(train, v.init_centres == "body"))
    opt = torch.optim.Adam(model.parameters(), lr=v.lr)
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * s / steps)))
             if v.cosine else None)
    rng = np.random.default_rng(seed)

    def evaluate(step: int, wall: float, cpu: float, loss: float | None) -> dict:
        row = {"step": step, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "loss": loss}
        row |= score(lambda x, i: model_sdf(model, x, ev.data.poses[i].transforms), ev)
        log(f"  {v.name:18s} step {step:5d} cpu {cpu:6.1f}s  loss {loss or 0:.4f}  uniform {row['uniform_iou']:.3f}  "
            f"near {row['near_iou']:.3f}  forearm {row['part_near_iou']['forearm']:.3f}  "
            f"|F-SDF| {row['near_abs_err']:.4f}", flush=True)
        return row

    curve = [evaluate(0, 0.0, 0.0, None)]
    wall = cpu = 0.0
    running = []
    for step in range(1, steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        batch = sample_batch(train, rng, FRAMES, POINTS, EIKONAL, v.lambda_sdf > 0, v.eikonal_mode)
        res = hipnet_loss(model, batch, lambda_eikonal=v.lambda_eikonal, lambda_normal=0.1,
                          subnet_losses=v.subnet_losses, lambda_sdf=v.lambda_sdf)
        opt.zero_grad(set_to_none=True)
        res.total.backward()
        opt.step()
        if sched is not None:
            sched.step()
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        running.append(float(res.total.detach()))
        if step % eval_every == 0 or step == steps:
            curve.append(evaluate(step, wall, cpu, float(np.mean(running[-eval_every:]))))
    return model, curve


def _run_one(job: tuple) -> tuple[str, dict, list[dict]]:
    """A worker process's job: one variant, one thread."""
    torch.set_num_threads(1)
    v, train, ev, steps, eval_every = job
    model, curve = train_variant(v, train, ev, steps, eval_every)
    return v.name, model.state_dict(), curve


# ------------------------------------------------------------------------------------------------ probes


def probes(train: ToyData, ev: EvalSet) -> dict:
    """Facts about the conditioning path and the initialisation at step 0 (no training)."""
    model = HIPNet(SKELETON, 1, model_config(Variant("paper", "")))
    batch = sample_batch(train, np.random.default_rng(0), FRAMES, POINTS, EIKONAL, False)
    res = hipnet_loss(model, batch)
    res.total.backward()
    enc_grad = sum(float(p.grad.abs().sum()) for p in model.pose_encoder.parameters())
    cond_grad = sum(float(p.grad.abs().sum()) for p in model.subnets.w_cond.values())
    # the pose encoder's input: does it vary across poses, and by how much relative to its mean?
    jt = train.transforms(range(len(train.poses)))[:, :, :3, :].flatten(1)
    # how far each part's training samples lie from the origin (the initial sphere is |x| = 0.5)
    dist = {SKELETON.names[j]: float(np.mean([np.linalg.norm(p[lab == j], axis=1).mean()
                                             for p, lab in zip(train.points, train.labels, strict=True)]))
            for j in range(SKELETON.num_joints)}
    # the learnt mean cannot form a union: spheres at each part's mean position, averaged vs soft-min
    step0 = {}
    for agg in ("mean", "softmin"):
        v = Variant("probe", "", model={"sphere_radius": 0.15, "aggregation": agg}, init_centres="parts")
        m = HIPNet(SKELETON, 1, model_config(v))
        centre_spheres(m, part_centres(train))
        step0[agg] = score(lambda x, i, m=m: model_sdf(m, x, ev.data.poses[i].transforms), ev)
    return {
        "part_centred_spheres_at_step0": step0,
        "pose_encoder_input": {"size": int(jt.shape[1]), "std_over_poses_mean": float(jt.std(0).mean()),
                               "constant_entries": int((jt.std(0) < 1e-6).sum())},
        "step0_grad_abs_sum": {"pose_encoder": enc_grad, "w_cond": cond_grad},
        "mean_distance_of_part_samples_from_origin_m": dist,
        "initial_sphere_radius_m": model.cfg.sphere_radius,
    }


# ------------------------------------------------------------------------------------------------ picture


def picture(models: dict, ev: EvalSet, pose_ids: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = np.linspace(-0.55, 1.0, 120), np.linspace(-0.75, 1.1, 140)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx, gy, np.zeros_like(gx)], -1).reshape(-1, 3).astype(np.float32)
    cols = ["ground truth", *models]
    fig, axes = plt.subplots(len(pose_ids), len(cols), figsize=(1.6 * len(cols), 1.9 * len(pose_ids)), squeeze=False)
    for r, pid in enumerate(pose_ids):
        pose = ev.data.poses[pid]
        gt = toy_sdf(grid, pose).reshape(gx.shape)
        for c, name in enumerate(cols):
            f = gt if c == 0 else model_sdf(models[name], grid, pose.transforms).reshape(gx.shape)
            ax = axes[r, c]
            ax.contourf(gx, gy, f, levels=[-10, 0], colors=["#4a78b0"])
            ax.contour(gx, gy, gt, levels=[0], colors="k", linewidths=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
            if r == 0:
                ax.set_title(name, fontsize=7)
    fig.suptitle("toy articulation: F < 0 in the plane z = 0 (blue) vs the exact surface (black), held-out poses",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--train-poses", type=int, default=200)
    ap.add_argument("--eval-points", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=2, help="variants trained in parallel (one thread each)")
    ap.add_argument("--no-write", action="store_true", help="print only (no JSON, no picture)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    train = ToyData.build(args.train_poses, 2000, seed=1)
    # held-out poses: 14 random ones and two for the picture (arm hanging beside the torso; arm raised and bent)
    test = ToyData.build(14, 2000, seed=2, extra=[make_pose(-88, 0, 15), make_pose(45, 0, 110)])
    ev = EvalSet.build(test, args.eval_points, seed=3)
    chosen = variants(args.steps)
    if args.only:
        names = args.only.split(",")
        chosen = [v for v in chosen if v.name in names]
    else:
        chosen = [v for v in chosen if v.default]
    print(f"{len(train.poses)} training poses, {len(test.poses)} held-out poses; {args.steps} steps")

    baselines = {"mean_shape": mean_shape_baseline(train, ev)}
    init = HIPNet(SKELETON, 1, model_config(Variant("paper", "")))
    baselines["initial_sphere"] = score(lambda x, i: model_sdf(init, x, ev.data.poses[i].transforms), ev)
    probe = probes(train, ev)
    print("baselines", baselines)
    print("probes", probe)

    jobs = [(v, train, ev, v.steps or args.steps, args.eval_every) for v in chosen]
    jobs.sort(key=lambda j: -j[3])  # the long run first
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            done = pool.map(_run_one, jobs, chunksize=1)
    else:
        done = [_run_one(j) for j in jobs]
    results, models = {}, {}
    by_name = {name: (state, curve) for name, state, curve in done}
    for v in chosen:
        state, curve = by_name[v.name]
        results[v.name] = {"variant": asdict(v), "final": curve[-1], "curve": curve}
        models[v.name] = HIPNet(SKELETON, 1, model_config(v))
        models[v.name].load_state_dict(state)

    print(f"\n{'variant':20s} {'steps':>6s} {'cpu s':>7s} {'uniform':>8s} {'near':>7s} {'upper':>7s} {'fore':>7s} "
          f"{'|F-SDF|':>8s}")
    rows = [*((f"({k})", {"final": b}) for k, b in baselines.items())]
    for name, r in results.items():
        if r["final"]["step"] > args.steps:  # the long run: also its point at the others' step count
            rows.append((f"{name} @{args.steps}", {"final": next(c for c in r["curve"] if c["step"] == args.steps)}))
        rows.append((name, r))
    for name, r in rows:
        f = r["final"]
        p = f["part_near_iou"]
        err = "" if f["near_abs_err"] is None else f"{f['near_abs_err']:8.4f}"
        print(f"{name:20s} {f.get('step', ''):>6} {f.get('cpu_s', ''):>7} {f['uniform_iou']:8.3f} {f['near_iou']:7.3f} "
              f"{p['upper_arm']:7.3f} {p['forearm']:7.3f} {err}")
    if args.no_write:
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import write_result

    write_result("toy_articulation", {
        "toy": {"skeleton": SKELETON.to_attrs(), "train_poses": len(train.poses), "test_poses": len(test.poses),
                "eval_points_per_pose": {"uniform": args.eval_points, "near": args.eval_points},
                "per_step": {"frames": FRAMES, "surface_points": POINTS, "eikonal_points": EIKONAL},
                "network": asdict(model_config(Variant("paper", "")))},
        "steps": args.steps, "baselines": baselines, "probes": probe, "variants": results,
    })
    shown = [n for n in ("paper", "paper body-centred", "+local", "+softmin", "+sdf", "+all3", "fast")
             if n in models]
    out = Path(__file__).resolve().parents[1] / "docs" / "toy_articulation.png"
    picture({n: models[n] for n in shown}, ev, [len(test.poses) - 2, len(test.poses) - 1], out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
