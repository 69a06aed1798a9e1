"""The accuracy harness's quick mode (plumbing, not numbers): real stores, real training steps of HIPNet variants
and NASA, the shared evaluation, test-time fitting, the results file, the table and the picture."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load_bench

from hipnet.model.config import PRESETS

ALL3 = "paper+local+softmin+sdf"  # the three departures on paper-full: the configuration of departures-full


def harness():
    """The harness's names in one namespace: the command (``bench.accuracy``) and its parts (``bench.harness.*``)."""
    from types import SimpleNamespace

    from bench.harness import evaluation, report, runs, stores, variants

    names = {}
    for module in (variants, stores, evaluation, runs, report, load_bench("accuracy")):
        names |= {k: v for k, v in vars(module).items() if not k.startswith("__")}
    return SimpleNamespace(**names)


def test_variant_names_and_ladder_switches():
    acc = harness()
    names = [v.name for v in acc.VARIANTS]
    assert names == ["paper-base", "paper-subnet", "paper-hier", "paper-full", "departures-base", "departures-subnet",
                     "departures-hier", "departures-full", "paper+local", "paper+softmin", "paper+sdf",
                     ALL3, "nasa", "surface", "depth4", "depth1", "depth4-noband", "depth1-noband",
                     "depth1-world", "forward-gradients", "no-offset", "radius0.2", "width64", "balance0.5", "balance1.0",
                     "no-offset+balance0.5", "code-lr3x", "16-frames", "near-sigma0.015", "32-frames", "buffer256",
                     "lr8e-3", "64-frames", "lr1.2e-2", "tau5mm", "tau2.5mm", "250-surface-points", "3-layers",
                     "part-support", "part-support@500", "part-support+forward", "part-support+forward@3000",
                     "no-offset+balance0.5@6000", "buffer256@3000", "buffer256@6000", "lr8e-3@6000"]
    # every old name maps to a variant, and every variant but the ladders' rungs and the peers names its parent
    assert set(acc.RENAMED.values()) <= set(names)
    assert all(v.parent in names for v in acc.VARIANTS if v.parent)
    cfg = {v.name: acc.train_config(v, 0, acc.Budget()) for v in acc.VARIANTS if v.kind == "hipnet"}
    # the ladder adds one switch per rung; every variant shares the sizes and the optimiser
    assert (cfg["paper-base"].model.hierarchical, cfg["paper-base"].subnet_losses, cfg["paper-base"].model.code_dim) \
        == (False, False, 0)
    assert (cfg["paper-subnet"].model.hierarchical, cfg["paper-subnet"].subnet_losses) == (False, True)
    assert (cfg["paper-hier"].model.hierarchical, cfg["paper-hier"].model.code_dim) == (True, 0)
    assert cfg["paper-full"].model.code_dim == 32 and not cfg["paper-full"].model.local_frames
    assert cfg["departures-full"] == cfg[ALL3]
    local = cfg["paper+local"]
    assert local.model.local_frames and local.model.aggregation == "mean" and local.lambda_sdf == 0
    assert cfg["paper+softmin"].model.aggregation == "softmin" and not cfg["paper+softmin"].model.local_frames
    assert cfg["paper+sdf"].lambda_sdf == 1.0 and cfg["paper+sdf"].model.aggregation == "mean"
    levers = {v.name for v in acc.VARIANTS if v.group in ("levers", "long preset", "part-local")}
    assert len({(c.lr, c.frames_per_step, c.points_per_frame, c.model.hidden, c.steps, c.gradients)
                for n, c in cfg.items() if n not in levers}) == 1
    # each lever is departures-full with one change
    ref = cfg["departures-full"]
    assert cfg["forward-gradients"] == replace(ref, gradients="forward") and ref.gradients == "autograd"
    assert cfg["no-offset"] == replace(ref, model=replace(ref.model, softmin_offset=False))
    assert cfg["radius0.2"] == replace(ref, model=replace(ref.model, sphere_radius=0.2))
    assert cfg["width64"] == replace(ref, model=replace(ref.model, hidden=64))
    assert cfg["balance0.5"] == replace(ref, part_balance=0.5) and ref.part_balance == 0.0
    # the harness's base stays the fast preset as first measured (its batch, shuffle buffer, learning rate and
    # soft-min temperature too); part-support is the preset as it is now, tau5mm that with every sub-network on
    # every point, lr8e-3 the same at tau 1 cm,
    # buffer256 that at 4e-3, 32-frames that with the harness's buffer, no-offset+balance0.5 with the harness's batch,
    # and the other
    # v2 levers one change each to no-offset+balance0.5
    fast = replace(PRESETS["fast"], steps=ref.steps, checkpoint_every=ref.checkpoint_every,
                   log_every=ref.log_every, loader_workers=ref.loader_workers)
    assert cfg["part-support+forward"] == fast and fast.gradients == "forward"
    preset = replace(fast, gradients="autograd")
    assert cfg["part-support"] == preset and preset.model.softmin_tau == 0.005 and ref.model.softmin_tau == 0.01
    assert cfg["tau5mm"] == replace(preset, model=replace(preset.model, part_support=False))
    assert cfg["part-support@500"] == replace(preset, steps=500, log_every=50, checkpoint_every=500)
    now = cfg["lr8e-3"]
    assert ref.model.softmin_offset and now == replace(cfg["tau5mm"], model=replace(cfg["tau5mm"].model, softmin_tau=0.01))
    assert now.shuffle_buffer == 256
    assert cfg["buffer256"] == replace(now, lr=4e-3) and now.lr == 8e-3 and ref.lr == 4e-3
    assert cfg["32-frames"] == replace(cfg["buffer256"], shuffle_buffer=32)
    assert (ref.frames_per_step, ref.points_per_frame, ref.eikonal_per_frame, ref.shuffle_buffer) == (8, 500, 1000, 32)
    assert cfg["no-offset+balance0.5"] == replace(cfg["32-frames"], frames_per_step=8, points_per_frame=500,
                                                  eikonal_per_frame=1000)
    assert cfg["code-lr3x"] == replace(cfg["no-offset+balance0.5"], code_lr=1.2e-2)
    assert cfg["near-sigma0.015"] == replace(cfg["no-offset+balance0.5"], eikonal_near_sigma=0.015)
    # one change each to lr8e-3: twice the frames at half the points (a buffer twice as deep), Adam 1.2e-2,
    # the soft-min's temperature, surface for eikonal points, 3-layer sub-networks
    assert cfg["64-frames"] == replace(now, frames_per_step=64, points_per_frame=63, eikonal_per_frame=125,
                                        shuffle_buffer=512)
    assert cfg["lr1.2e-2"] == replace(now, lr=1.2e-2)
    for name, tau in (("tau5mm", 0.005), ("tau2.5mm", 0.0025)):
        assert cfg[name] == replace(now, model=replace(now.model, softmin_tau=tau))
    assert cfg["250-surface-points"] == replace(now, points_per_frame=250, eikonal_per_frame=125)
    assert cfg["3-layers"] == replace(now, model=replace(now.model, layers=3, skip=1))
    for name in ("16-frames", "32-frames", "64-frames", "250-surface-points"):  # the same query points per step (to 1%)
        c = cfg[name]
        assert abs(c.frames_per_step * (c.points_per_frame + c.eikonal_per_frame)
                   / (ref.frames_per_step * (ref.points_per_frame + ref.eikonal_per_frame)) - 1) < 0.01
    # the long preset on its own budget of steps (the quick mode keeps the tiny budget): the fast preset's batch and
    # buffer over 3,000 and 6,000 steps at 4e-3 (buffer256@3000, buffer256@6000) and 6,000 at 8e-3 (lr8e-3@6000; the preset
    # is the one with its number of steps and learning rate), and the preset as it was first (long)
    for name, steps in (("buffer256@3000", 3000), ("buffer256@6000", 6000)):
        assert cfg[name] == replace(cfg["buffer256"], steps=steps, checkpoint_every=steps, log_every=250)
    long_preset = next(n for n in ("buffer256@3000", "buffer256@6000", "lr8e-3@6000")
                       if (cfg[n].steps, cfg[n].lr) == (PRESETS["long"].steps, PRESETS["long"].lr))
    assert cfg[long_preset] == replace(PRESETS["long"], checkpoint_every=PRESETS["long"].steps, log_every=250,
                                       loader_workers=ref.loader_workers, gradients="autograd")
    assert cfg["no-offset+balance0.5@6000"] == replace(cfg["no-offset+balance0.5"], steps=6000, checkpoint_every=6000,
                                                       log_every=250)
    assert cfg["lr8e-3@6000"] == replace(cfg["buffer256@6000"], lr=8e-3)
    assert cfg["part-support+forward@3000"] == replace(cfg["part-support+forward"], steps=3000, checkpoint_every=3000,
                                                       log_every=250)
    for name in ("no-offset+balance0.5@6000", "buffer256@3000", "buffer256@6000", "lr8e-3@6000"):
        long = next(v for v in acc.VARIANTS if v.name == name)
        assert long.budget(acc.QUICK) == acc.QUICK and long.budget(acc.Budget()).eval_every == 500
    # the observation experiment: the fast preset on another training store; the depth variants' band is named
    assert cfg["surface"] == cfg["departures-full"] and cfg["surface"].sdf_target_band is None
    assert cfg["depth4"] == cfg["depth1"] and cfg["depth1"] == replace(cfg["departures-full"], sdf_target_band=acc.SDF_BAND)
    assert cfg["depth1-noband"] == cfg["departures-full"]
    views = {v.name: v.depth_views for v in acc.VARIANTS if v.group == "observations"}
    assert views == {"surface": 0, "depth4": 4, "depth1": 1, "depth4-noband": 4, "depth1-noband": 1, "depth1-world": 1}
    assert cfg["depth1-world"] == cfg["depth1"] and {v.name: v.depth_key for v in acc.VARIANTS if v.depth_views} == {
        "depth4": "depth4", "depth1": "depth1", "depth4-noband": "depth4", "depth1-noband": "depth1",
        "depth1-world": "depth1-world"}


def test_quick_harness_end_to_end(tmp_path, tiny_raw):
    acc = harness()
    out, png = tmp_path / "accuracy.json", tmp_path / "accuracy.png"
    args = ["--quick", "--only", f"paper-base,departures-full,{ALL3},nasa", "--data", str(tmp_path / "data"), "--raw",
            str(tiny_raw), "--out", str(out), "--png", str(png), "--workers", "1"]
    assert acc.main(args) == 0
    data = json.loads(out.read_text())
    runs = {(e["name"], e["seed"]): e for e in data["variants"]}
    assert set(runs) == {("paper-base", 0), ("departures-full", 0), (ALL3, 0), (ALL3, 1), ("nasa", 0), ("nasa", 1)}
    for e in runs.values():
        assert 0 <= e["uniform_miou"] <= 100 and 0 <= e["near_miou"] <= 100
        assert [p["step"] for p in e["curve"]] == [1, 2] and e["steps"] == 2
        assert set(e["per_joint_near_iou"]) and e["wall_s"] > 0
    assert runs[("paper-base", 0)]["fit_1k_uniform_miou"] is None  # no subject codes to fit
    assert runs[("nasa", 0)]["fit_1k_uniform_miou"] is not None
    ident = runs[("departures-full", 0)]["identity"]
    assert ident["subjects"] >= 2 and 0 <= ident["iou_mean_code"] <= 100 and 0 <= ident["iou_own_code"] <= 100
    assert ident["volume_cv_gt"] > 0.01  # the embedded subjects differ in size: the measure is not degenerate
    assert runs[("paper-base", 0)]["identity"] is None  # no codes
    assert runs[(ALL3, 0)]["same_run_as"] == "departures-full"
    assert runs[(ALL3, 0)]["uniform_miou"] == runs[("departures-full", 0)]["uniform_miou"]
    assert set(data["spread"]) == {ALL3, "nasa"}
    assert png.stat().st_size > 0 and "| `nasa` |" in acc.table(data)
    # a rerun skips what is written
    before = out.read_text()
    assert acc.main(args) == 0
    assert json.loads(out.read_text())["variants"] == json.loads(before)["variants"]
    assert runs[("departures-full", 0)]["fit_depth1_uniform_miou"] is not None
    assert runs[("paper-base", 0)]["fit_depth1_uniform_miou"] is None  # no subject codes to fit

    # the observation experiment on the same data: `surface` shares departures-full's run, depth1 trains on a depth store
    # built from the train store's meshes; departures-full's entry lost its depth fit (as if written before the score
    # existed) and gets it back from its checkpoint
    data["variants"] = [{k: v for k, v in e.items() if not k.startswith("fit_depth1")} for e in data["variants"]]
    out.write_text(json.dumps(data))
    depth_png = tmp_path / "depth.png"
    obs_args = ["--quick", "--only", "surface,depth1,depth1-world", "--data", str(tmp_path / "data"), "--raw", str(tiny_raw),
                "--out", str(out), "--png", str(png), "--depth-png", str(depth_png), "--workers", "1"]
    assert acc.main(obs_args) == 0
    data = json.loads(out.read_text())
    runs = {(e["name"], e["seed"]): e for e in data["variants"]}
    full, surface, depth = runs[("departures-full", 0)], runs[("surface", 0)], runs[("depth1", 0)]
    assert full["fit_depth1_from_checkpoint"] and 0 <= full["fit_depth1_uniform_miou"] <= 100
    assert surface["same_run_as"] == "departures-full" and surface["uniform_miou"] == full["uniform_miou"]
    assert surface["fit_depth1_uniform_miou"] == full["fit_depth1_uniform_miou"]
    assert surface["training_data"] == "mesh surfaces" and depth["training_data"] == "1 depth view"
    assert runs[("depth1-world", 0)]["training_data"] == "1 depth view (static sensor)"
    assert (tmp_path / "data" / "stores" / "depth1-world_72x96" / "train.zarr").is_dir()
    assert depth["config"]["sdf_target_band"] == acc.SDF_BAND and depth["steps"] == 2
    for k in ("uniform_miou", "near_miou", "fit_1k_uniform_miou", "fit_depth1_uniform_miou", "fit_depth1_near_miou"):
        assert 0 <= depth[k] <= 100, k
    assert 0 < depth["fit_depth1_points_seen"]
    for e in (surface, depth):
        bands = e["sdf_targets"]["bands"]
        assert bands["None"]["coverage"] == 100 and 0 < bands["0.03"]["coverage"] < 100
        assert all(0 <= b["gross_wrong_sign"] <= b["wrong_sign"] <= 100 for b in bands.values())
    # a band keeps the targets' sign where it is observed: fewer gross sign errors than without
    assert depth["sdf_targets"]["bands"]["0.03"]["gross_wrong_sign"] < depth["sdf_targets"]["bands"]["None"][
        "gross_wrong_sign"]
    front_only_depth_store(tmp_path / "data" / "stores", acc.depth_sensor(1, tiny=True))
    obs = acc.observations_table(data)
    assert "| `depth1` | 1 depth view | 0.03 |" in obs and "| `surface` | mesh surfaces | - |" in obs
    assert depth_png.stat().st_size > 0
    page = tmp_path / "accuracy.md"
    page.write_text("# x\n<!-- accuracy-table:begin -->\nold\n<!-- accuracy-table:end -->\nrest\n")
    acc.write_page(data, page, depth_png)
    text = page.read_text()
    assert "| `depth1` |" in text and "](depth.png)" in text and text.endswith("rest\n") and "old" not in text


def front_only_depth_store(stores: Path, sensor) -> None:
    """The 1-view depth store holds only what the front camera sees: every sample's image normal faces the camera,
    and every sample is the first surface its camera ray meets (the ray to it hits the frame's mesh, from the
    train store's same frame key, within the sensor's noise bound of it: nothing behind the visible surface)."""
    import open3d as o3d

    from hipnet.pipeline.store.reading import Store

    depth, mesh = Store.open(stores / "depth1_72x96" / "train.zarr"), Store.open(stores / "train.zarr")
    assert set(depth.sections) == {"train", "observed"} and depth.frame_keys() == mesh.frame_keys()
    camera = np.array([0.0, 0.0, sensor.distance])  # the front camera in the canonical frame (the body faces +Z)
    faces = mesh.read("mesh/faces").astype(np.uint32)
    for i in range(0, depth.n_frames, 12):
        p, n = depth.read("surface/points", i).astype(np.float64), depth.read("surface/normals", i)
        to_camera = camera - p
        assert (np.einsum("ij,ij->i", n, to_camera) > 0).all()
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(mesh.read("mesh/vertices", i).astype(np.float32)), o3d.core.Tensor(faces))
        dist = np.linalg.norm(to_camera, axis=1)
        z = to_camera[:, 2]  # depth along the optical axis (-Z); the noise is along the ray: |ray| = dist / z
        bound = (sensor.noise_clip * sensor.sigma(z) + sensor.quantum) * dist / z + 1e-3  # 1 mm: float32 storage
        rays = np.concatenate([np.broadcast_to(camera, p.shape), -to_camera / dist[:, None]], axis=1)
        hit = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy()
        assert np.isfinite(hit).all() and (np.abs(hit - dist) < bound).all()


def test_merge_adds_the_missing_runs_of_the_same_budget_only():
    rep = harness()  # puts bench/ on the path
    from bench.harness.report import merge

    def run(name, seed, u):
        return {"name": name, "seed": seed, "uniform_miou": u, "near_miou": u}

    data = {"budget": {"steps": 250}, "variants": [run(ALL3, 0, 80.0)]}
    # a file written before the rows said what they change: "fast" is read as the row it was renamed to
    other = {"budget": {"steps": 250}, "commit": "abc", "variants": [run("fast", 0, 1.0), run("fast", 1, 84.0),
                                                                      run("nasa", 0, 70.0)]}
    assert merge(data, other, "other.json") == 2
    assert data["variants"][1]["was"] == "fast"
    assert [(e["name"], e["seed"], e["uniform_miou"]) for e in data["variants"]] == [
        (ALL3, 0, 80.0), (ALL3, 1, 84.0), ("nasa", 0, 70.0)]  # the run already there is kept
    assert data["spread"][ALL3]["uniform_miou"] == {"mean": 82.0, "spread": 4.0}
    with pytest.raises(SystemExit, match="another budget"):
        merge(data, {"budget": {"steps": 10}, "variants": []}, "short.json")
    assert rep.VARIANTS


def test_a_run_on_its_own_budget_says_its_steps_in_the_table():
    harness()  # puts bench/ on the path
    from bench.harness.report import table

    def run(name, steps):
        return {"name": name, "group": "g", "seed": 0, "steps": steps, "uniform_miou": 90.0, "near_miou": 85.0,
                "train_s": 10.0}

    text = table({"budget": {"steps": 250}, "threads": 2,
                  "variants": [run("no-offset+balance0.5", 250), run("no-offset+balance0.5@6000", 6000)]})
    assert "| `no-offset+balance0.5` | `departures-full` | g |" in text
    assert "| `no-offset+balance0.5@6000` (6,000 steps) | `no-offset+balance0.5` | g |" in text


def test_a_variant_with_its_own_budget_trains_and_is_recorded_on_it(monkeypatch):
    """run_variant hands the runner the long variant's 6,000 steps (not the harness's 250) and its curve spacing."""
    acc = harness()
    seen = []

    class Stop(Exception):
        pass

    def runner(v, seed, budget, *args):
        seen.append(budget)
        raise Stop

    from bench.harness import runs

    monkeypatch.setattr(runs, "run_hipnet", runner)
    for name in ("no-offset+balance0.5@6000", "no-offset+balance0.5"):
        with pytest.raises(Stop):
            acc.run_variant(next(v for v in acc.VARIANTS if v.name == name), 0, acc.Budget(), {}, None, None)
    assert [(b.steps, b.eval_every) for b in seen] == [(6000, 500), (250, 50)]


def test_the_base_configuration_is_written_out_whole_and_the_presets_do_not_move_it(monkeypatch):
    """``BASE`` names every field of TrainConfig and ModelConfig (a default that changes later cannot move a row),
    and the variants' configurations do not depend on the presets."""
    import ast
    from dataclasses import fields

    from bench.harness import variants
    from hipnet.model import config

    call = next(n.value for n in ast.parse(Path(variants.__file__).read_text()).body
                if isinstance(n, ast.AnnAssign | ast.Assign) and getattr(n, "targets", [None])[0] is not None
                and getattr(n.targets[0], "id", "") == "BASE")
    given = {k.arg for k in call.keywords}
    model = {k.arg for k in next(k.value for k in call.keywords if k.arg == "model").keywords}
    assert given == {f.name for f in fields(config.TrainConfig)}
    assert model == {f.name for f in fields(config.ModelConfig)}
    acc = harness()
    before = {v.name: acc.train_config(v, 0, acc.Budget()) for v in acc.VARIANTS}
    monkeypatch.setitem(config.PRESETS, "fast", config.PRESETS["paper"])
    assert {v.name: acc.train_config(v, 0, acc.Budget()) for v in acc.VARIANTS} == before
