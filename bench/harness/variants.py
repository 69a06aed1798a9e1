"""The harness's variants, each a named change to one base configuration, and the budget they share."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hipnet.model.config import ModelConfig, TrainConfig


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
    parent: str | None = None  # the variant this one changes (its name says what it changes)

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


#: The configuration every variant changes, written out whole so that a change to the presets moves no committed
#: row: 32-wide sub-networks of 4 layers in joint frames, the soft-min union with its + tau log J at tau 1 cm, the
#: oriented-distance term, input gradients by autograd, uniform surface samples, and a step of 8 frames x (500
#: surface + 1,000 eikonal) points from a shuffle buffer of 32 frames, Adam at 4e-3 with a cosine decay. (The
#: ``fast`` preset is this with the changes the levers rows found: see its comment in ``hipnet.model.config``.)
BASE = TrainConfig(
    model=ModelConfig(hidden=32, layers=4, skip=2, pose_dim=32, pose_hidden=64, code_dim=32, code_init_std=1e-4,
                      aggregator_hidden=64, aggregator_layers=2, softplus_beta=100.0, sphere_radius=0.5,
                      local_frames=True, hierarchical=True, aggregation="softmin", softmin_tau=0.01,
                      softmin_offset=True, part_support=False, support_margin=0.05),
    points_per_frame=500, eikonal_per_frame=1000, part_balance=0.0, eikonal_near_sigma=0.03, bbox_margin=0.1,
    frames_per_step=8, lr=4e-3, code_lr=None, lr_schedule="cosine", lr_final=0.03, lambda_eikonal=0.1,
    lambda_normal=0.1, lambda_sdf=1.0, sdf_target_band=None, subnet_losses=True, gradients="autograd", amp="auto",
    epochs=4, steps=1000, shuffle_buffer=32, loader_workers=0, log_every=10, checkpoint_every=100, seed=0,
)
#: the quick mode (the tests' plumbing): 16-wide sub-networks and 2 frames x (64 + 64) points a step
TINY_MODEL = {"hidden": 16, "pose_dim": 8, "pose_hidden": 16, "code_dim": 8, "aggregator_hidden": 16}
TINY_BATCH = {"frames_per_step": 2, "points_per_frame": 64, "eikonal_per_frame": 64, "shuffle_buffer": 256}
SDF_BAND = 0.03  # m: the depth variants' sdf_target_band (the module docstring says why; -noband measures it)
PAPER = (("local_frames", False), ("aggregation", "mean"))
FAST = (("local_frames", True), ("aggregation", "softmin"))
# no-offset+balance0.5's two levers over the base (model overrides, train overrides)
FAST_V2 = (FAST + (("softmin_offset", False),), (("lambda_sdf", 1.0), ("part_balance", 0.5)))
# buffer256: no-offset+balance0.5 with the fast preset's batch (32 frames x (125 + 250) points) and shuffle buffer
# (256 frames); the preset also has lr8e-3's learning rate
BUF256 = FAST_V2[1] + (("frames_per_step", 32), ("points_per_frame", 125), ("eikonal_per_frame", 250),
                       ("shuffle_buffer", 256))
# the fast preset's model (tau5mm) with part-local evaluation
PART_LOCAL = FAST_V2[0] + (("softmin_tau", 0.005), ("part_support", True))
RUNGS = {"base": ((("hierarchical", False), ("code_dim", 0)), (("subnet_losses", False),)),
         "subnet": ((("hierarchical", False), ("code_dim", 0)), ()),
         "hier": ((("code_dim", 0),), ()),
         "full": ((), ())}
VARIANTS = [
    *(Variant(f"paper-{r}", "paper ladder", PAPER + m, (("lambda_sdf", 0.0),) + t, seeds=(0, 1) if r == "full" else (0,))
      for r, (m, t) in RUNGS.items()),
    # the same ladder on the formulation of the three departures (local frames, soft-min union, distance term)
    *(Variant(f"departures-{r}", "departures ladder", FAST + m, (("lambda_sdf", 1.0),) + t)
      for r, (m, t) in RUNGS.items()),
    # each departure alone on paper-full, then all three (the configuration of departures-full, whose run it shares)
    Variant("paper+local", "departures", (("local_frames", True), ("aggregation", "mean")), (("lambda_sdf", 0.0),),
            parent="paper-full"),
    Variant("paper+softmin", "departures", (("local_frames", False), ("aggregation", "softmin")),
            (("lambda_sdf", 0.0),), parent="paper-full"),
    Variant("paper+sdf", "departures", PAPER, (("lambda_sdf", 1.0),), parent="paper-full"),
    Variant("paper+local+softmin+sdf", "departures", FAST, (("lambda_sdf", 1.0),), seeds=(0, 1),
            same_as="departures-full", parent="paper-full"),
    Variant("nasa", "peer", kind="nasa", seeds=(0, 1)),
    # the observation experiment: departures-full trained on full surfaces, 4 depth views, 1 front view
    Variant("surface", "observations", FAST, (("lambda_sdf", 1.0),), same_as="departures-full",
            parent="departures-full"),
    *(Variant(f"depth{k}", "observations", FAST, (("lambda_sdf", 1.0), ("sdf_target_band", SDF_BAND)), depth_views=k,
              parent="departures-full") for k in (4, 1)),
    *(Variant(f"depth{k}-noband", "observations", FAST, (("lambda_sdf", 1.0),), depth_views=k, parent=f"depth{k}")
      for k in (4, 1)),
    # one static sensor (the rig fixed in the world): each frame is seen from the side its heading turns to it
    Variant("depth1-world", "observations", FAST, (("lambda_sdf", 1.0), ("sdf_target_band", SDF_BAND)),
            depth_views=1, depth_rig="world", parent="depth1"),
    # levers, each one change to departures-full: forward-mode input gradients (the same values, a different
    # cost), the soft-min without its + tau log J, a smaller initial sphere per part, wider sub-networks, part balance
    Variant("forward-gradients", "levers", FAST, (("lambda_sdf", 1.0), ("gradients", "forward")),
            parent="departures-full"),
    Variant("no-offset", "levers", FAST + (("softmin_offset", False),), (("lambda_sdf", 1.0),), seeds=(0, 1),
            parent="departures-full"),
    Variant("radius0.2", "levers", FAST + (("sphere_radius", 0.2),), (("lambda_sdf", 1.0),), parent="departures-full"),
    Variant("width64", "levers", FAST + (("hidden", 64),), (("lambda_sdf", 1.0),), parent="departures-full"),
    # training points where the error is: surface samples and near-surface eikonal bases weighted by their part's
    # sample count to the power -b (small parts such as hands and feet get more)
    *(Variant(f"balance{b}", "levers", FAST, (("lambda_sdf", 1.0), ("part_balance", b)),
              seeds=(0, 1) if b == 0.5 else (0,), parent="departures-full") for b in (0.5, 1.0)),
    # the two levers that paid, together (the soft-min without + tau log J, part-balanced samples at 0.5)
    Variant("no-offset+balance0.5", "levers", *FAST_V2, seeds=(0, 1), parent="departures-full"),
    # one change each to no-offset+balance0.5: subject codes learning 3x faster (identity), twice the frames per
    # step at half the points per frame (the same step cost, more poses and subjects per step), near-surface eikonal
    # points at half the spread (closer to where the near-surface test points are hardest)
    Variant("code-lr3x", "levers", FAST_V2[0], FAST_V2[1] + (("code_lr", 1.2e-2),), seeds=(0, 1),
            parent="no-offset+balance0.5"),
    Variant("16-frames", "levers", FAST_V2[0], FAST_V2[1] + (("frames_per_step", 16), ("points_per_frame", 250),
                                                            ("eikonal_per_frame", 500)), seeds=(0, 1),
            parent="no-offset+balance0.5"),
    Variant("near-sigma0.015", "levers", FAST_V2[0], FAST_V2[1] + (("eikonal_near_sigma", 0.015),), seeds=(0, 1),
            parent="no-offset+balance0.5"),
    # the batch trend one step further: 32 frames of a quarter of the points (the fast preset's batch)
    Variant("32-frames", "levers", FAST_V2[0], FAST_V2[1] + (("frames_per_step", 32), ("points_per_frame", 125),
                                                            ("eikonal_per_frame", 250)), seeds=(0, 1),
            parent="no-offset+balance0.5"),
    # the shuffle buffer (32 frames, one shard) holds 2-5 of the 12 subjects, so a step of 32 frames sees only
    # those; 256 frames (8 shards) give 8-11 subjects a step
    Variant("buffer256", "levers", FAST_V2[0], BUF256, seeds=(0, 1), parent="32-frames"),
    # a step of 32 frames from 8 shards has four times the frames of no-offset+balance0.5's and less gradient noise:
    # the learning rate doubled (Adam 8e-3, the same cosine decay)
    Variant("lr8e-3", "levers", FAST_V2[0], BUF256 + (("lr", 8e-3),), seeds=(0, 1), parent="buffer256"),
    # one change each to lr8e-3: the batch trend one step further (64 frames of half the points, from a buffer of
    # 512 so that a step still sees most subjects), and Adam at 1.2e-2 (on buffer256)
    Variant("64-frames", "levers", FAST_V2[0], BUF256 + (("lr", 8e-3), ("frames_per_step", 64),
                                                         ("points_per_frame", 63), ("eikonal_per_frame", 125),
                                                         ("shuffle_buffer", 512)), seeds=(0, 1), parent="lr8e-3"),
    Variant("lr1.2e-2", "levers", FAST_V2[0], BUF256 + (("lr", 1.2e-2),), seeds=(0, 1), parent="buffer256"),
    # and the soft-min's temperature halved and quartered (a sharper union: where two parts meet, a hand near the
    # thigh, it lies up to tau log 2 below the closer one: 7 mm at 1 cm, 3.5 mm at 5 mm); tau5mm is the fast preset
    *(Variant(f"tau{t}mm", "levers", FAST_V2[0] + (("softmin_tau", t / 1000),), BUF256 + (("lr", 8e-3),),
              seeds=(0, 1), parent="lr8e-3") for t in (5, 2.5)),
    # twice the surface points for half the eikonal points (the same query points per step: the surface and normal
    # terms place the surface, which Chamfer-L1 measures), and sub-networks of 3 layers rather than 4 (the input
    # again before the second; a cheaper step, so more steps in the demo's time)
    Variant("250-surface-points", "levers", FAST_V2[0], BUF256 + (("lr", 8e-3), ("points_per_frame", 250),
                                                                  ("eikonal_per_frame", 125)), seeds=(0, 1),
            parent="lr8e-3"),
    Variant("3-layers", "levers", FAST_V2[0] + (("layers", 3), ("skip", 1)), BUF256 + (("lr", 8e-3),), seeds=(0, 1),
            parent="lr8e-3"),
    # part-local evaluation (ModelConfig.part_support: each sub-network only on the points near its part or a
    # descendant's) on tau5mm: at equal steps, and at about equal compute time (twice the steps: the dense step
    # costs 1.9 part-local steps with autograd, bench/results/part_support.json; the loader's time is not halved)
    Variant("part-support", "part-local", PART_LOCAL, BUF256 + (("lr", 8e-3),), seeds=(0, 1), parent="tau5mm"),
    Variant("part-support@500", "part-local", PART_LOCAL, BUF256 + (("lr", 8e-3),), seeds=(0, 1), steps=500,
            eval_every=100, parent="part-support"),
    # its input gradients by forward-mode derivatives (the same values; the cheaper step once the sub-networks run
    # on a quarter of the points: bench/results/part_support.json)
    Variant("part-support+forward", "part-local", PART_LOCAL, BUF256 + (("lr", 8e-3), ("gradients", "forward")),
            seeds=(0, 1), parent="part-support"),
    # the fast preset as it is now over 3,000 steps (the cosine decay over them): how far the cheaper step goes
    Variant("part-support+forward@3000", "long preset", PART_LOCAL, BUF256 + (("lr", 8e-3), ("gradients", "forward")),
            steps=3000, eval_every=500, parent="part-support+forward"),
    # longer budgets (at most 2 hours on 2 cores), scored on the same frames: NAME@STEPS is NAME trained that long
    Variant("no-offset+balance0.5@6000", "long preset", *FAST_V2, steps=6000, eval_every=500,
            parent="no-offset+balance0.5"),
    Variant("buffer256@3000", "long preset", FAST_V2[0], BUF256, steps=3000, eval_every=500, parent="buffer256"),
    Variant("buffer256@6000", "long preset", FAST_V2[0], BUF256, steps=6000, eval_every=500, parent="buffer256"),
    # the long preset: lr8e-3 over 6,000 steps (the same cosine decay)
    Variant("lr8e-3@6000", "long preset", FAST_V2[0], BUF256 + (("lr", 8e-3),), steps=6000, eval_every=500,
            parent="lr8e-3"),
]

RENAMED_GROUPS = {"fast ladder": "departures ladder"}
#: Names the harness's rows had before they said what they change; a results file written with them is read with
#: these names (``report.load_results``), each row keeping its old one in ``was``.
RENAMED = {
    "fast-base": "departures-base", "fast-subnet": "departures-subnet", "fast-hier": "departures-hier",
    "fast-full": "departures-full", "+local": "paper+local", "+softmin": "paper+softmin", "+sdf": "paper+sdf",
    "fast": "paper+local+softmin+sdf", "fast-fwd": "forward-gradients", "fast-nooffset": "no-offset",
    "fast-r0.2": "radius0.2", "fast-h64": "width64", "fast-bal0.5": "balance0.5", "fast-bal1.0": "balance1.0",
    "fast-v2": "no-offset+balance0.5", "v2-code3x": "code-lr3x", "v2-f16": "16-frames",
    "v2-sig0.015": "near-sigma0.015", "v2-f32": "32-frames", "f32-buf256": "buffer256", "buf256-lr8e-3": "lr8e-3",
    "lr8e-3-f64": "64-frames", "lr8e-3-tau0.005": "tau5mm", "lr8e-3-tau0.0025": "tau2.5mm",
    "lr8e-3-s250": "250-surface-points", "lr8e-3-l3": "3-layers", "long": "no-offset+balance0.5@6000",
    "long-v3": "buffer256@3000", "long6k-v3": "buffer256@6000", "long6k-lr8e-3": "lr8e-3@6000",
}


def in_variant_order(data: dict) -> dict:
    """``data`` with its runs in the order of VARIANTS (then seed): the table and the file read as the ladder does,
    whichever process finished first."""
    rank = {v.name: k for k, v in enumerate(VARIANTS)}
    data["variants"].sort(key=lambda e: (rank.get(e["name"], len(rank)), e["seed"]))
    return data


def train_config(v: Variant, seed: int, budget: Budget) -> TrainConfig:
    """``BASE`` with the variant's changes and the budget's steps, seed, logging and loader workers; in the quick
    mode, ``TINY`` over both (whatever batch the variant asks for)."""
    budget = v.budget(budget)
    base, train = BASE, dict(v.train)
    if budget.tiny:
        base = replace(base, model=replace(base.model, **TINY_MODEL), **TINY_BATCH)
        train = {k: x for k, x in train.items() if k not in TINY_BATCH}
    return replace(base, model=replace(base.model, **dict(v.model)), steps=budget.steps, seed=seed,
                   checkpoint_every=budget.steps, log_every=max(1, budget.eval_every // 2),
                   loader_workers=budget.loader_workers, **train)


def depth_sensor(views: int, tiny: bool, rig: str = "body"):
    """The observation experiment's rig: ``DepthSensor``'s defaults (640 x 480, 60 degrees, 2.5 m, the documented
    noise and dropouts) with ``views`` cameras; in the quick mode a 72 x 96 image (the fewest pixels whose clouds
    the point-cloud labels accept on the lowpoly bodies; 48 x 64 leaves pieces too small for the heat solver)."""
    from hipnet.pipeline.stages.depth import DepthSensor

    return DepthSensor(views=views, rig=rig, **(dict(width=72, height=96) if tiny else {}))
