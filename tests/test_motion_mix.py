"""The training-mix benchmark (bench/motion_mix.py) and the DeepMimic mix it builds on: clips written in the exact
published format, real generated data, real stores, real training steps and the harness's evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load_bench

from hipnet.pipeline.embedded.deepmimic import CLIPS, add_deepmimic, deepmimic_motion_source
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
from hipnet.pipeline.sources.manifest import check_split, load_manifest

BENCH = Path(__file__).resolve().parents[1] / "bench"
IDENTITY_Q = [1.0, 0.0, 0.0, 0.0]


def write_clips(folder: Path, n_frames: int) -> Path:
    """The 15 clips in DeepMimic's format: frame k bends the right knee by k / n rad and moves the root 1 cm."""
    folder.mkdir(parents=True, exist_ok=True)
    q = IDENTITY_Q
    for clip in CLIPS:
        frames = [[1 / 30, 0.01 * k, 0.85, 0.0, *q, *q, *q, *q, -k / n_frames, *q, *q, 0.0, *q, 0.0, *q, *q, 0.0]
                  for k in range(n_frames)]
        (folder / f"humanoid3d_{clip}.txt").write_text(json.dumps({"Loop": "wrap", "Frames": frames}))
    return folder


def test_add_deepmimic_keeps_the_manifest_and_splits_clips_per_subject():
    base = load_manifest("anny")
    m = add_deepmimic(base, every=8)
    check_split(m)
    assert m["sequences"][: len(base["sequences"])] == base["sequences"]  # the manifest's own, unchanged
    added = m["sequences"][len(base["sequences"]):]
    assert len(added) == len(CLIPS) * len(base["subjects"]) and all(q["clip"] == q["name"] for q in added)
    heldout = {q["subject"] for q in base["sequences"] if q["split"] == "heldout"}
    for s in base["subjects"]:
        splits = [q["split"] for q in added if q["subject"] == s["name"]]
        if s["name"] in heldout:
            assert set(splits) == {"heldout"}
        else:
            assert splits.count("test") == 4 and splits.count("train") == 11
    assert m["generator"]["deepmimic_frame_step"] == 8 and "expected" not in m
    assert add_deepmimic(base, every=8) == m  # deterministic
    with pytest.raises(ValueError, match="already has sequences named after DeepMimic clips"):
        add_deepmimic(m)


def test_mixed_generation_plays_clips_and_leaves_the_procedural_sequences_byte_identical(tmp_path, lowpoly_body):
    base = make_anny_manifest(seed=0, n_realistic=1, n_heldout=0, extremes=(), sequences_per_subject=2,
                              frames_per_sequence=4, key_every=2, topology="lowpoly")
    clips = write_clips(tmp_path / "clips", n_frames=10)
    generate_dataset(base, tmp_path / "base", body=lowpoly_body)
    mixed = add_deepmimic(base, every=3)
    generate_dataset(mixed, tmp_path / "mix", body=lowpoly_body, motion_source=deepmimic_motion_source(clips))
    for q in base["sequences"]:
        rel = Path("sequences") / q["subject"] / f"{q['name']}.npz"
        assert (tmp_path / "mix" / rel).read_bytes() == (tmp_path / "base" / rel).read_bytes()
    subject = base["subjects"][0]["name"]
    with np.load(tmp_path / "mix" / "sequences" / subject / "walk.npz") as z:
        jt = z["joint_transforms"]
    assert len(jt) == 4  # frames 0, 3, 6, 9 of 10
    # every 3rd frame: the root moves 3 cm a frame along DeepMimic's +X, which is the toolkit's +Z
    np.testing.assert_allclose(np.diff(jt[:, 0, :3, 3], axis=0), [[0.0, 0.0, 0.03]] * 3, atol=1e-6)


def test_quick_motion_mix_end_to_end(tmp_path):
    mod = load_bench("motion_mix")
    out = tmp_path / "mix.json"
    clips = write_clips(tmp_path / "clips", n_frames=81)  # 3 frames a clip at every 40th
    args = ["--quick", "--data", str(tmp_path / "data"), "--harness-data", str(tmp_path / "acc"), "--clips",
            str(clips), "--out", str(out), "--workers", "1"]
    assert mod.main(args) == 0
    results = json.loads(out.read_text())
    assert list(results["models"]) == list(mod.MODELS)
    for e in results["models"].values():
        assert set(e["scores"]) == set(mod.TEST_SETS)
        for s in e["scores"].values():
            assert 0 <= s["uniform_miou"] <= 100 and 0 <= s["near_miou"] <= 100
    frames = {k: e["train_frames"] for k, e in results["models"].items()}
    from hipnet.pipeline.store.reading import Store

    def sequences(path: Path) -> set[tuple[str, str]]:
        store = Store.open(path)
        ids = zip(store.read("frame/subject").tolist(), store.read("frame/sequence").tolist(), strict=True)
        return {(store.subjects[s], store.sequences[q]) for s, q in ids}

    stores = tmp_path / "data"
    random_train = sequences(tmp_path / "acc" / "stores" / "train.zarr")
    for mix in mod.MIXES:
        train, test = sequences(stores / mix / "stores" / "train.zarr"), sequences(stores / mix / "stores" / "test.zarr")
        assert random_train < train and not (train & test)
        assert test and all(not q.startswith("motion") for _, q in test)  # only the added test sequences
    # the deepmimic mix adds 3 frames (81 at every 40th) of each of 11 training clips per training subject
    subjects = {s for s, _ in random_train}
    assert frames["+deepmimic"] - frames["random"] == 3 * 11 * len(subjects)
    assert mod.main(args) == 0  # a rerun skips the finished models
