"""Training a variant (HIPNet through ``hipnet.model.train``, NASA through its own loop) and scoring it into one
results entry; a saved run's model found again from its checkpoint."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from bench.harness.evaluation import Evaluator
from bench.harness.stores import sdf_target_check, vertex_labels
from bench.harness.variants import SDF_BAND, Budget, Variant, train_config


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
    from hipnet.pipeline.store.reading import Store

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
