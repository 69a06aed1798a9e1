"""The accuracy harness: named HIPNet variants and NASA trained on the same embedded stores with the same budget,
scored by the same evaluation code (`make bench-accuracy`; `--quick` for the test suite).

Every variant is one change to one base configuration, written out whole (``bench.harness.variants.BASE``: 32-wide
sub-networks, Adam at 4e-3 with a cosine decay over the budget, 8 frames x (500 surface + 1,000 eikonal) points a
step), so a change to the presets moves no row and each row of the table isolates one choice:

- the paper's table 6 ladder on the paper's formulation (global coordinates, learnt mean aggregation, equation-2
  loss): `paper-base` (flat: sub-networks do not see their parent's output; no sub-network losses; no subject
  codes), `paper-subnet` (+ sub-network losses), `paper-hier` (+ hierarchical propagation), `paper-full`
  (+ subject codes);
- the same ladder on the formulation that converges on a CPU (local joint frames, soft-min aggregation,
  oriented-distance term): `departures-base`, `departures-subnet`, `departures-hier`, `departures-full`;
- our departures, each alone on top of `paper-full`: `paper+local`, `paper+softmin`, `paper+sdf`; all three together
  is `paper+local+softmin+sdf` (the same configuration as `departures-full`, whose seed-0 run it shares);
- levers, each named after what it changes in its parent (the table's "changes" column: `no-offset` changes
  `departures-full`, `lr8e-3` changes `buffer256`, ...; NAME@STEPS is NAME on a longer budget); the names rows had
  before are in ``variants.RENAMED`` and each row of the results file keeps its old one in ``was``;
- `nasa`: NASA's deformable model (seed 003; `hipnet.model.nasa`) trained as NASA trains (occupancy L2 on
  uniform and near-surface samples plus the skinning-weight auxiliary term), with a subject code so one model
  holds every subject.

The observation experiment, group "observations": the `fast` preset, budget and evaluation (the standard
test store, full ground truth) trained on `surface` (full mesh surfaces: `departures-full`'s seed-0 run, shared), `depth4`
(4 depth views about the body), `depth1` (1 view of the body's front) and `depth1-world` (1 static sensor: the rig
fixed in the world, so each frame is seen from the side its heading turns to it). Their depth stores are built on
demand from the train store's meshes (`pipeline.runner.depthstores.build_depth_store`; DATA/stores/depth<K>[-world]_<W>x<H>,
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
import sys
from dataclasses import replace
from pathlib import Path

import torch

from bench._results import commit, machine
from bench.harness.evaluation import Evaluator
from bench.harness.report import (
    depth_picture,
    load_results,
    merge,
    observations_table,
    plot,
    renamed,
    save_results,
    spread,
    table,
    write_page,
)
from bench.harness.runs import backfill, observation_check, run_variant
from bench.harness.stores import build_stores, depth_store
from bench.harness.variants import QUICK, VARIANTS, Budget, depth_key, in_variant_order

ROOT = Path(__file__).resolve().parents[1]


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
        data = renamed(json.loads(out.read_text()))
        for other in args.merge:
            print(f"{other}: {merge(data, json.loads(other.read_text()), other.name)} runs added to {out}")
        save_results(out, in_variant_order(data))
    data_dir = args.data or ROOT / "data" / ("accuracy_quick" if args.quick else "accuracy")
    depth_png = args.depth_png or ROOT / "docs" / "accuracy_depth.png"
    if args.page:
        data = renamed(json.loads(out.read_text()))
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
