"""Toy articulation benchmark: can HIPNet's paper formulation articulate a 3-bone shape?

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

    .venv/bin/python -m bench.toy_articulation            # all variants: table, bench/results/toy_articulation.json,
                                                          # docs/toy_articulation.png
    .venv/bin/python -m bench.toy_articulation --only paper,all3 --steps 300 --no-write
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from bench._toy_geometry import (
    SKELETON,
    EvalSet,
    ToyData,
    make_pose,
    mean_shape_baseline,
    model_sdf,
    sample_batch,
    score,
    toy_sdf,
)
from hipnet.model.config import PRESETS, ModelConfig
from hipnet.model.hipnet import HIPNet
from hipnet.model.losses import hipnet_loss

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
    from bench._results import write_result

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
