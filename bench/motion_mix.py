"""What the training mix buys: the default random key poses alone, with the pose families, with the DeepMimic clips.

Do the DeepMimic clips belong in the default mix? Three models of the harness's ``buffer256`` (the ``fast``
preset's sizes and batch at Adam 4e-3), seed 0, each trained for the harness's 250 steps:

- ``random``: on the default dataset's training sequences (the harness's own training store);
- ``+families``: those plus the training sequences of the 7 pose families (``add_families``: one sequence of each
  family per subject, 5 of the 7 in training);
- ``+deepmimic``: those plus the training clips of the 15 DeepMimic mocap clips (``add_deepmimic``, every 8th
  frame; 11 of the 15 clips per subject in training).

Each model is scored by the harness's own evaluation (16 frames: uniform and near-surface mIoU, per-joint IoU,
Chamfer-L1 on 8 meshed frames) on three test sets of the same 12 training subjects, none of whose sequences any
model trained on: the default held-out poses (the harness's test store), the families' test sequences (2 per
subject) and the clips' test sequences (4 per subject). Equal steps, so a mix spreads the same 8,000 frame visits
over more poses. Writes bench/results/motion_mix.json (rerunning skips the finished models).

    python -m bench.motion_mix                 # about 30 CPU minutes on 2 cores (data, stores, 3 trainings, 9 scores)
    python -m bench.motion_mix --quick --clips DIR   # tiny data, a test of the plumbing (DIR: clips in the format)
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
from bench.harness.stores import build_stores
from bench.harness.variants import QUICK, VARIANTS, Budget

ROOT = Path(__file__).resolve().parents[1]
MIXES = ("families", "deepmimic")
MODELS = ("random", "+families", "+deepmimic")
TEST_SETS = ("random", "families", "deepmimic")
CLIP_EVERY = 8  # every 8th frame of a clip (30 fps mocap at 3.75 fps): 211 frames per subject
QUICK_CLIP_EVERY = 40
MIX_EVAL_POINTS = 20_000  # uniform and near-surface evaluation points per test frame of the mixes' test stores


def base_manifest(quick: bool) -> dict:
    """The harness's manifest (the default dataset; in the quick mode its tiny lowpoly one)."""
    from hipnet.pipeline.embedded.generate import make_anny_manifest
    from hipnet.pipeline.sources.manifest import load_manifest

    if quick:
        return make_anny_manifest(seed=0, n_realistic=2, n_heldout=1, extremes=("tall_male", "slim_female"),
                                  sequences_per_subject=4, frames_per_sequence=6, key_every=3, topology="lowpoly")
    return load_manifest("anny")


def mix_manifest(base: dict, mix: str, clip_every: int) -> dict:
    """``base`` with the mix's sequences added, re-split for this experiment: ``train`` = the base's training
    sequences plus the added ones in training; ``test`` = only the added test sequences. The base's test
    sequences (scored from the harness's store) and the held-out subjects are left out."""
    from hipnet.pipeline.embedded.deepmimic import add_deepmimic
    from hipnet.pipeline.embedded.generate import add_families
    from hipnet.pipeline.sources.manifest import check_split

    m = add_families(base) if mix == "families" else add_deepmimic(base, clip_every)
    sequences = [q for q in m["sequences"]
                 if q["split"] == "train" or (q["split"] == "test" and ("family" in q or "clip" in q))]
    used = {q["subject"] for q in sequences}
    out = {**m, "subjects": [s for s in m["subjects"] if s["name"] in used], "sequences": sequences,
           "description": f"{m['description'].rstrip('.')}. Mix experiment ({mix}): test holds only the added "
                          "test sequences."}
    out.pop("expected", None)
    check_split(out)
    return out


def build_mix(data: Path, mix: str, quick: bool, clips: Path | None, workers: int) -> dict[str, Path]:
    """The raw mix dataset and its train and test stores (resumable, deterministic)."""
    from hipnet.pipeline.core.config import PreprocessConfig
    from hipnet.pipeline.embedded.deepmimic import deepmimic_motion_source
    from hipnet.pipeline.embedded.generate import generate_dataset
    from hipnet.pipeline.readers.anny import AnnyReader
    from hipnet.pipeline.runner.driver import preprocess_split

    raw = data / mix / "raw"
    if not (raw / "dataset.yaml").exists():
        manifest = mix_manifest(base_manifest(quick), mix, QUICK_CLIP_EVERY if quick else CLIP_EVERY)
        source = deepmimic_motion_source(clips) if mix == "deepmimic" else None
        generate_dataset(manifest, raw, motion_source=source)
    small = dict(surface_points=400, eval_points=500, shard_frames=5) if quick else {}
    out = {"raw": raw}
    for split, cfg in (("train", PreprocessConfig(geodesics="per-template", **small)),
                       ("test", PreprocessConfig(geodesics="per-template", **({"eval_points": MIX_EVAL_POINTS} | small)))):
        out[split] = Path(preprocess_split(AnnyReader(raw, (split,)), data / mix / "stores", cfg, split,
                                           workers=workers).store)
    return out


def n_frames(path: Path) -> int:
    from hipnet.pipeline.store.reading import Store

    return Store.open(path).n_frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data and budget: the plumbing, in seconds (tests)")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder (default: data/motion_mix[_quick]; the random model's stores are the accuracy "
                        "harness's, data/accuracy[_quick], built there if missing)")
    p.add_argument("--harness-data", type=Path, default=None, help="the accuracy harness's data folder")
    p.add_argument("--clips", type=Path, default=None,
                   help="folder of the DeepMimic clips (default: the cache, fetched with pip on first use)")
    p.add_argument("--out", type=Path, default=None, help="results (default: bench/results/motion_mix.json)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="preprocessing worker processes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = QUICK if args.quick else Budget()
    suffix = "_quick" if args.quick else ""
    data = args.data or ROOT / "data" / f"motion_mix{suffix}"
    out = args.out or ROOT / "bench" / "results" / "motion_mix.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("budget") != asdict(budget):
        results = {"budget": asdict(budget), "models": {}}
    stores = {"random": build_stores(args.harness_data or ROOT / "data" / f"accuracy{suffix}", args.quick,
                                             args.workers)}
    for mix in MIXES:
        stores[mix] = build_mix(data, mix, args.quick, args.clips, args.workers)
    evaluators = {t: Evaluator({"test": stores[t]["test"], "heldout": stores[t]["test"]}, budget)
                  for t in TEST_SETS}
    variant = next(v for v in VARIANTS if v.name == "buffer256")  # the fast preset when this was measured
    for model_name, mix in zip(MODELS, ("random", *MIXES), strict=True):
        if model_name in results["models"]:
            print(f"{out}: {model_name} is done")
            continue
        t0 = time.time()
        train = stores[mix]
        print(f"{model_name}: training on {n_frames(train['train'])} frames", flush=True)
        model, names, curve, train_s, config, _ = run_hipnet(
            variant, 0, budget, {**stores["random"], "train": train["train"]}, data / "runs" / model_name,
            evaluators["random"])
        model.eval()
        scores = {t: ev.final(model, names) for t, ev in evaluators.items()}
        results["models"][model_name] = {
            "variant": variant.name, "seed": 0, "train_frames": n_frames(train["train"]),
            "test_frames": {t: n_frames(stores[t]["test"]) for t in TEST_SETS}, "train_s": round(train_s, 1),
            "wall_s": round(time.time() - t0, 1), "curve_on_random_test": curve, "config": config, "scores": scores}
        results |= {"machine": machine(), "commit": commit(), "threads": args.threads,
                    "clip_every": QUICK_CLIP_EVERY if args.quick else CLIP_EVERY,
                    "mix_eval_points": MIX_EVAL_POINTS}
        save_results(out, results)
        print(f"{model_name}: " + "; ".join(f"{t} {s['uniform_miou']:.1f} / {s['near_miou']:.1f}%"
                                            for t, s in scores.items()), flush=True)
    print(table(results))
    return 0


def table(results: dict) -> str:
    """The table of docs/experiments/motion.md: uniform / near-surface mIoU of each model on each test set."""
    head = "| trained on | frames | " + " | ".join(f"{t} test: uniform / near (%)" for t in TEST_SETS) + " |"
    rows = [head, "|" + "---|" * (2 + len(TEST_SETS))]
    for name in MODELS:
        e = results["models"].get(name)
        if e is None:
            continue
        cells = [f"{e['scores'][t]['uniform_miou']:.1f} / {e['scores'][t]['near_miou']:.1f}" for t in TEST_SETS]
        rows.append(f"| `{name}` | {e['train_frames']:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
