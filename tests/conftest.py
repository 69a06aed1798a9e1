"""Shared fixtures: the Anny bodies (built once, cached by Anny) and a tiny generated dataset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def lowpoly_body():
    from hipnet.pipeline.embedded.body import AnnyBody

    return AnnyBody("lowpoly")


@pytest.fixture(scope="session")
def full_body():
    from hipnet.pipeline.embedded.body import AnnyBody

    return AnnyBody("full")


def tiny_manifest(seed: int = 0, topology: str = "lowpoly") -> dict:
    from hipnet.pipeline.embedded.generate import make_anny_manifest

    return make_anny_manifest(
        seed=seed, n_realistic=2, n_heldout=1, extremes=("tall_male", "slim_female"), sequences_per_subject=4,
        frames_per_sequence=6, key_every=3, topology=topology,
    )


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory, lowpoly_body):
    from hipnet.pipeline.embedded.generate import generate_dataset

    out = tmp_path_factory.mktemp("raw") / "anny"
    generate_dataset(tiny_manifest(), out, body=lowpoly_body)
    return out


@pytest.fixture(scope="session")
def tiny_raw_full(tmp_path_factory, full_body):
    """The same tiny manifest at full resolution: the topology every default run uses."""
    from hipnet.pipeline.embedded.generate import generate_dataset

    out = tmp_path_factory.mktemp("raw_full") / "anny"
    generate_dataset(tiny_manifest(topology="full"), out, body=full_body)
    return out


@pytest.fixture(scope="session")
def balls(tmp_path_factory):
    """(store, run folder, model): the balls preprocessed with evaluation points and a tiny model trained on them
    (the application and API tests' model)."""
    from synthetic import BallsReader

    from hipnet.model.config import PRESETS
    from hipnet.model.train import load_checkpoint, model_from_checkpoint, train
    from hipnet.pipeline.core.config import PreprocessConfig
    from hipnet.pipeline.runner.driver import preprocess_split
    from hipnet.pipeline.store.reading import Store

    out = tmp_path_factory.mktemp("balls")
    cfg = PreprocessConfig(surface_points=4000, eval_points=20_000, geodesics="per-template", eval_on_train=True)
    store = Store.open(preprocess_split(BallsReader(), out, cfg, "train").store)
    base = PRESETS["fast"]
    model = replace(base.model, hidden=16, layers=4, skip=2, pose_dim=4, pose_hidden=8, code_dim=4,
                    aggregator_hidden=8)
    tcfg = replace(base, model=model, points_per_frame=200, eikonal_per_frame=200, frames_per_step=2, steps=250,
                   lr=1e-2, loader_workers=0, checkpoint_every=1000)
    train([store.path], tcfg, out / "run", progress=False)
    ck = load_checkpoint(out / "run" / "ckpt.pt")
    return store, out / "run", model_from_checkpoint(ck).eval()
