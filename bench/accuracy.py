"""The accuracy harness: named HIPNet variants and NASA trained on the same embedded stores with the same budget,
scored by the same evaluation code (`make bench-accuracy`; `--quick` for the test suite).

Every variant shares the `fast` preset's sizes and optimiser (32-wide sub-networks, Adam at 4e-3 with a cosine
decay over the budget) and the step the preset took when the harness was first run (8 frames x (500 surface + 1,000
eikonal) points; ``HARNESS_BATCH``); only the formulation switches differ, so each row of the table isolates one choice:

- the paper's table 6 ladder on the paper's formulation (global coordinates, learnt mean aggregation, equation-2
  loss): `paper-base` (flat: sub-networks do not see their parent's output; no sub-network losses; no subject
  codes), `paper-subnet` (+ sub-network losses), `paper-hier` (+ hierarchical propagation), `paper-full`
  (+ subject codes);
- the same ladder on the formulation that converges on a CPU (local joint frames, soft-min aggregation,
  oriented-distance term): `fast-base`, `fast-subnet`, `fast-hier`, `fast-full`;
- our departures, each alone on top of `paper-full`: `+local`, `+softmin`, `+sdf`; all three together is `fast`
  (the same configuration as `fast-full`, whose seed-0 run it shares);
- `nasa`: NASA's deformable model (seed 003; `hipnet.model.nasa`) trained as NASA trains (occupancy L2 on
  uniform and near-surface samples plus the skinning-weight auxiliary term), with a subject code so one model
  holds every subject.

The observation experiment, group "observations": the `fast` preset, budget and evaluation (the standard
test store, full ground truth) trained on `surface` (full mesh surfaces: `fast-full`'s seed-0 run, shared), `depth4`
(4 depth views about the body), `depth1` (1 view of the body's front) and `depth1-world` (1 static sensor: the rig
fixed in the world, so each frame is seen from the side its heading turns to it). Their depth stores are built on
demand from the train store's meshes (`pipeline.depth.build_depth_store`; DATA/stores/depth<K>[-world]_<W>x<H>,
resumable, deterministic;
`DepthSensor`'s defaults, a 72 x 96 image in the quick mode). The depth variants train with `sdf_target_band` =
`SDF_BAND` (3 cm): the oriented-distance target takes its sign from the nearest observed sample, which is wrong
behind an unobserved back. Measured on 4 full-size train frames (1,000 eikonal points each, drawn as the loader
draws them; `sdf_target_check`), the targets wrong in sign by more than 2 cm were 0.45% on full surfaces, 9.3% with
4 views and 21% with 1 view without a band, 2.3% and 2.8% within 3 cm (coverage 44% and 39% of the eikonal points;
the remaining sign errors within the band are the sensor's ~1 cm depth noise at 2.5 m). `depth4-noband` and
`depth1-noband` measure the band's effect on the model (deliverable 5). Each observation run records its training
store's check (`sdf_targets`). Every variant with subject codes also gets `fit_depth1_*`: the held-out subjects fitted
from 1,000 of the points of one front depth view of their first frame (`Evaluator.fit_depth`); runs written before
this score get it from their checkpoint when it is still theirs (`backfill`). docs/accuracy_depth.png shows, for one
test frame, what each observation run saw, its surface and the ground truth (`depth_picture`).

Per variant: the training curve (uniform and near-surface mIoU on a fixed small set of test frames and points,
every `eval_every` steps, against training wall time), then on a fixed set of test frames the standard metrics
(`hipnet.model.evaluate`: uniform and near-surface mIoU, per-joint near-surface IoU, Chamfer-L1 and normal
consistency on meshed frames) and test-time fitting of the held-out subjects from 1k points (figure-6 protocol).
Results: bench/results/accuracy.json (resumable: a rerun skips variants whose results are written with the same
budget), docs/accuracy.png, and the table of docs/experiments/accuracy.md (`--page` rewrites it from the JSON).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bench._accuracy_report import (
    load_results,
    merge,
    observations_table,
    plot,
    save_results,
    spread,
    table,
    write_page,
)
from bench._results import commit, machine
from hipnet.model.config import PRESETS, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Budget:
    steps: int = 250
    eval_every: int = 50
    curve_frames: int = 4  # test frames of the training curve
    curve_points: int = 5000  # of each kind (uniform, near) per curve frame
    final_frames: int = 16  # test frames of the final scores
    mesh_frames: int = 8  # of those, meshed for Chamfer and normal consistency
    resolution: int = 128
    chamfer_points: int = 100_000
    fit_points: int = 1000
    fit_iters: int = 100
    nasa_points: int = 1024  # NASA's own sampling: 1024 uniform + 1024 near + 2048 vertices per frame
    nasa_vertices: int = 2048
    loader_workers: int = 1  # the fast preset's when the harness began (the same batches as 0); 0: the quick mode
    tiny: bool = False  # 2 frames x (64 + 64) points per step, 16-wide sub-networks: the quick mode


QUICK = Budget(steps=2, eval_every=1, loader_workers=0, tiny=True, curve_frames=2, curve_points=200, final_frames=2,
               mesh_frames=1, resolution=24, chamfer_points=2000, fit_points=100, fit_iters=2, nasa_points=64,
               nasa_vertices=64)


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    model: tuple[tuple[str, object], ...] = ()  # ModelConfig overrides
    train: tuple[tuple[str, object], ...] = ()  # TrainConfig overrides
    kind: str = "hipnet"  # or "nasa"
    seeds: tuple[int, ...] = (0,)
    same_as: str | None = None  # the same configuration as this variant: its seed-0 run is shared
    depth_views: int = 0  # trained on a depth store of this many views of the train store (0: full mesh surfaces)
    depth_rig: str = "body"  # DepthSensor.rig of that store: turned with the body, or fixed in the world
    steps: int | None = None  # its own training budget (the long preset); None: the harness budget's
    eval_every: int | None = None  # steps between its curve points when it has its own budget

    def budget(self, budget: Budget) -> Budget:
        """The harness budget with this variant's own steps (not in the quick mode, whose plumbing is the test)."""
        if self.steps is None or budget.tiny:
            return budget
        return replace(budget, steps=self.steps, eval_every=self.eval_every or budget.eval_every)

    @property
    def depth_key(self) -> str:
        """The key in ``stores`` of the depth store it trains on ("" for mesh surfaces)."""
        return depth_key(self.depth_views, self.depth_rig) if self.depth_views else ""


def depth_key(views: int, rig: str) -> str:
    return f"depth{views}" + ("-world" if rig == "world" else "")


# the step every variant takes unless its row says otherwise, fixed so the rows stay comparable: 8 frames x (500
# surface + 1,000 eikonal) points from a shuffle buffer of 32 frames (the fast preset takes f32-buf256's: 32 x (125 +
# 250) from a buffer of 256)
HARNESS_BATCH = {"frames_per_step": 8, "points_per_frame": 500, "eikonal_per_frame": 1000, "shuffle_buffer": 32}
SDF_BAND = 0.03  # m: the depth variants' sdf_target_band (the module docstring says why; -noband measures it)
PAPER = (("local_frames", False), ("aggregation", "mean"))
FAST = (("local_frames", True), ("aggregation", "softmin"))
# the fast preset's two levers of fast-v2, over the harness's base (model overrides, train overrides)
FAST_V2 = (FAST + (("softmin_offset", False),), (("lambda_sdf", 1.0), ("part_balance", 0.5)))
# f32-buf256: fast-v2 with the fast preset's batch (32 frames x (125 + 250) points) and shuffle buffer (256 frames);
# the preset also has buf256-lr8e-3's learning rate
BUF256 = FAST_V2[1] + (("frames_per_step", 32), ("points_per_frame", 125), ("eikonal_per_frame", 250),
                       ("shuffle_buffer", 256))
RUNGS = {"base": ((("hierarchical", False), ("code_dim", 0)), (("subnet_losses", False),)),
         "subnet": ((("hierarchical", False), ("code_dim", 0)), ()),
         "hier": ((("code_dim", 0),), ()),
         "full": ((), ())}
VARIANTS = [
    *(Variant(f"paper-{r}", "paper ladder", PAPER + m, (("lambda_sdf", 0.0),) + t, seeds=(0, 1) if r == "full" else (0,))
      for r, (m, t) in RUNGS.items()),
    *(Variant(f"fast-{r}", "fast ladder", FAST + m, (("lambda_sdf", 1.0),) + t) for r, (m, t) in RUNGS.items()),
    Variant("+local", "departures", (("local_frames", True), ("aggregation", "mean")), (("lambda_sdf", 0.0),)),
    Variant("+softmin", "departures", (("local_frames", False), ("aggregation", "softmin")), (("lambda_sdf", 0.0),)),
    Variant("+sdf", "departures", PAPER, (("lambda_sdf", 1.0),)),
    Variant("fast", "departures", FAST, (("lambda_sdf", 1.0),), seeds=(0, 1), same_as="fast-full"),
    Variant("nasa", "peer", kind="nasa", seeds=(0, 1)),
    # the observation experiment: the fast preset trained on full surfaces, 4 depth views, 1 front view
    Variant("surface", "observations", FAST, (("lambda_sdf", 1.0),), same_as="fast-full"),
    *(Variant(f"depth{k}", "observations", FAST, (("lambda_sdf", 1.0), ("sdf_target_band", SDF_BAND)), depth_views=k)
      for k in (4, 1)),
    *(Variant(f"depth{k}-noband", "observations", FAST, (("lambda_sdf", 1.0),), depth_views=k) for k in (4, 1)),
    # one static sensor (the rig fixed in the world): each frame is seen from the side its heading turns to it
    Variant("depth1-world", "observations", FAST, (("lambda_sdf", 1.0), ("sdf_target_band", SDF_BAND)),
            depth_views=1, depth_rig="world"),
    # levers, each one change to fast-full: forward-mode input gradients (the same values, a different
    # cost), the soft-min without its + tau log J, a smaller initial sphere per part, wider sub-networks, part balance
    Variant("fast-fwd", "levers", FAST, (("lambda_sdf", 1.0), ("gradients", "forward"))),
    Variant("fast-nooffset", "levers", FAST + (("softmin_offset", False),), (("lambda_sdf", 1.0),), seeds=(0, 1)),
    Variant("fast-r0.2", "levers", FAST + (("sphere_radius", 0.2),), (("lambda_sdf", 1.0),)),
    Variant("fast-h64", "levers", FAST + (("hidden", 64),), (("lambda_sdf", 1.0),)),
    # training points where the error is: surface samples and near-surface eikonal bases weighted by their part's
    # sample count to the power -b (small parts such as hands and feet get more)
    *(Variant(f"fast-bal{b}", "levers", FAST, (("lambda_sdf", 1.0), ("part_balance", b)), seeds=(0, 1) if b == 0.5 else (0,))
      for b in (0.5, 1.0)),
    # the fast preset as it is now: fast-full plus the two levers that paid (the soft-min without + tau log J,
    # part-balanced samples at 0.5)
    Variant("fast-v2", "levers", *FAST_V2, seeds=(0, 1)),
    # one change each to fast-v2: subject codes learning 3x faster (identity), twice the frames per step at half
    # the points per frame (the same step cost, more poses and subjects per step), near-surface eikonal points at
    # half the spread (closer to where the near-surface test points are hardest)
    Variant("v2-code3x", "levers", FAST_V2[0], FAST_V2[1] + (("code_lr", 1.2e-2),), seeds=(0, 1)),
    Variant("v2-f16", "levers", FAST_V2[0], FAST_V2[1] + (("frames_per_step", 16), ("points_per_frame", 250),
                                                          ("eikonal_per_frame", 500)), seeds=(0, 1)),
    Variant("v2-sig0.015", "levers", FAST_V2[0], FAST_V2[1] + (("eikonal_near_sigma", 0.015),), seeds=(0, 1)),
    # the batch trend one step further: 32 frames of a quarter of the points (the fast preset's batch now)
    Variant("v2-f32", "levers", FAST_V2[0], FAST_V2[1] + (("frames_per_step", 32), ("points_per_frame", 125),
                                                          ("eikonal_per_frame", 250)), seeds=(0, 1)),
    # the shuffle buffer (32 frames, one shard) holds 2-5 of the 12 subjects, so a step of 32 frames sees only
    # those; 256 frames (8 shards) give 8-11 subjects a step
    Variant("f32-buf256", "levers", FAST_V2[0], BUF256, seeds=(0, 1)),
    # a step of 32 frames from 8 shards has four times the frames of fast-v2's and less gradient noise: the learning
    # rate doubled (Adam 8e-3, the same cosine decay)
    Variant("buf256-lr8e-3", "levers", FAST_V2[0], BUF256 + (("lr", 8e-3),), seeds=(0, 1)),
    # one change each to buf256-lr8e-3 (the fast preset): the batch trend one step further (64 frames of half the
    # points, from a buffer of 512 so that a step still sees most subjects), and Adam at 1.2e-2
    Variant("lr8e-3-f64", "levers", FAST_V2[0], BUF256 + (("lr", 8e-3), ("frames_per_step", 64),
                                                          ("points_per_frame", 63), ("eikonal_per_frame", 125),
                                                          ("shuffle_buffer", 512)), seeds=(0, 1)),
    Variant("lr1.2e-2", "levers", FAST_V2[0], BUF256 + (("lr", 1.2e-2),), seeds=(0, 1)),
    # and the soft-min's temperature halved and quartered (a sharper union: where two parts meet, a hand near the
    # thigh, it lies up to tau log 2 below the closer one: 7 mm at 1 cm, 3.5 mm at 5 mm)
    *(Variant(f"lr8e-3-tau{t}", "levers", FAST_V2[0] + (("softmin_tau", t),), BUF256 + (("lr", 8e-3),), seeds=(0, 1))
      for t in (0.005, 0.0025)),
    # twice the surface points for half the eikonal points (the same query points per step: the surface and normal
    # terms place the surface, which Chamfer-L1 measures), and sub-networks of 3 layers rather than 4 (the input
    # again before the second; a cheaper step, so more steps in the demo's time)
    Variant("lr8e-3-s250", "levers", FAST_V2[0], BUF256 + (("lr", 8e-3), ("points_per_frame", 250),
                                                           ("eikonal_per_frame", 125)), seeds=(0, 1)),
    Variant("lr8e-3-l3", "levers", FAST_V2[0] + (("layers", 3), ("skip", 1)), BUF256 + (("lr", 8e-3),), seeds=(0, 1)),
    # fast-v2 trained 6,000 steps (at most 2 hours on 2 cores) on its own budget of steps, scored on the same frames
    Variant("long", "long preset", *FAST_V2, steps=6000, eval_every=500),
    # f32-buf256 trained 3,000 steps
    Variant("long-v3", "long preset", FAST_V2[0], BUF256, steps=3000, eval_every=500),
    # long-v3 on 6,000 steps
    Variant("long6k-v3", "long preset", FAST_V2[0], BUF256, steps=6000, eval_every=500),
    # the long preset: long6k-v3 at the fast preset's learning rate (Adam 8e-3, the same cosine decay
    # over 6,000 steps)
    Variant("long6k-lr8e-3", "long preset", FAST_V2[0], BUF256 + (("lr", 8e-3),), steps=6000, eval_every=500),
]


def in_variant_order(data: dict) -> dict:
    """``data`` with its runs in the order of VARIANTS (then seed): the table and the file read as the ladder does,
    whichever process finished first."""
    rank = {v.name: k for k, v in enumerate(VARIANTS)}
    data["variants"].sort(key=lambda e: (rank.get(e["name"], len(rank)), e["seed"]))
    return data


def train_config(v: Variant, seed: int, budget: Budget) -> TrainConfig:
    budget = v.budget(budget)
    base = PRESETS["fast"]
    if budget.tiny:
        base = replace(base, model=replace(base.model, hidden=16, pose_dim=8, pose_hidden=16, code_dim=8,
                                           aggregator_hidden=16), frames_per_step=2, points_per_frame=64,
                       eikonal_per_frame=64)
    # the harness's base is the fast preset as its first runs had it, whatever the preset holds now: input
    # gradients by autograd, the soft-min with its + tau log J at tau 1 cm, uniform surface samples, Adam at 4e-3;
    # each change is a variant (fast-fwd, fast-nooffset, fast-bal*, ...) and the preset's current form is
    # lr8e-3-tau0.005
    train = {"gradients": "autograd", "part_balance": 0.0, "lr": 4e-3} | HARNESS_BATCH | dict(v.train)
    if budget.tiny:  # the quick mode's tiny batch, whatever the variant's
        train = {k: x for k, x in train.items() if k not in HARNESS_BATCH}
    model = {"softmin_offset": True, "softmin_tau": 0.01} | dict(v.model)
    return replace(base, model=replace(base.model, **model), steps=budget.steps, seed=seed,
                   checkpoint_every=budget.steps, log_every=max(1, budget.eval_every // 2),
                   loader_workers=budget.loader_workers, **train)


# ------------------------------------------------------------------------------------------------------------ data


def build_stores(data: Path, quick: bool, workers: int, raw: Path | None = None) -> dict[str, Path]:
    """The embedded dataset and its three stores: train (with occupancy samples and meshes, for NASA), test and
    heldout. Reuses what exists (generation and preprocessing are resumable and deterministic)."""
    from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
    from hipnet.pipeline.manifest import load_manifest
    from hipnet.pipeline.process import PreprocessConfig
    from hipnet.pipeline.readers.anny import AnnyReader
    from hipnet.pipeline.run import preprocess_split

    raw = raw or data / "raw"
    if not (raw / "dataset.yaml").exists():
        manifest = (make_anny_manifest(seed=0, n_realistic=2, n_heldout=1, extremes=("tall_male", "slim_female"),
                                       sequences_per_subject=4, frames_per_sequence=6, key_every=3, topology="lowpoly")
                    if quick else load_manifest("anny"))
        generate_dataset(manifest, raw)
    small = dict(surface_points=400, eval_points=500, shard_frames=5) if quick else {}
    train_cfg = PreprocessConfig(geodesics="per-template", eval_on_train=True,
                                 **({"eval_points": 20_000} | small))
    eval_cfg = PreprocessConfig(geodesics="per-template", **small)
    out = {}
    for split, cfg in (("train", train_cfg), ("test", eval_cfg), ("heldout", eval_cfg)):
        summary = preprocess_split(AnnyReader(raw, (split,)), data / "stores", cfg, split, workers=workers)
        out[split] = Path(summary.store)
    out["raw"] = raw
    return out


def vertex_labels(raw: Path, subjects: list[str]) -> dict[str, np.ndarray]:
    """Each subject's mesh vertices labelled by the argmax of their skinning weights (NASA's auxiliary term)."""
    labels = {}
    for name in subjects:
        with np.load(raw / "subjects" / f"{name}.npz", allow_pickle=False) as z:
            labels[name] = z["skinning_weights"].argmax(1)
    return labels


def depth_sensor(views: int, tiny: bool, rig: str = "body"):
    """The observation experiment's rig: ``DepthSensor``'s defaults (640 x 480, 60 degrees, 2.5 m, the documented
    noise and dropouts) with ``views`` cameras; in the quick mode a 72 x 96 image (the fewest pixels whose clouds
    the point-cloud labels accept on the lowpoly bodies; 48 x 64 leaves pieces too small for the heat solver)."""
    from hipnet.pipeline.stages.depth import DepthSensor

    return DepthSensor(views=views, rig=rig, **(dict(width=72, height=96) if tiny else {}))


def depth_store(stores: dict[str, Path], views: int, tiny: bool, workers: int, rig: str = "body") -> Path:
    """The train store's frames seen by ``views`` depth cameras (``pipeline.depth.build_depth_store`` from the train
    store's meshes, same frame keys): DATA/stores/depth<views>[-world]_<W>x<H>/train.zarr. Built on demand, resumable and
    deterministic (the sensor noise is seeded per frame); the same surface samples per frame as the train store."""
    from hipnet.pipeline.depth import build_depth_store
    from hipnet.pipeline.process import PreprocessConfig

    sensor = depth_sensor(views, tiny, rig)
    out = stores["train"].parent / f"{depth_key(views, rig)}_{sensor.width}x{sensor.height}"
    cfg = PreprocessConfig(**(dict(surface_points=400, shard_frames=5) if tiny else {}))
    summary = build_depth_store(stores["train"], out, sensor, cfg, workers=workers)
    if not summary.complete:
        raise SystemExit(f"{out}: depth store incomplete, {len(summary.failures)} frames failed, e.g. "
                         f"{summary.failures[:2]}; rerun to resume")
    return Path(summary.store)


def sdf_target_check(train: Path, meshes: Path, bands: tuple[float | None, ...], n_frames: int = 8,
                     eikonal: int = 1000, near_sigma: float = 0.03, margin: float = 0.1) -> dict:
    """How often the oriented-distance target (``model.data.oriented_distance``) has the wrong sign on a training
    store's frames: eikonal points drawn as the loader draws them (half uniform in the samples' box grown by 0.1 m,
    half at samples moved by N(0, 3 cm)), their target from the store's oriented samples, the truth from the mesh
    of the same frame key in ``meshes`` (winding numbers). Per band (None: everywhere): the fraction of eikonal
    points with a target (``coverage``) and, of those, the fraction inside the body with a positive target or
    outside with a negative one (``wrong_sign``), and of those the gross ones, whose target is wrong by more than
    2 cm (``gross_wrong_sign``: the ones that teach a wrong inside or outside rather than noise at the surface),
    all in %."""
    from hipnet.model.data import oriented_distance
    from hipnet.pipeline.stages.occupancy import occupancy
    from hipnet.pipeline.store import Store

    store, mesh = Store.open(train), Store.open(meshes)
    rows = {k: i for i, k in enumerate(mesh.frame_keys())}
    frames = spaced(store.n_frames, n_frames)
    faces = mesh.read("mesh/faces")
    counts = {str(b): [0, 0, 0, 0] for b in bands}  # eikonal points, with a target, with a wrong sign, gross
    for i in frames:
        j = rows[store.frame_key(i)]
        pts, nrm = store.read("surface/points", i), store.read("surface/normals", i)
        rng = np.random.default_rng([0, i])
        lo, hi = pts.min(0) - margin, pts.max(0) + margin
        near = pts[rng.integers(0, len(pts), eikonal - eikonal // 2)]
        q = np.concatenate([rng.uniform(lo, hi, (eikonal // 2, 3)),
                            near + rng.normal(0.0, near_sigma, near.shape)]).astype(np.float32)
        inside = occupancy(mesh.read("mesh/vertices", j), faces, q).inside
        for b in bands:
            d = oriented_distance(pts, nrm, q, b)
            known = np.isfinite(d)
            c = counts[str(b)]
            c[0] += len(q)
            c[1] += int(known.sum())
            wrong = known & ((d < 0) != inside)
            c[2] += int(wrong.sum())
            c[3] += int((wrong & (np.abs(d) > 0.02)).sum())
    return {"frames": len(frames), "eikonal_per_frame": eikonal,
            "bands": {b: {"coverage": 100 * k / n, "wrong_sign": 100 * w / max(k, 1),
                          "gross_wrong_sign": 100 * g / max(k, 1)} for b, (n, k, w, g) in counts.items()}}


# ------------------------------------------------------------------------------------------------------ evaluation


def finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def spaced(n: int, k: int) -> list[int]:
    return sorted({round(t) for t in np.linspace(0, n - 1, min(k, n))})


class Evaluator:
    """The fixed evaluation of every variant: the same frames and points for all."""

    def __init__(self, stores: dict[str, Path], budget: Budget) -> None:
        from hipnet.pipeline.store import Store

        self.budget = budget
        self.test, self.heldout = Store.open(stores["test"]), Store.open(stores["heldout"])
        self.final_frames = spaced(self.test.n_frames, budget.final_frames)
        self.mesh_frames = [self.final_frames[k] for k in spaced(len(self.final_frames), budget.mesh_frames)]
        self.curve_frames = spaced(self.test.n_frames, budget.curve_frames)
        self.curve_set = {i: {kind: (self.test.read(f"eval/{kind}_points", i)[: budget.curve_points],
                                     self.test.read(f"eval/{kind}_occupancy", i)[: budget.curve_points])
                              for kind in ("uniform", "near")} for i in self.curve_frames}

    def sdf_of(self, model, names: list[str], store):
        from hipnet.model.query import model_sdf

        codes = model.codes.weight.detach() if model.codes is not None else None
        jts, subj = store.read("pose/joint_transforms"), store.read("frame/subject")

        def sdf(i: int):
            code = None
            if codes is not None:
                name = store.subjects[int(subj[i])]
                code = codes[names.index(name)] if name in names else codes.mean(0)
            return model_sdf(model, jts[i], code)

        return sdf

    def curve_point(self, model, names: list[str]) -> dict:
        from hipnet.model.evaluate import iou

        sdf_of = self.sdf_of(model, names, self.test)
        scores = {"uniform": [], "near": []}
        for i, sets in self.curve_set.items():
            sdf = sdf_of(i)
            for kind, (points, occupancy) in sets.items():
                scores[kind].append(iou(sdf(points) < 0, occupancy))
        return {f"{k}_miou": 100 * float(np.mean(v)) for k, v in scores.items()}

    def final(self, model, names: list[str]) -> dict:
        from hipnet.model.evaluate import evaluate_store

        b = self.budget
        ev = evaluate_store(self.test, self.sdf_of(model, names, self.test), self.final_frames, self.mesh_frames,
                            b.resolution, b.chamfer_points)
        s = ev.summary(self.test.skeleton.names)
        empty = sum(1 for pred, _ in ev.meshes.values() if len(pred.faces) == 0)
        out = {"uniform_miou": 100 * s["uniform_miou"], "near_miou": 100 * s["near_miou"],
               "per_joint_near_iou": {k: finite(100 * v) for k, v in s["per_joint_near_iou"].items()},
               "chamfer_x1e4": None, "chamfer_mm": None, "normal_consistency": None, "frames": s["frames"],
               "mesh_frames": s.get("mesh_frames", 0), "empty_meshes": empty}
        if not empty:  # an empty extraction has no Chamfer distance: counted, never averaged in as infinity
            out |= {"chamfer_x1e4": s.get("chamfer_l1_x1e4"), "chamfer_mm": s.get("chamfer_mm"),
                    "normal_consistency": s.get("normal_consistency")}
        return out

    def identity(self, model, names: list[str]) -> dict:
        """Subject identity on the final test frames (uniform points): occupancy IoU with the subject's own code
        against the mean code on the same poses, and the spread of body volume across subjects (coefficient of
        variation of the per-subject mean volume; volume = inside fraction x the frame's sampling box) of the
        ground truth, the model with own codes and the model with the mean code, with the per-subject Pearson
        correlation of predicted and true volume."""
        from hipnet.model.evaluate import iou
        from hipnet.model.query import model_sdf
        from hipnet.pipeline.stages.evalpoints import stretched_bbox

        if model.codes is None:
            return {"identity": None}
        codes = model.codes.weight.detach()
        jts, subj = self.test.read("pose/joint_transforms"), self.test.read("frame/subject")
        rows = []
        for i in self.final_frames:
            name = self.test.subjects[int(subj[i])]
            if name not in names:
                continue
            points, inside = self.test.read("eval/uniform_points", i), self.test.read("eval/uniform_occupancy", i)
            lo, hi = stretched_bbox(self.test.read("mesh/vertices", i))
            box = float(np.prod(hi - lo))
            own = model_sdf(model, jts[i], codes[names.index(name)])(points) < 0
            mean = model_sdf(model, jts[i], codes.mean(0))(points) < 0
            rows.append((name, iou(own, inside), iou(mean, inside), box * inside.mean(), box * own.mean(),
                         box * mean.mean()))
        subjects = sorted({r[0] for r in rows})
        vol = np.array([[np.mean([r[k] for r in rows if r[0] == s]) for k in (3, 4, 5)] for s in subjects])

        def cv(v: np.ndarray) -> float:
            return float(v.std() / v.mean())

        return {"identity": {
            "frames": len(rows), "subjects": len(subjects),
            "iou_own_code": 100 * float(np.mean([r[1] for r in rows])),
            "iou_mean_code": 100 * float(np.mean([r[2] for r in rows])),
            "volume_cv_gt": cv(vol[:, 0]), "volume_cv_own_code": cv(vol[:, 1]), "volume_cv_mean_code": cv(vol[:, 2]),
            "volume_corr": float(np.corrcoef(vol[:, 0], vol[:, 1])[0, 1]) if len(subjects) > 2 else None}}

    def fit(self, model) -> dict:
        """Held-out subjects fitted from ``fit_points`` surface points (figure 6): the first frame of each."""
        from hipnet.model.apps import fit_code
        from hipnet.model.fitting import observed_points, score_code

        if model.codes is None:
            return {"fit_1k_uniform_miou": None, "fit_1k_near_miou": None, "fit_note": "no subject codes"}
        frames = self.heldout_frames()
        scores = []
        for i in frames:
            points = observed_points(self.heldout, i, self.budget.fit_points, False, seed=0)
            fit = fit_code(model, points, self.heldout.read("pose/joint_transforms", i), self.budget.fit_iters, 1e-3)
            scores.append(score_code(model, self.heldout, i, fit.code))
        return {"fit_1k_uniform_miou": 100 * float(np.mean([s["uniform_iou"] for s in scores])),
                "fit_1k_near_miou": 100 * float(np.mean([s["near_iou"] for s in scores])), "fit_frames": len(frames)}

    def heldout_frames(self) -> list[int]:
        subj = self.heldout.read("frame/subject")
        return [int(np.flatnonzero(subj == s)[0]) for s in sorted(set(subj.tolist()))]

    def depth_observations(self) -> list[tuple[int, np.ndarray, int]]:
        """(frame, ``fit_points`` points, depth points seen) of one front depth view of each held-out subject's
        first frame: its mesh rendered by the depth stage (the depth1 rig, noise seeded by the frame key) in the
        store's canonical frame, back-projected, then ``fit_points`` of them drawn without replacement (seeded), so
        only the observation differs from the 1k-point fit, not the number of points."""
        if getattr(self, "_depth_obs", None) is None:
            from hipnet.pipeline.depth import sensor_rng
            from hipnet.pipeline.stages.depth import render_depth

            sensor = depth_sensor(1, self.budget.tiny)
            faces, obs = self.heldout.read("mesh/faces"), []
            for i in self.heldout_frames():
                view = render_depth(self.heldout.read("mesh/vertices", i), faces, sensor,
                                    sensor_rng(sensor, "heldout", self.heldout.frame_key(i)))
                rng = np.random.default_rng([0, i])
                pick = rng.choice(len(view.points), min(self.budget.fit_points, len(view.points)), replace=False)
                obs.append((i, view.points[np.sort(pick)].astype(np.float32), len(view.points)))
            self._depth_obs = obs
        return self._depth_obs

    def fit_depth(self, model) -> dict:
        """Held-out subjects fitted from one front depth view of their first frame (``depth_observations``): the
        same ``fit_code`` (iterations, learning rate, mean-code start) and scoring as ``fit``."""
        from hipnet.model.apps import fit_code
        from hipnet.model.fitting import score_code

        if model.codes is None:
            return {"fit_depth1_uniform_miou": None, "fit_depth1_near_miou": None}
        scores, seen = [], []
        for i, points, n in self.depth_observations():
            fit = fit_code(model, points, self.heldout.read("pose/joint_transforms", i), self.budget.fit_iters, 1e-3)
            scores.append(score_code(model, self.heldout, i, fit.code))
            seen.append(n)
        return {"fit_depth1_uniform_miou": 100 * float(np.mean([s["uniform_iou"] for s in scores])),
                "fit_depth1_near_miou": 100 * float(np.mean([s["near_iou"] for s in scores])),
                "fit_depth1_points_seen": int(np.mean(seen))}


# -------------------------------------------------------------------------------------------------------- training


def training_store(v: Variant) -> str:
    """The key in ``stores`` of the store a variant trains on."""
    return v.depth_key or "train"


def observation_check(v: Variant, stores: dict[str, Path]) -> dict:
    """For the observation variants: the oriented-distance targets of their training store checked against the
    meshes (``sdf_target_check``) without a band and with the depth variants' band."""
    if v.group != "observations":
        return {}
    views = f"{v.depth_views} depth view{'s' if v.depth_views > 1 else ''}"
    views += " (static sensor)" if v.depth_rig == "world" else ""
    return {"training_data": views if v.depth_views else "mesh surfaces",
            "sdf_targets": sdf_target_check(stores[training_store(v)], stores["train"], (None, SDF_BAND))}


def run_hipnet(v: Variant, seed: int, budget: Budget, stores: dict[str, Path], runs: Path, ev: Evaluator):
    from hipnet.model.train import CKPT, load_checkpoint, model_from_checkpoint, train

    cfg = train_config(v, seed, budget)
    out = runs / f"{v.name}_s{seed}"
    shutil.rmtree(out, ignore_errors=True)  # an unfinished variant starts again (its curve was not kept)
    curve, train_s = [], 0.0
    for stop in range(budget.eval_every, budget.steps + 1, budget.eval_every):
        t0 = time.time()
        train([stores[training_store(v)]], cfg, out, resume=stop > budget.eval_every, progress=False,
              stop_at_step=stop)
        train_s += time.time() - t0
        ck = load_checkpoint(out / CKPT)
        model = model_from_checkpoint(ck).eval()
        curve.append({"step": stop, "train_s": round(train_s, 1), **ev.curve_point(model, list(ck["subjects"]))})
        print(f"  {v.name} seed {seed} step {stop}: {curve[-1]}", flush=True)
    queries = cfg.frames_per_step * (cfg.points_per_frame + cfg.eikonal_per_frame)
    return model, list(ck["subjects"]), curve, train_s, cfg.to_dict(), queries


def run_nasa(v: Variant, seed: int, budget: Budget, stores: dict[str, Path], ev: Evaluator):
    from hipnet.model.nasa import NASA, NasaConfig, NasaSampler, nasa_loss
    from hipnet.model.train import lr_factor
    from hipnet.pipeline.store import Store

    cfg = train_config(v, seed, budget)  # the shared optimiser, frames per step and budget
    ncfg = NasaConfig(**(dict(width=8, code_dim=8) if budget.tiny else {}) | dict(v.model))
    store = Store.open(stores["train"])
    torch.manual_seed(seed)
    model = NASA(store.skeleton, len(store.subjects), ncfg)
    sampler = NasaSampler(store, vertex_labels(stores["raw"], store.subjects), cfg.frames_per_step,
                          budget.nasa_points, budget.nasa_vertices, seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    curve, train_s = [], 0.0
    for step in range(budget.steps):
        t0 = time.time()
        model.train()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(cfg, step, budget.steps)
        loss, _ = nasa_loss(model, sampler.batch(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        train_s += time.time() - t0
        if (step + 1) % budget.eval_every == 0:
            model.eval()
            curve.append({"step": step + 1, "train_s": round(train_s, 1), **ev.curve_point(model, store.subjects)})
            print(f"  nasa seed {seed} step {step + 1}: {curve[-1]}", flush=True)
    config = {"nasa": asdict(ncfg), "lr": cfg.lr, "lr_schedule": cfg.lr_schedule, "lr_final": cfg.lr_final,
              "frames_per_step": cfg.frames_per_step, "steps": budget.steps, "seed": seed}
    queries = cfg.frames_per_step * (2 * budget.nasa_points + budget.nasa_vertices)
    return model, list(store.subjects), curve, train_s, config, queries


def run_model(entry: dict, runs: Path):
    """(model, code names) of a HIPNet run from its saved checkpoint (DATA/runs/<name>_s<seed>/ckpt.pt; a shared
    run's is its twin's), or None when there is none or it is not this entry's run (a run of another budget or
    configuration wrote over it: the step and the configuration must match the entry's)."""
    from hipnet.model.checkpoint import CKPT, load_checkpoint, model_from_checkpoint

    if entry.get("kind") != "hipnet":
        return None
    path = runs / f"{entry.get('same_run_as') or entry['name']}_s{entry['seed']}" / CKPT
    if not path.is_file():
        return None
    ck = load_checkpoint(path)
    if ck["step"] != entry["steps"] or json.loads(json.dumps(ck["config"])) != entry.get("config"):
        return None
    return model_from_checkpoint(ck, path).eval(), list(ck["subjects"])


def backfill(data: dict, runs: Path, ev: Evaluator) -> int:
    """Scores added after a run was written (``fit_depth``), computed from the run's checkpoint where it is still
    this run's (``run_model``); returns how many entries gained them. Entries without one keep no such field (the
    table shows "-")."""
    done = 0
    for e in data["variants"]:
        if "fit_depth1_uniform_miou" in e:
            continue
        got = run_model(e, runs)
        if got is None:
            continue
        e |= ev.fit_depth(got[0]) | {"fit_depth1_from_checkpoint": True}
        done += 1
    return done


def run_variant(v: Variant, seed: int, budget: Budget, stores: dict[str, Path], runs: Path, ev: Evaluator) -> dict:
    t0 = time.time()
    budget = v.budget(budget)
    runner = run_nasa(v, seed, budget, stores, ev) if v.kind == "nasa" else run_hipnet(v, seed, budget, stores, runs, ev)
    model, names, curve, train_s, config, queries = runner
    model.eval()
    entry = {"name": v.name, "group": v.group, "kind": v.kind, "seed": seed, "steps": budget.steps,
             "train_s": round(train_s, 1), "query_points_per_step": queries, "config": config, "curve": curve}
    entry |= ev.final(model, names)
    entry |= ev.fit(model)
    entry |= ev.fit_depth(model)
    entry |= ev.identity(model, names)
    entry["wall_s"] = round(time.time() - t0, 1)
    return entry


# --------------------------------------------------------------------------------------------------------- picture

PICTURE_VIEWS = (("front", 30.0), ("back", 210.0))  # yaw about +Y (degrees) of the body towards the viewer


def _yaw(points: np.ndarray, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.asarray(points, dtype=np.float64) @ np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]).T


def depth_picture(data: dict, data_dir: Path, path: Path) -> Path | None:
    """docs/accuracy_depth.png: one row per observation run (seed 0) with a checkpoint: what it was trained on
    (its observation of one test frame: full surface samples, or that frame's mesh seen by its depth rig), the
    model's surface for that frame (marching cubes from the run's checkpoint, the subject's code) and the ground
    truth, each from the front and the back. Drawn when a depth run exists; None (and a note) otherwise."""
    from hipnet.model.apps import posed_mesh
    from hipnet.model.fitting import observed_points
    from hipnet.pipeline.depth import observe, sensor_rng
    from hipnet.pipeline.store import Store
    from hipnet.viz.render import draw_mesh

    by_name = {v.name: v for v in VARIANTS}
    runs = [e for e in data["variants"] if e["group"] == "observations" and e["seed"] == 0 and e["name"] in by_name]
    if not any(by_name[e["name"]].depth_views for e in runs):
        return None
    test_path = data_dir / "stores" / "test.zarr"
    models = {e["name"]: run_model(e, data_dir / "runs") for e in runs} if test_path.exists() else {}
    rows = [(e, models[e["name"]]) for e in runs if models.get(e["name"]) is not None]
    if not any(by_name[e["name"]].depth_views for e, _ in rows):
        print(f"{path}: not drawn, no depth run's checkpoint (or no test store) under {data_dir}", flush=True)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = Store.open(test_path)
    tiny, resolution = data["budget"]["tiny"], data["budget"]["resolution"]
    i = data.get("eval_set", {}).get("mesh_frames", [0])[0]
    v_gt, faces = test.read("mesh/vertices", i), test.read("mesh/faces")
    jt, name = test.read("pose/joint_transforms", i), test.subjects[int(test.read("frame/subject", i))]
    cols = ["observed (front)", "model (front)", "ground truth (front)", "observed (back)", "model (back)",
            "ground truth (back)"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.9 * len(cols), 3.2 * len(rows)), squeeze=False)
    half = np.abs(v_gt - v_gt.mean(0)).max() * 1.1
    for r, (e, (model, names)) in enumerate(rows):
        k, rig = by_name[e["name"]].depth_views, by_name[e["name"]].depth_rig
        if k:
            sensor = depth_sensor(k, tiny, rig)
            heading = test.read("pose/world_from_canonical", i)[:3, :3].astype(np.float64)
            seen = observe(v_gt, faces, sensor, sensor_rng(sensor, "picture", test.frame_key(i)), heading).points
        else:
            seen = observed_points(test, i, 4000, False, seed=0)
        code = model.codes.weight.detach()[names.index(name)] if name in names else model.codes.weight.detach().mean(0)
        pred = posed_mesh(model, jt, code, resolution)
        for c, (_, yaw) in enumerate(PICTURE_VIEWS):
            ax = axes[r, 3 * c]
            pts = _yaw(seen - v_gt.mean(0), yaw)
            order = np.argsort(pts[:, 2])
            ax.scatter(pts[order, 0], pts[order, 1], s=float(np.clip(3000 / len(pts), 0.2, 3)), c=pts[order, 2],
                       cmap="viridis", linewidths=0)
            for ax, (v, f) in ((axes[r, 3 * c + 1], (pred.vertices, pred.faces)), (axes[r, 3 * c + 2], (v_gt, faces))):
                if len(f):
                    draw_mesh(ax, _yaw(v - v_gt.mean(0), yaw), np.asarray(f))
            for ax in axes[r, 3 * c: 3 * c + 3]:
                ax.set_xlim(-half, half)
                ax.set_ylim(-half, half)
                ax.set_aspect("equal")
                ax.axis("off")
        axes[r, 0].text(-0.08, 0.5, f"{e['name']}\n{e['uniform_miou']:.1f}% uniform", transform=axes[r, 0].transAxes,
                        rotation=90, va="center", ha="right", fontsize=8)
    for c, label in enumerate(cols):
        axes[0, c].set_title(label, fontsize=8)
    fig.suptitle(f"test frame {test.frame_key(i)}: what each run was trained on, its surface, the ground truth",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data and budget: the plumbing, in seconds (tests)")
    p.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds to run (default: each variant's own)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per variant (default: the budget's; a variant with its own, long, keeps it)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="steps between curve points (default: the budget's, or a fifth of --steps)")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: data/accuracy[_quick])")
    p.add_argument("--raw", type=Path, default=None,
                   help="the generated embedded dataset (default: DATA/raw, generated when absent)")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: bench/results/accuracy.json)")
    p.add_argument("--png", type=Path, default=None, help="curve picture (default: docs/accuracy.png)")
    p.add_argument("--depth-png", type=Path, default=None,
                   help="picture of the depth runs (default: docs/accuracy_depth.png; drawn when they exist)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (fixed and recorded)")
    p.add_argument("--workers", type=int, default=2, help="preprocessing worker processes")
    p.add_argument("--page", action="store_true",
                   help="only rewrite docs/experiments/accuracy.md's table and the pictures from the JSON")
    p.add_argument("--merge", type=Path, action="append", default=[],
                   help="add the runs of another results file of the same budget (a harness run in another process)")
    args = p.parse_args(argv)

    budget = QUICK if args.quick else Budget()
    if args.steps:
        budget = replace(budget, steps=args.steps, eval_every=max(1, args.steps // 5))
    if args.eval_every:
        budget = replace(budget, eval_every=args.eval_every)
    out = args.out or ROOT / "bench" / "results" / "accuracy.json"
    png = args.png or ROOT / "docs" / "accuracy.png"
    if args.merge:
        data = json.loads(out.read_text())
        for other in args.merge:
            print(f"{other}: {merge(data, json.loads(other.read_text()), other.name)} runs added to {out}")
        save_results(out, in_variant_order(data))
    data_dir = args.data or ROOT / "data" / ("accuracy_quick" if args.quick else "accuracy")
    depth_png = args.depth_png or ROOT / "docs" / "accuracy_depth.png"
    if args.page:
        data = json.loads(out.read_text())
        plot(data, png)
        depth_picture(data, data_dir, depth_png)
        write_page(data, ROOT / "docs" / "experiments" / "accuracy.md", depth_png)
        print(table(data))
    if args.page or args.merge:
        return 0
    torch.set_num_threads(args.threads)
    wanted = None if args.only is None else set(args.only.split(","))
    unknown = (wanted or set()) - {v.name for v in VARIANTS}
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {[v.name for v in VARIANTS]}")
    stores = build_stores(data_dir, args.quick, args.workers, args.raw)
    for k, rig in sorted({(v.depth_views, v.depth_rig) for v in VARIANTS
                          if v.depth_views and (wanted is None or v.name in wanted)}):
        print(f"depth store of {k} view(s), rig {rig}, from {stores['train']}", flush=True)
        stores[depth_key(k, rig)] = depth_store(stores, k, budget.tiny, args.workers, rig)
    ev = Evaluator(stores, budget)
    data = load_results(out, budget)
    data |= {"machine": machine(), "threads": args.threads, "commit": commit(),
             "eval_set": {"store": stores["test"].name, "final_frames": ev.final_frames, "mesh_frames": ev.mesh_frames,
                          "curve_frames": ev.curve_frames, "curve_points_per_kind": budget.curve_points}}
    filled = backfill(data, data_dir / "runs", ev)
    if filled:
        print(f"fit_depth1 added from checkpoints to {filled} runs written before it", flush=True)
        save_results(out, data)
    for v in VARIANTS:
        if wanted is not None and v.name not in wanted:
            continue
        for seed in v.seeds:
            if args.seeds is not None and str(seed) not in args.seeds.split(","):
                continue
            done = {(e["name"], e["seed"]) for e in data["variants"]}
            if (v.name, seed) in done:
                continue
            twin = next((e for e in data["variants"] if v.same_as and e["name"] == v.same_as and e["seed"] == seed), None)
            if twin is not None:
                entry = {**twin, "name": v.name, "group": v.group, "same_run_as": v.same_as,
                         **observation_check(v, stores)}
            else:
                print(f"{v.name} seed {seed}: training {v.budget(budget).steps} steps", flush=True)
                entry = run_variant(v, seed, budget, stores, data_dir / "runs", ev) | {"threads": args.threads}
                entry |= observation_check(v, stores)
            data["variants"].append(entry)
            data["spread"] = spread(data)
            save_results(out, in_variant_order(data))
            print(f"{v.name} seed {seed}: uniform {entry['uniform_miou']:.1f}%, near {entry['near_miou']:.1f}%, "
                  f"Chamfer {entry['chamfer_mm']} mm, fit {entry['fit_1k_uniform_miou']}, {entry['wall_s']} s",
                  flush=True)
    plot(data, png)
    depth_picture(data, data_dir, depth_png)
    print(table(data))
    obs = observations_table(data)
    if obs:
        print(obs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
