"""The GPU check's script runs end to end on a CPU (`bench/gpu_check.py --device cpu --tiny`): throughput rows for
every precision mode and both forward paths, a short training run on real stores, its evaluation and the precision
errors, all written to the JSON. (The figures mean nothing on a CPU; the plumbing is what is checked.)"""

from __future__ import annotations

import json

from bench_scripts import load_bench

from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split


def test_gpu_check_runs_end_to_end_on_cpu(tmp_path, tiny_raw):
    cfg = PreprocessConfig(surface_points=300, eval_points=300, shard_frames=8, geodesics="per-template")
    data = tmp_path / "data"
    for split in ("train", "test"):
        preprocess_split(AnnyReader(tiny_raw, (split,)), data, cfg, split)
    out = tmp_path / "gpu.json"
    rc = load_bench("gpu_check").main(["--device", "cpu", "--tiny", "--no-compile", "--data", str(data),
                                        "--out", str(out), "--run", str(tmp_path / "run")])
    result = json.loads(out.read_text())
    assert rc == 0, result.get("training_error")
    rows = result["throughput"]
    assert {(r["mode"], r["forward"]) for r in rows} == {(m, f) for m in ("fp32", "tf32", "bf16")
                                                        for f in ("batched", "naive")}
    assert all(r["query_points_per_s"] > 0 for r in rows), [r.get("error") for r in rows]
    assert result["pytest"]["returncode"] in (0, 5)  # 5: every GPU test skipped (no CUDA here)
    part = result["part_local"]
    assert set(part["dense_over"]) == {"dense", "part-support", "dense-forward", "part-support-forward"}, part
    assert all(c["step_s"] > 0 for c in part["configurations"].values())
    assert 0 < part["share"]["evaluated"] <= part["share"]["with_padding"] <= 1
    assert result["training"]["steps"] == 3
    assert 0 <= result["evaluation"]["uniform_miou"] <= 1
    assert result["precision_error"]["tf32"]["sdf_max_abs_mm"] == 0.0  # tf32 is plain fp32 on a CPU
    assert result["precision_error"]["bf16"]["sdf_max_abs_mm"] > 0.0  # bf16 autocast really ran
