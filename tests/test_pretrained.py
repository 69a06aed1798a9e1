"""The bundled pretrained model (``model/pretrained/anny.pt``): small enough for git, complete, usable by every
application command with no store on disk, and still scoring what its file (``anny.json``) says on test frames this
test regenerates from the embedded manifest (the same bytes the scored store held: generation and preprocessing are
deterministic per sequence and per frame)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import hipnet
from hipnet.model.api import PRETRAINED_DIR
from hipnet.model.checkpoint import RESUME_KEYS, load_checkpoint

META = json.loads((PRETRAINED_DIR / "anny.json").read_text())
# the scored frames this test regenerates: two subjects' first test frames
CHECKED = [f for f in META["frames"] if f["subject"] in ("adult00", "tall_male")][:3]


def test_the_bundle_is_small_and_complete():
    path = PRETRAINED_DIR / "anny.pt"
    assert path.stat().st_size <= 20e6
    ck = load_checkpoint(path)
    assert not set(RESUME_KEYS) & set(ck), "the optimiser and loader state stay in the run"
    model = hipnet.load("anny")
    assert model.subjects == META["subjects"] and model.checkpoint["step"] == META["step"]
    assert len(model.example_poses) >= 4 and all(p.shape == (22, 4, 4) for p in model.example_poses)
    assert set(model.rest_joints) == set(model.subjects)
    # the example poses are posed joint transforms: rotations in the upper-left blocks
    for p in model.example_poses:
        assert np.allclose(p[:, :3, :3] @ p[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-5)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory, full_body):
    """A test store of the CHECKED frames, made as the scored store was made (its config is in anny.json)."""
    from hipnet.pipeline.core.config import PreprocessConfig
    from hipnet.pipeline.core.io import read_yaml
    from hipnet.pipeline.embedded.generate import generate_dataset
    from hipnet.pipeline.readers import open_reader
    from hipnet.pipeline.runner.driver import preprocess_split
    from hipnet.pipeline.sources.manifest import manifest_path
    from hipnet.pipeline.store.reading import Store

    manifest = read_yaml(manifest_path("anny"))
    wanted = {(f["subject"], f["sequence"]) for f in CHECKED}
    subset = {**{k: v for k, v in manifest.items() if k != "expected"},
              "subjects": [s for s in manifest["subjects"] if s["name"] in {w[0] for w in wanted}],
              "sequences": [s for s in manifest["sequences"] if (s["subject"], s["name"]) in wanted]}
    out = tmp_path_factory.mktemp("pretrained")
    generate_dataset(subset, out / "raw", body=full_body)
    cfg = PreprocessConfig(**META["test_store_config"])
    summary = preprocess_split(open_reader("anny", out / "raw", ("test",)), out / "processed", cfg, "test")
    return Store.open(summary.store)


def test_it_scores_what_its_file_says(regenerated):
    from hipnet.model.evaluate import evaluate_model

    model = hipnet.load("anny")
    store = regenerated
    keys = store.frame_keys()
    assert sorted(keys) == sorted(f"{f['subject']}/{f['sequence']}/0" for f in CHECKED)
    ev = evaluate_model(model.network, model.subjects, store, list(range(store.n_frames)))
    got = {s.key.split("/", 1)[1]: s for s in ev.frames}
    for f in CHECKED:
        s = got[f"{f['subject']}/{f['sequence']}/0"]
        print(f"{f['key']}: uniform {100 * s.uniform_iou:.2f}% (file {100 * f['uniform_iou']:.2f}), near "
              f"{100 * s.near_iou:.2f}% (file {100 * f['near_iou']:.2f})")
    for name in ("uniform_iou", "near_iou"):
        mine = np.mean([getattr(got[f"{f['subject']}/{f['sequence']}/0"], name) for f in CHECKED])
        theirs = np.mean([f[name] for f in CHECKED])
        assert abs(mine - theirs) <= 0.005, (name, mine, theirs)


def test_part_local_evaluation_of_the_bundled_dense_model_keeps_its_surface(regenerated):
    """The bundled model was trained dense; run part-locally (boxes from the store's labels) its SDF keeps its sign
    at the near-surface points and its scores stay within half a point."""
    from dataclasses import replace

    import torch

    from hipnet.model.evaluate import evaluate_model
    from hipnet.model.hipnet import HIPNet
    from hipnet.model.support import part_boxes

    model = hipnet.load("anny")
    dense = model.network
    local = HIPNet(dense.skeleton, len(model.subjects), replace(dense.cfg, part_support=True)).eval()
    local.load_state_dict(dense.state_dict(), strict=False)
    local.set_support(part_boxes([regenerated], 22))
    store, frames = regenerated, list(range(regenerated.n_frames))
    x = torch.as_tensor(np.stack([store.read("eval/near_points", f)[:20_000] for f in frames]))
    jt = torch.as_tensor(store.read("pose/joint_transforms"))
    subject = torch.tensor([model.subjects.index(store.subjects[int(s)]) for s in store.read("frame/subject")])
    with torch.no_grad():
        a, b = dense(x, jt, subject).sdf, local(x, jt, subject).sdf
    assert ((a < 0) == (b < 0)).float().mean() >= 0.99 and (a - b).abs().mean() < 1e-3
    scores = [evaluate_model(m, model.subjects, store, frames) for m in (dense, local)]
    for name in ("uniform_iou", "near_iou"):
        mine, theirs = (np.mean([getattr(s, name) for s in ev.frames]) for ev in scores)
        assert abs(mine - theirs) <= 0.005, (name, mine, theirs)


def test_fit_runs_on_the_bundled_model(regenerated, tmp_path):
    from hipnet.cli.apps import fit_main

    r = CliRunner().invoke(fit_main, ["--checkpoint", "anny", "--store", str(regenerated.path), "--frame", "0",
                                      "--n-points", "1000", "--iters", "20", "--resolution", "32",
                                      "--out", str(tmp_path / "fit")])
    assert r.exit_code == 0, r.output
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["points"] == 1000 and fit["loss_last"] < fit["loss_first"] and fit["uniform_iou"] > 0.8


def test_sample_and_blend_need_no_store(tmp_path, monkeypatch):
    """With no data here, the default pose and the subjects' rest joints come from the bundle."""
    from hipnet.cli.apps import animate_main, sample_main

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(sample_main, ["--checkpoint", "anny", "--n", "2", "--resolution", "32"])
    assert r.exit_code == 0, r.output
    samples = tmp_path / "runs" / "pretrained_anny" / "samples"
    assert (samples / "samples.png").stat().st_size > 0 and np.load(samples / "codes.npy").shape == (2, 32)
    r = CliRunner().invoke(animate_main, ["--checkpoint", "anny", "--blend", "adult00", "heavy_male", "--steps", "2",
                                          "--resolution", "32"])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output and len(list((tmp_path / "runs" / "pretrained_anny" / "animate").glob("*.ply"))) == 2
    r = CliRunner().invoke(sample_main, ["--checkpoint", "no_such_model"])
    assert r.exit_code == 1 and "no_such_model: no checkpoint there, and not a bundled model (bundled: anny)" in r.output


def test_the_viewer_opens_it_by_name(tmp_path, monkeypatch):
    from hipnet.viz.sources import load_sources

    monkeypatch.chdir(tmp_path)
    sources = load_sources(["anny"])
    assert not sources.problems and len(sources.runs) == 1 and sources.runs[0].model is not None
