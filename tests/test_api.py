"""The Python API (``import hipnet``) on the tiny two-ball model, whose answers are known (balls of radius 0.15 and
0.25 about the origin), against the lower-level functions it wraps; and every Python example in the README and the
docs, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import hipnet
from hipnet.model.apps import code_table
from hipnet.model.query import sdf_in_chunks

ROOT = Path(__file__).resolve().parents[1]
RADII = {"small": 0.15, "large": 0.25}


@pytest.fixture(scope="module")
def model(balls):
    _, run, _ = balls
    return hipnet.load(run)


def _sphere(r: float, n: int = 500, seed: int = 0) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return r * d / np.linalg.norm(d, axis=1, keepdims=True)


def test_import_is_lazy_and_names_what_it_exports():
    import subprocess
    import sys

    code = "import sys, hipnet; assert 'torch' not in sys.modules, 'torch imported'; print(sorted(hipnet.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "load" in out and "FrameDataset" in out
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hipnet.nope  # noqa: B018


def test_load_takes_a_run_folder_a_checkpoint_or_a_bundled_name(balls, model):
    _, run, _ = balls
    again = hipnet.load(run / "ckpt.pt")
    assert again.subjects == model.subjects == ["small", "large"]
    for a, b in zip(again.network.parameters(), model.network.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match=r"^no_such_model: no checkpoint there, and not a bundled model"):
        hipnet.load("no_such_model")
    assert "anny" in hipnet.pretrained_models()


def test_codes_by_name_index_array_and_mean(model):
    table = code_table(model.network)
    assert torch.equal(model.code("large"), table[1]) and torch.equal(model.code(1), table[1])
    assert torch.allclose(model.code(None), table.mean(0)) and np.allclose(model.mean_code, table.mean(0).numpy())
    assert torch.equal(model.code(table[0].numpy()), table[0])
    with pytest.raises(ValueError, match="'medium' is not in .*it has small, large"):
        model.code("medium")
    with pytest.raises(ValueError, match="outside 0..1"):
        model.code(2)
    with pytest.raises(ValueError, match=r"a code has shape \(4,\), got \(3,\)"):
        model.code(np.zeros(3))


def test_sdf_is_the_networks_and_knows_the_balls(balls, model):
    store, _, _ = balls
    pose = store.read("pose/joint_transforms", 0)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (300, 3)).astype(np.float32)
    for name in RADII:
        want = sdf_in_chunks(model.network, x, pose, model.code(name))
        assert np.array_equal(model.sdf(x, pose, name), want)
    # inside both balls, between them, outside both: the signs of the true SDFs
    assert (model.sdf(_sphere(0.08), pose, "small") < 0).all() and (model.sdf(_sphere(0.08), pose, "large") < 0).all()
    between = _sphere(0.20)
    assert (model.sdf(between, pose, "small") > 0).mean() > 0.95 and (model.sdf(between, pose, "large") < 0).mean() > 0.95
    assert (model.sdf(_sphere(0.40), pose, "large") > 0).all()
    with pytest.raises(ValueError, match=r"points are \(N, 3\)"):
        model.sdf(x[:, :2], pose)
    with pytest.raises(ValueError, match=r"a pose is \(2, 4, 4\) canonical joint transforms, got \(3, 4, 4\)"):
        model.sdf(x, np.tile(np.eye(4), (3, 1, 1)))


def test_mesh_has_each_balls_radius(balls, model):
    store, _, _ = balls
    pose = store.read("pose/joint_transforms", 0)
    for name, r in RADII.items():
        mesh = model.mesh(pose, name, resolution=64)
        radius = np.linalg.norm(mesh.vertices, axis=1)
        print(f"{name}: mean radius {radius.mean():.4f} (true {r}), spread {radius.std():.4f}")
        assert abs(radius.mean() - r) < 0.02 and radius.std() < 0.02


def test_fit_code_puts_the_surface_through_the_points(balls, model):
    store, _, _ = balls
    pose = store.read("pose/joint_transforms", 0)
    points = _sphere(RADII["large"], 1000)
    code = model.fit_code(points, pose, iters=100, lr=1e-2)
    at_mean = np.abs(model.sdf(points, pose, None)).mean()
    fitted = np.abs(model.sdf(points, pose, code)).mean()
    print(f"mean |F| on the large ball: mean code {1000 * at_mean:.1f} mm, fitted {1000 * fitted:.1f} mm")
    assert code.shape == (4,) and fitted < 0.5 * at_mean and fitted < 0.01
    assert all(p.requires_grad for p in model.network.parameters())


def test_frame_dataset_serves_store_frames_as_tensors(balls):
    store, _, _ = balls
    frames = hipnet.FrameDataset([store.path, store.path])
    assert len(frames) == 2 * store.n_frames and frames.subjects == ["small", "large"]
    for i in (0, store.n_frames - 1):
        item = frames[i]
        assert torch.equal(item["surface/points"], torch.from_numpy(store.read("surface/points", i)))
        assert torch.equal(item["surface/normals"], torch.from_numpy(store.read("surface/normals", i).astype(np.float32)))
        assert item["surface/labels"].dtype == torch.int64 and item["key"] == store.frame_key(i)
        assert frames.subjects[int(item["subject"])] == store.frame_key(i).split("/")[0]
        again = frames[i + store.n_frames]  # the second store: the same frame
        assert torch.equal(again["pose/joint_transforms"], item["pose/joint_transforms"])
    assert frames[-1]["key"] == frames[len(frames) - 1]["key"]
    with pytest.raises(IndexError, match=f"frame {len(frames)} is outside a dataset of {len(frames)} frames"):
        frames[len(frames)]
    batch = next(iter(DataLoader(frames, batch_size=4)))
    assert batch["surface/points"].shape == (4, store.dims.S, 3) and batch["subject"].dtype == torch.int64
    occupancy = hipnet.FrameDataset(store.path, arrays=("eval/uniform_occupancy",))[0]["eval/uniform_occupancy"]
    assert occupancy.dtype == torch.bool and occupancy.any() and not occupancy.all()
    with pytest.raises(FileNotFoundError, match="no_such.zarr is not a Zarr store"):
        hipnet.FrameDataset([store.path.parent / "no_such.zarr"])


def python_examples() -> list[tuple[str, str]]:
    """(file:line, code) of every ```python block of the README and the docs."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            line = text[: m.start()].count("\n") + 1
            out.append((f"{path.relative_to(ROOT)}:{line}", m.group(1)))
    return out


@pytest.mark.parametrize("where,code", python_examples(), ids=[w for w, _ in python_examples()])
def test_every_python_example_in_the_docs_runs(where, code, balls, monkeypatch, tmp_path):
    """Run as written, with the default data's training store replaced by the balls' store."""
    monkeypatch.chdir(tmp_path)
    code = code.replace("data/processed/anny/train.zarr", str(balls[0].path))
    exec(compile(code, where, "exec"), {"__name__": "__example__"})  # noqa: S102


def test_there_are_examples_to_run():
    places = {w.split(":")[0] for w, _ in python_examples()}
    assert {"README.md", "docs/guides/python-api.md"} <= places
