"""The accuracy harness's quick mode (plumbing, not numbers): real stores, real training steps of HIPNet variants
and NASA, the shared evaluation, test-time fitting, the results file, the table and the picture."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def harness():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("accuracy", BENCH / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["accuracy"] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def test_variant_names_and_ladder_switches():
    acc = harness()
    names = [v.name for v in acc.VARIANTS]
    assert names == ["paper-base", "paper-subnet", "paper-hier", "paper-full", "fast-base", "fast-subnet", "fast-hier",
                     "fast-full", "+local", "+softmin", "+sdf", "fast", "nasa"]
    cfg = {v.name: acc.train_config(v, 0, acc.Budget()) for v in acc.VARIANTS if v.kind == "hipnet"}
    # the ladder adds one switch per rung; every variant shares the sizes and the optimiser
    assert (cfg["paper-base"].model.hierarchical, cfg["paper-base"].subnet_losses, cfg["paper-base"].model.code_dim) \
        == (False, False, 0)
    assert (cfg["paper-subnet"].model.hierarchical, cfg["paper-subnet"].subnet_losses) == (False, True)
    assert (cfg["paper-hier"].model.hierarchical, cfg["paper-hier"].model.code_dim) == (True, 0)
    assert cfg["paper-full"].model.code_dim == 32 and not cfg["paper-full"].model.local_frames
    assert cfg["fast-full"] == cfg["fast"]
    assert cfg["+local"].model.local_frames and cfg["+local"].model.aggregation == "mean" and cfg["+local"].lambda_sdf == 0
    assert cfg["+softmin"].model.aggregation == "softmin" and not cfg["+softmin"].model.local_frames
    assert cfg["+sdf"].lambda_sdf == 1.0 and cfg["+sdf"].model.aggregation == "mean"
    assert len({(c.lr, c.frames_per_step, c.points_per_frame, c.model.hidden, c.steps) for c in cfg.values()}) == 1


def test_quick_harness_end_to_end(tmp_path, tiny_raw):
    acc = harness()
    out, png = tmp_path / "accuracy.json", tmp_path / "accuracy.png"
    args = ["--quick", "--only", "paper-base,fast-full,fast,nasa", "--data", str(tmp_path / "data"), "--raw",
            str(tiny_raw), "--out", str(out), "--png", str(png), "--workers", "1"]
    assert acc.main(args) == 0
    data = json.loads(out.read_text())
    runs = {(e["name"], e["seed"]): e for e in data["variants"]}
    assert set(runs) == {("paper-base", 0), ("fast-full", 0), ("fast", 0), ("fast", 1), ("nasa", 0), ("nasa", 1)}
    for e in runs.values():
        assert 0 <= e["uniform_miou"] <= 100 and 0 <= e["near_miou"] <= 100
        assert [p["step"] for p in e["curve"]] == [1, 2] and e["steps"] == 2
        assert set(e["per_joint_near_iou"]) and e["wall_s"] > 0
    assert runs[("paper-base", 0)]["fit_1k_uniform_miou"] is None  # no subject codes to fit
    assert runs[("nasa", 0)]["fit_1k_uniform_miou"] is not None
    ident = runs[("fast-full", 0)]["identity"]
    assert ident["subjects"] >= 2 and 0 <= ident["iou_mean_code"] <= 100 and 0 <= ident["iou_own_code"] <= 100
    assert ident["volume_cv_gt"] > 0.01  # the embedded subjects differ in size: the measure is not degenerate
    assert runs[("paper-base", 0)]["identity"] is None  # no codes
    assert runs[("fast", 0)]["same_run_as"] == "fast-full"
    assert runs[("fast", 0)]["uniform_miou"] == runs[("fast-full", 0)]["uniform_miou"]
    assert set(data["spread"]) == {"fast", "nasa"}
    assert png.stat().st_size > 0 and "| `nasa` |" in acc.table(data)
    # a rerun skips what is written
    before = out.read_text()
    assert acc.main(args) == 0
    assert json.loads(out.read_text())["variants"] == json.loads(before)["variants"]


def test_merge_adds_the_missing_runs_of_the_same_budget_only():
    import pytest

    rep = harness()  # puts bench/ on the path
    from _accuracy_report import merge

    def run(name, seed, u):
        return {"name": name, "seed": seed, "uniform_miou": u, "near_miou": u}

    data = {"budget": {"steps": 250}, "variants": [run("fast", 0, 80.0)]}
    other = {"budget": {"steps": 250}, "commit": "abc", "variants": [run("fast", 0, 1.0), run("fast", 1, 84.0),
                                                                      run("nasa", 0, 70.0)]}
    assert merge(data, other, "other.json") == 2
    assert [(e["name"], e["seed"], e["uniform_miou"]) for e in data["variants"]] == [
        ("fast", 0, 80.0), ("fast", 1, 84.0), ("nasa", 0, 70.0)]  # the run already there is kept
    assert data["spread"]["fast"]["uniform_miou"] == {"mean": 82.0, "spread": 4.0}
    with pytest.raises(SystemExit, match="another budget"):
        merge(data, {"budget": {"steps": 10}, "variants": []}, "short.json")
    assert rep.VARIANTS
