"""The quantised store layout (``hipnet-data preprocess --quantise``): the 16-bit codes against their stated error
bounds on random inputs, and a real tiny store written through the CLI, read back (decoded) within the bounds its
``quantisation`` attribute states, relabelled in place, and validated."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from hipnet.cli.data import main
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split, relabel_store
from hipnet.pipeline.runner.frame import PreprocessConfig, SubjectGeometry, frame_rng, process_frame
from hipnet.pipeline.stages.canonical import canonicalise
from hipnet.pipeline.stages.surface import sample_surface
from hipnet.pipeline.store.quantise import (
    chunk_order,
    decode_normals,
    decode_points,
    encode_normals,
    encode_points,
    point_box,
    point_error_bound,
)
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import NORMAL_ERROR_BOUND_RAD, validate
from hipnet.pipeline.store.zarrstore import open_group

SMALL = dict(surface_points=600, eval_points=500)


def angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) between rows of ``a`` and ``b``, accurate for tiny angles (atan2 of |a x b| and a.b)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), np.einsum("ij,ij->i", a, b))


def test_octahedral_normals_stay_within_the_stated_bound_on_many_unit_vectors():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(2_000_000, 3))
    special = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0], [0, 0, -1], [1, 1, 0], [1, -1, 0],
                        [1, 1, 1], [-1, -1, -1], [1, 1e-9, -1], [-1e-9, 1, -1], [0, 0, -1 + 1e-12]], dtype=np.float64)
    n = np.concatenate([special, n])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    codes = encode_normals(n)
    assert codes.dtype == np.uint16 and codes.shape == (len(n), 2)
    decoded = decode_normals(codes)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1, atol=1e-6)
    err = angles(n, decoded)
    # the analytic bound holds, and is tight (the worst of 2M random directions comes within 5% of it)
    assert err.max() <= NORMAL_ERROR_BOUND_RAD, (err.max(), NORMAL_ERROR_BOUND_RAD)
    assert err.max() > 0.95 * NORMAL_ERROR_BOUND_RAD
    assert math.degrees(NORMAL_ERROR_BOUND_RAD) < 0.004  # float16 normals are off by up to ~0.03 degrees


def test_chunk_order_sorts_by_x_code_within_each_chunk_only():
    codes = np.random.default_rng(2).integers(0, 65536, size=(7_000, 3)).astype(np.uint16)
    order = chunk_order(codes, 2_500)
    np.testing.assert_array_equal(np.sort(order), np.arange(7_000))
    np.testing.assert_array_equal(order // 2_500, np.arange(7_000) // 2_500)  # every row stays in its chunk
    for lo in (0, 2_500, 5_000):
        assert (np.diff(codes[order][lo:lo + 2_500, 0].astype(int)) >= 0).all()


def test_point_codes_stay_within_half_a_step_of_their_box():
    rng = np.random.default_rng(1)
    # body-sized boxes (the code step dominates: the bound is tight), and a 1 mm box 5 m out (float32 rounding does)
    for scale, offset, tight in ((1.0, 0.0, True), (0.9, np.array([0.3, -1.1, 0.2]), True), (1e-3, 5.0, False)):
        p = rng.normal(size=(50_000, 3)) * scale + offset
        box = point_box(p)
        assert (box[0] <= p.min(0)).all() and (box[1] >= p.max(0)).all() and box.dtype == np.float32
        err = np.linalg.norm(decode_points(encode_points(p, box), box) - p, axis=1)
        assert err.max() <= point_error_bound(box) and (err.max() > 0.5 * point_error_bound(box) or not tight)
    flat = np.zeros((10, 3)) + [0.5, 0.0, -0.25]  # a flat box: every code 0, decoded exactly
    np.testing.assert_array_equal(decode_points(encode_points(flat, point_box(flat)), point_box(flat)), flat)


@pytest.fixture(scope="module")
def quantised(tmp_path_factory, tiny_raw):
    """The tiny low-poly test split written with ``--quantise`` through the CLI (shards of 5 frames)."""
    out = tmp_path_factory.mktemp("quantised")
    args = ["preprocess", "--dataset", "anny", "--root", str(tiny_raw), "--out", str(out), "--splits", "test",
            "--points", str(SMALL["surface_points"]), "--eval-points", str(SMALL["eval_points"]),
            "--shard-frames", "5", "--geodesics", "per-template", "--workers", "1", "--quantise"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out / "test.zarr"


def test_a_quantised_store_reads_back_within_its_stated_bounds(quantised, tiny_raw):
    store = Store.open(quantised)
    cfg = PreprocessConfig(**SMALL, shard_frames=5, geodesics="per-template", quantise=True)
    assert store.attrs["config"] == cfg.to_attrs() and store.sections == ["train", "eval", "mesh", "quantised"]
    assert "surface/points" not in store.group and store.group["surface/points_quantised"].dtype == np.uint16
    assert store.group["surface/points_quantised"].chunks == (1, 600, 3)  # S = 600 < the 2,500-point chunk
    q = store.attrs["quantisation"]
    assert q["max_normal_error_deg"] == math.degrees(NORMAL_ERROR_BOUND_RAD)
    assert validate(open_group(quantised)).ok

    reader = AnnyReader(tiny_raw, ("test",))
    refs = reader.frame_refs()
    point_err, normal_err = [], []
    for i in range(store.n_frames):
        _, frame = next(iter(reader.load([refs[i]])))
        canon = canonicalise(frame.vertices, frame.joint_transforms)
        truth = sample_surface(canon.vertices, frame.faces, cfg.surface_points, frame_rng(cfg.seed, "anny", frame.key))
        order = chunk_order(encode_points(truth.points, point_box(truth.points)))  # the store's order
        truth = truth._replace(points=truth.points[order], normals=truth.normals[order])
        points, normals = store.read("surface/points", i), store.read("surface/normals", i)
        assert points.dtype == normals.dtype == np.float32 and normals.shape == (600, 3)
        point_err.append(np.linalg.norm(points - truth.points, axis=1).max())
        assert point_err[-1] <= point_error_bound(store.read("surface/box", i))
        normal_err.append(angles(truth.normals, normals).max())
        if i in (0, 23):  # the stored codes are what process_frame gives, labels as in a lossless store
            geom = SubjectGeometry.build(reader.subject(frame.subject), "per-template", "test")
            expect = process_frame(frame, geom, cfg, tuple(store.sections), "anny")
            for name, value in expect.items():
                np.testing.assert_array_equal(store.read(name, i), value, err_msg=name)
            lossless = process_frame(frame, geom, PreprocessConfig(**SMALL, geodesics="per-template"),
                                     ("train",), "anny")
            np.testing.assert_array_equal(store.read("surface/labels", i), lossless["surface/labels"][order])
    # the stored bound covers every frame's worst point (and is not loose: within a factor 2 of the worst seen)
    assert max(point_err) * 1000 <= q["max_point_error_mm"] < 2 * max(point_err) * 1000
    assert max(point_err) < 3e-5 and max(normal_err) <= NORMAL_ERROR_BOUND_RAD


def test_a_quantised_store_is_about_half_the_bytes_at_25k_points(tmp_path, tiny_raw):
    sizes = {}
    for quantise in (False, True):
        cfg = PreprocessConfig(surface_points=25_000, shard_frames=8, geodesics="per-template", quantise=quantise)
        reader = AnnyReader(tiny_raw, ("train",))
        summary = preprocess_split(reader, tmp_path / str(quantise), cfg, "train", workers=1)
        store = Store.open(summary.store)
        sizes[quantise] = store.bytes_on_disk() / store.n_frames
    assert sizes[True] <= 250_000 and sizes[True] < 0.6 * sizes[False], sizes


def test_relabelling_a_quantised_store_in_place(quantised, tiny_raw, tmp_path):
    import shutil

    path = tmp_path / "test.zarr"
    shutil.copytree(quantised, path)
    before = Store.open(path).read("surface/labels")
    summary = relabel_store(AnnyReader(tiny_raw, ("test",)), path, "per-frame")
    store = Store.open(path)
    assert summary.complete and store.attrs["config"]["geodesics"] == "per-frame" and store.attrs["config"]["quantise"]
    after = store.read("surface/labels")
    assert after.shape == before.shape and 0.8 < (after == before).mean() < 1.0
    assert "max_point_error_mm" in store.attrs["quantisation"] and validate(open_group(path)).ok
