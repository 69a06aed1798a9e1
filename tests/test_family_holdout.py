"""The held-out motion-family benchmark's quick mode: real family data, stores split by motion family, real
training steps, the harness's evaluation on the unseen family and on the in-family test sequences."""

from __future__ import annotations

import json

from bench_scripts import load_bench


def test_quick_family_holdout_end_to_end(tmp_path):
    mod = load_bench("family_holdout")
    out = tmp_path / "families.json"
    args = ["--quick", "--family", "sit", "--data", str(tmp_path / "data"), "--out", str(out), "--workers", "1"]
    assert mod.main(args) == 0
    (entry,) = json.loads(out.read_text())["entries"]
    assert entry["family"] == "sit" and entry["frames"]["test"] > 0 and entry["frames"]["heldout"] > 0
    for scores in (entry["held_out_family"], entry["in_family"]):
        assert 0 <= scores["uniform_miou"] <= 100 and 0 <= scores["near_miou"] <= 100
    assert abs(entry["drop"]["uniform_miou"] - (entry["in_family"]["uniform_miou"]
                                               - entry["held_out_family"]["uniform_miou"])) < 1e-9
    # the test store holds only the held-out family, the training store none of it
    from hipnet.pipeline.store.reading import Store

    data = tmp_path / "data" / "stores"
    def names(split: str) -> set[str]:
        store = Store.open(data / f"{split}.zarr")
        return {store.sequences[q] for q in store.read("frame/sequence").tolist()}

    assert names("test") and all(q.startswith("sit") for q in names("test"))
    assert not any(q.startswith("sit") for q in names("train") | names("heldout"))
    assert any(q.startswith("motion") for q in names("train"))  # the default random motions are trained on
    assert mod.main(args) == 0  # a rerun skips the finished family
