"""Shared fixtures: the Anny bodies (built once, cached by Anny) and a tiny generated dataset."""

from __future__ import annotations

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
