"""Held-out motion family: how well a model trained without a pose family (sitting, say) represents it.

The embedded dataset with the pose families added (``add_families``: one sequence per family and subject, next to
the default random motions) is split by ``hold_out_family(F)``: ``train`` holds the training sequences of every
other family, ``test`` every sequence of F (never seen in training), ``heldout`` the other families' test sequences
(the in-family comparison, the same subjects). The harness's ``no-offset+balance0.5`` variant (the ``fast`` preset when
measured) is trained on ``train`` with the harness's budget, then scored by the harness's own evaluation on both
test sets; the drop is in-family minus F.
Writes bench/results/family_holdout.json (one entry per held-out family; rerunning skips finished families).

    python -m bench.family_holdout --family sit            # about 25 CPU minutes on 2 cores (stores + training)
    python -m bench.family_holdout --quick                 # tiny data, a test of the plumbing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from bench._results import commit, machine
from bench.harness.evaluation import Evaluator
from bench.harness.report import save_results
from bench.harness.runs import run_hipnet
from bench.harness.variants import QUICK, VARIANTS, Budget

ROOT = Path(__file__).resolve().parents[1]


def build(data: Path, family: str, quick: bool, workers: int) -> dict[str, Path]:
    from hipnet.pipeline.core.config import PreprocessConfig
    from hipnet.pipeline.embedded.generate import add_families, generate_dataset, hold_out_family, make_anny_manifest
    from hipnet.pipeline.readers.anny import AnnyReader
    from hipnet.pipeline.runner.driver import preprocess_split
    from hipnet.pipeline.sources.manifest import load_manifest

    raw = data / "raw"
    if not (raw / "dataset.yaml").exists():
        base = (make_anny_manifest(seed=0, n_realistic=2, n_heldout=1, extremes=("tall_male",),
                                   sequences_per_subject=4, frames_per_sequence=6, key_every=3, topology="lowpoly")
                if quick else load_manifest("anny"))
        generate_dataset(hold_out_family(add_families(base), family), raw)
    small = dict(surface_points=400, eval_points=500, shard_frames=5) if quick else {}
    out = {"raw": raw}
    for split, cfg in (("train", PreprocessConfig(geodesics="per-template", **small)),
                       ("test", PreprocessConfig(geodesics="per-template", **small)),
                       ("heldout", PreprocessConfig(geodesics="per-template", **small))):
        out[split] = Path(preprocess_split(AnnyReader(raw, (split,)), data / "stores", cfg, split, workers=workers).store)
    return out


def frames(stores: dict[str, Path]) -> dict[str, int]:
    from hipnet.pipeline.store.reading import Store

    return {k: Store.open(v).n_frames for k, v in stores.items() if k != "raw"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--family", default="sit", help="the pose family left out of training (default: sit)")
    p.add_argument("--quick", action="store_true", help="tiny data and budget: the plumbing, in seconds (tests)")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: data/family_<F>[_quick])")
    p.add_argument("--out", type=Path, default=None, help="results (default: bench/results/family_holdout.json)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="preprocessing worker processes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = QUICK if args.quick else Budget()
    data = args.data or ROOT / "data" / f"family_{args.family}{'_quick' if args.quick else ''}"
    out = args.out or ROOT / "bench" / "results" / "family_holdout.json"
    results = json.loads(out.read_text()) if out.exists() else {"entries": []}
    if any(e["family"] == args.family and e["budget"] == asdict(budget) for e in results["entries"]):
        print(f"{out}: family {args.family} is done at this budget")
        return 0
    t0 = time.time()
    stores = build(data, args.family, args.quick, args.workers)
    variant = next(v for v in VARIANTS if v.name == "no-offset+balance0.5")  # the fast preset when this was measured
    unseen = Evaluator({"test": stores["test"], "heldout": stores["heldout"]}, budget)
    seen = Evaluator({"test": stores["heldout"], "heldout": stores["heldout"]}, budget)
    model, names, curve, train_s, config, _ = run_hipnet(variant, 0, budget, stores, data / "runs", unseen)
    model.eval()
    scores = {"held_out_family": unseen.final(model, names), "in_family": seen.final(model, names)}
    drop = {k: scores["in_family"][k] - scores["held_out_family"][k] for k in ("uniform_miou", "near_miou")}
    entry = {"family": args.family, "variant": variant.name, "budget": asdict(budget), "commit": commit(),
             "threads": args.threads, "train_s": round(train_s, 1), "wall_s": round(time.time() - t0, 1),
             "frames": frames(stores),
             "curve_on_held_out_family": curve, "config": config, "drop": drop, **scores}
    results["entries"] = [e for e in results["entries"] if e["family"] != args.family] + [entry]
    results |= {"machine": machine(), "commit": commit(), "threads": args.threads}
    save_results(out, results)
    print(f"family {args.family}: uniform mIoU {scores['held_out_family']['uniform_miou']:.1f}% unseen vs "
          f"{scores['in_family']['uniform_miou']:.1f}% in-family (drop {drop['uniform_miou']:.1f} points); "
          f"near {scores['held_out_family']['near_miou']:.1f}% vs {scores['in_family']['near_miou']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
