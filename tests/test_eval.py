"""Evaluation on analytic shapes: IoU and Chamfer of exact and shifted spheres (closed forms), mesh extraction
accuracy and coarse-to-fine = dense, per-joint grouping on a two-bone capsule, and hipnet-eval end to end."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import trimesh
from bench_scripts import load_bench
from click.testing import CliRunner

from hipnet.cli.eval import main as eval_main
from hipnet.model.evaluate import evaluate_store, iou, joint_ious, surface_metrics
from hipnet.model.meshing import Mesh, coarse_to_fine_grid, dense_grid, extract_mesh, marching_cubes
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.readers.base import Reader, ReaderInfo, SequenceInfo
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import SCHEMA_VERSION

R = 0.4


class SphereReader(Reader):
    """A reader of one frame: an icosphere of radius R centred at the origin, with a two-joint skeleton on the Y
    axis (labels: lower / upper hemisphere)."""

    dataset = name = "sphere"
    skeleton = Skeleton(("lower", "upper"), (-1, 0))

    def __init__(self, root="sphere", splits=("test",)):
        super().__init__(root, splits)
        self.all_sequences = [{"subject": "ball", "name": "still", "split": "test"}]
        m = trimesh.creation.icosphere(6, radius=R)
        self.v, self.f = np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32)
        jt = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
        jt[0, 1, 3], jt[1, 1, 3] = -0.2, 0.2
        self.jt = jt

    @property
    def info(self):
        return ReaderInfo("sphere", "sphere", str(self.root), None, ("ball",), (SequenceInfo("ball", "still", "test", 1),))

    def frame_refs(self):
        return [FrameRef("ball", "still", 0, "sphere")]

    def subject(self, name):
        return Subject(name, self.jt[:, :3, 3], self.f, self.v)

    def load(self, refs):
        for r in refs:
            yield r, Frame("ball", "still", 0, self.v, self.f, self.jt, self.jt[:, :3, 3])


@pytest.fixture(scope="module")
def sphere_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("sphere")
    cfg = PreprocessConfig(surface_points=20_000, eval_points=100_000, geodesics="per-template", snarf=True)
    return Store.open(preprocess_split(SphereReader(), out, cfg, "test").store)


def ball(centre=(0.0, 0.0, 0.0), r=R):
    c = np.asarray(centre, dtype=np.float32)
    return lambda p: np.linalg.norm(p - c, axis=1) - r


def canonical_centre(store, shift=(0.0, 0.0, 0.0)):
    """Where the world-frame centre (+ shift) of the sphere lies in the store's canonical frame (pelvis at 0)."""
    w = store.read("pose/world_from_canonical", 0).astype(np.float64)
    return (np.asarray(shift) - w[:3, 3]) @ w[:3, :3]


def test_exact_sphere_scores_iou_one_and_chamfer_near_zero(sphere_store):
    exact = ball(canonical_centre(sphere_store))
    ev = evaluate_store(sphere_store, lambda i: exact, [0], meshed=[0], resolution=128, chamfer_points=50_000)
    s = ev.frames[0]
    # the store's truth is an icosphere (chords inside the sphere): agreement up to its ~1e-3 relative sag
    assert s.uniform_iou > 0.997 and s.near_iou > 0.98 and s.snarf_uniform_iou > 0.997 and s.snarf_near_iou > 0.95
    # Chamfer of point samples has a floor: two independent 50k samplings of the same mesh are ~3 mm apart here
    truth = ev.meshes[s.key][1]
    floor = surface_metrics(truth, truth, n=50_000, seed=1)
    assert s.surface.chamfer_mm < floor.chamfer_mm + 0.3 and s.surface.normal_consistency > 0.999
    assert s.surface.chamfer_l1_x1e4 == pytest.approx(s.surface.chamfer_mm / 1000 / (2 * R / 10) * 1e4, rel=0.02)


def test_chamfer_by_resolution_falls_to_the_sampling_floor_on_an_exact_sphere(sphere_store):
    """bench/mesh_resolution.py on the analytic sphere: a coarse grid's chords cost Chamfer, a fine one reaches the
    floor (the truth against another sampling of itself), which the script reports beside the rows."""
    mr = load_bench("mesh_resolution")
    exact = ball(canonical_centre(sphere_store))
    out = mr.chamfer_by_resolution(sphere_store, lambda i: exact, [0], [32, 128], chamfer_points=50_000)
    coarse, fine = out["rows"]
    ev = evaluate_store(sphere_store, lambda i: exact, [0], [0], 16, 10)
    truth = ev.meshes[ev.frames[0].key][1]
    assert out["floor"]["chamfer_mm"] == pytest.approx(surface_metrics(truth, truth, 50_000, seed=1).chamfer_mm)
    # a smooth sphere is meshed to the floor at 128^3 already; 32^3's chords still show, in distance and normals
    assert abs(fine["chamfer_mm"] - out["floor"]["chamfer_mm"]) < 0.05 and coarse["chamfer_mm"] > fine["chamfer_mm"]
    assert coarse["normal_consistency"] < fine["normal_consistency"]
    assert fine["queries"] > coarse["queries"] and fine["per_frame_mm"] == [fine["chamfer_mm"]]


def test_shifted_sphere_iou_matches_the_closed_form(sphere_store):
    """Two spheres of radius R at distance d: lens volume pi (4R + d)(2R - d)^2 / 12; IoU = lens / (2V - lens),
    computed on the uniform points in the box that contains both (the shift stays inside the stretched bbox)."""
    d = 0.06
    ev = evaluate_store(sphere_store, lambda i: ball(canonical_centre(sphere_store, (d, 0, 0))), [0])
    lens = np.pi * (4 * R + d) * (2 * R - d) ** 2 / 12
    vol = 4 / 3 * np.pi * R**3
    expected = lens / (2 * vol - lens)
    # sampling error of 100k uniform points (IoU estimated on ~35% of them) plus the icosphere's chord sag
    assert abs(ev.frames[0].uniform_iou - expected) < 0.006, (ev.frames[0].uniform_iou, expected)


def test_mesh_extraction_is_accurate_and_coarse_to_fine_equals_dense():
    centre = np.array([0.03, -0.02, 0.01])
    sdf = ball(centre, 0.4)
    lo, hi = np.full(3, -0.6), np.full(3, 0.6)
    grid = coarse_to_fine_grid(sdf, lo, hi, 128, start=16)
    dense = dense_grid(sdf, lo, hi, 128)
    assert grid.evaluated < 0.3 * dense.evaluated  # most of the box is skipped
    a, b = marching_cubes(grid.values, lo, hi), marching_cubes(dense.values, lo, hi)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)
    r = np.linalg.norm(a.vertices - centre, axis=1)
    voxel = 1.2 / 128
    assert np.abs(r - 0.4).max() < voxel
    tm = trimesh.Trimesh(a.vertices, a.faces)
    assert tm.is_watertight and tm.volume > 0  # outward faces
    # the largest-component filter removes a small second ball
    two = lambda p: np.minimum(sdf(p), ball((0.5, 0.5, 0.5), 0.05)(p))  # noqa: E731
    mesh, _ = extract_mesh(two, lo, hi + 0.1, 64, start=16)
    assert np.linalg.norm(mesh.vertices - centre, axis=1).max() < 0.45


def test_per_joint_iou_groups_points_by_their_label():
    """Two-bone capsule, joints at y = -0.15 / +0.15: a prediction wrong only above y = 0.3 leaves the lower joint
    perfect and costs the upper one."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.5, 0.5, size=(20_000, 3))
    seg = np.clip(pts[:, 1], -0.3, 0.3)
    inside = np.hypot(pts[:, 0], pts[:, 2]) ** 2 + (pts[:, 1] - seg) ** 2 < 0.15**2
    labels = (pts[:, 1] > 0).astype(np.uint8)
    pred = inside & (pts[:, 1] < 0.3)
    per = joint_ious(pred, inside, labels, 2)
    assert per[0] == 1.0
    top = labels == 1
    expect = np.count_nonzero(pred & inside & top) / np.count_nonzero((pred | inside) & top)
    assert per[1] == pytest.approx(expect) and per[1] < 0.9
    assert iou(pred, inside) > per[1]
    assert np.isnan(joint_ious(pred, inside, np.zeros(len(pts), np.uint8), 3)[2])  # a joint without points


def test_surface_metrics_in_closed_form():
    """A sphere against a concentric one 50 mm larger: accuracy and completeness are both 50 mm (the ~3 mm spacing
    of the samples adds under 1% at this offset)."""
    def icos(r):
        m = trimesh.creation.icosphere(6, radius=r)
        return Mesh(np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32))

    s = surface_metrics(icos(0.4), icos(0.45), n=50_000)
    assert s.chamfer_mm == pytest.approx(50.0, rel=0.02)
    assert s.chamfer_l1_x1e4 == pytest.approx(0.05 / (0.9 / 10) * 1e4, rel=0.02)
    assert s.normal_consistency > 0.999


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_raw):
    """(train and test stores, run folder): a tiny model trained 5 steps on the tiny Anny dataset."""
    from hipnet.model.config import PRESETS
    from hipnet.model.train import train
    from hipnet.pipeline.readers.anny import AnnyReader

    tmp = tmp_path_factory.mktemp("tiny_run")
    cfg = PreprocessConfig(surface_points=500, eval_points=2000, shard_frames=8, geodesics="per-template")
    stores = {s: preprocess_split(AnnyReader(tiny_raw, (s,)), tmp / "data", cfg, s).store for s in ("train", "test")}
    small = PRESETS["small"]
    tcfg = replace(small, model=replace(small.model, hidden=16, layers=4, skip=2, code_dim=8, pose_dim=8),
                   points_per_frame=200, eikonal_per_frame=200, steps=5, loader_workers=0)
    train([stores["train"]], tcfg, tmp / "run", progress=False)
    return stores, tmp / "run"


def _eval(run, *args):
    return CliRunner().invoke(eval_main, ["--checkpoint", str(run / "ckpt.pt"), "--max-frames", "3", "--resolution",
                                            "32", "--chamfer-points", "2000", "--device", "cpu", *map(str, args)])


def test_hipnet_eval_end_to_end_on_a_tiny_trained_model(tmp_path, tiny_raw, tiny_run):
    from hipnet.pipeline.readers.anny import AnnyReader

    stores, run = tiny_run
    out = tmp_path / "eval"
    result = _eval(run, "--shards", stores["test"], "--mesh-frames", "2", "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["frames"] == 3 and len(metrics["frames"]) == 3
    assert 0 <= metrics["summary"]["uniform_miou"] <= 1 and "per_joint_near_iou" in metrics["summary"]
    assert metrics["provenance"]["step"] == 5
    report = (out / "report.md").read_text()
    assert "uniform mIoU" in report and "1) pelvis" in report and "Per subject" in report
    assert (out / "iou_hist.png").stat().st_size > 5000
    assert len(list((out / "meshes").glob("*.ply"))) in (0, 4)  # an untrained model may have no surface yet
    # held-out subjects are refused unless asked for the mean code
    cfg = PreprocessConfig(surface_points=500, eval_points=2000, shard_frames=8, geodesics="per-template")
    held = preprocess_split(AnnyReader(tiny_raw, ("heldout",)), tmp_path / "data", cfg, "heldout").store
    bad = _eval(run, "--shards", held, "--max-frames", "1", "--mesh-frames", "0", "--out", tmp_path / "held")
    assert bad.exit_code == 1 and "not in the checkpoint" in bad.output


def test_mesh_resolution_script_adds_its_entry_and_names_a_bad_store(tmp_path, tiny_run, capsys):
    stores, run = tiny_run
    mr, out = load_bench("mesh_resolution"), tmp_path / "res.json"
    out.write_text('{"entries": {"other": {}}}')
    args = ["--checkpoint", str(run / "ckpt.pt"), "--resolutions", "32,64", "--chamfer-points", "2000", "--threads",
            "1", "--out", str(out)]
    assert mr.main([*args, "--store", str(stores["test"]), "--label", "tiny", "--mesh-frames", "1"]) == 0
    entries = json.loads(out.read_text())["entries"]
    assert set(entries) == {"other", "tiny"} and [r["resolution"] for r in entries["tiny"]["rows"]] == [32, 64]
    assert entries["tiny"]["frames"] == [0] and entries["tiny"]["checkpoint_step"] == 5
    assert mr.main([*args, "--store", str(tmp_path / "missing.zarr"), "--label", "x"]) == 1
    assert "missing.zarr" in capsys.readouterr().err and set(json.loads(out.read_text())["entries"]) == {"other", "tiny"}


def test_a_frame_scores_the_same_in_a_store_of_every_frame_and_in_a_thinned_one(tmp_path, tiny_raw, tiny_run):
    """The demo's test store keeps every 16th frame (``--frame-every``): there a frame sits at another row, and its
    occupancy, labels and Chamfer samples (seeded by the frame's name) must not change with it."""
    from hipnet.pipeline.readers.anny import AnnyReader

    stores, _ = tiny_run
    full = Store.open(stores["test"])
    cfg = PreprocessConfig(surface_points=500, eval_points=2000, shard_frames=8, geodesics="per-template",
                           frame_every=3)
    thin = Store.open(preprocess_split(AnnyReader(tiny_raw, ("test",)), tmp_path, cfg, "test").store)
    rows = {full.frame_key(i): i for i in range(full.n_frames)}
    pairs = [(k, rows[thin.frame_key(k)]) for k in (1, 5)]
    assert all(j != k for k, j in pairs) and thin.n_frames == full.n_frames // 3

    def sdf_of(store):  # a sphere around each frame's body: a surface to mesh and sample whatever the row
        return lambda i: ball(store.read("mesh/vertices", i).mean(0), 0.3)

    for k, j in pairs:
        a = evaluate_store(thin, sdf_of(thin), [k], [k], resolution=32, chamfer_points=2000).frames[0]
        b = evaluate_store(full, sdf_of(full), [j], [j], resolution=32, chamfer_points=2000).frames[0]
        assert a.surface is not None and np.isfinite(a.surface.chamfer_mm)
        assert (a.uniform_iou, a.near_iou, a.surface) == (b.uniform_iou, b.near_iou, b.surface)


def test_two_stores_keep_their_frames_and_meshes_apart(tmp_path, tiny_run):
    """Two stores with the same frames (and the same file stem): six frame keys and two sets of meshes, each
    prefixed by its store's label, none overwriting another."""
    stores, run = tiny_run
    copy = tmp_path / "copy" / "test.zarr"
    shutil.copytree(stores["test"], copy)
    out = tmp_path / "eval"
    result = _eval(run, "--shards", stores["test"], "--shards", copy, "--mesh-frames", "2", "--out", out)
    assert result.exit_code == 0, result.output
    frames = json.loads((out / "metrics.json").read_text())["frames"]
    labels = {"data_test", "copy_test"}
    assert len({f["key"] for f in frames}) == 6 and {f["store"] for f in frames} == labels
    assert {f["key"].split("/", 1)[1] for f in frames if f["store"] == "data_test"} == \
        {f["key"].split("/", 1)[1] for f in frames if f["store"] == "copy_test"}
    meshed = {f["key"] for f in frames if f["surface"] is not None}
    assert len(meshed) == 4 and {k.split("/")[0] for k in meshed} == labels
    files = sorted(p.name for p in (out / "meshes").glob("*.ply"))
    by_store = {label: [f for f in files if f.startswith(f"{label}_")] for label in labels}
    assert len(by_store["data_test"]) == len(by_store["copy_test"]) and len(files) in (0, 8)
    assert [f.removeprefix("data_") for f in by_store["data_test"]] == \
        [f.removeprefix("copy_") for f in by_store["copy_test"]]


def _variant(src, dst, edit):
    """A copy of store ``src`` whose skeleton attribute is ``edit(names, parents)``."""
    from hipnet.pipeline.store.zarrstore import open_group

    shutil.copytree(src, dst)
    group = open_group(dst, mode="r+")
    names, parents = list(group.attrs["skeleton"]["names"]), list(group.attrs["skeleton"]["parents"])
    edit(names, parents)
    group.attrs["skeleton"] = {"names": names, "parents": parents}
    return dst


def _swap(names, parents):
    names[1], names[2] = names[2], names[1]  # L_hip <-> R_hip: same tree, the hips' transforms exchanged


def _rename(names, parents):
    names[names.index("head")] = "skull"


def _reparent(names, parents):
    parents[names.index("L_collar")] = names.index("spine2")


@pytest.mark.parametrize("edit, says", [
    (_swap, "joint order differs from position 1: the checkpoint has L_hip, the store R_hip"),
    (_rename, "joint names differ: only the checkpoint has head; only the store has skull"),
    (_reparent, "parents differ: L_collar (checkpoint spine3, store spine2)"),
])
def test_incompatible_skeletons_are_refused_by_eval_fit_and_animate(tmp_path, tiny_run, edit, says):
    from hipnet.cli.apps import animate_main, fit_main
    from hipnet.model.train import load_checkpoint

    stores, run = tiny_run
    bad = _variant(stores["test"], tmp_path / "bad.zarr", edit)
    subject, sequence, _ = Store.open(bad).frame_key(0).split("/")
    ck = ["--checkpoint", str(run / "ckpt.pt"), "--resolution", "32", "--out", str(tmp_path / "out")]
    results = {
        "eval": _eval(run, "--shards", bad, "--out", tmp_path / "out"),
        "fit": CliRunner().invoke(fit_main, [*ck, "--store", str(bad), "--frame", "0", "--n-points", "100"]),
        "animate": CliRunner().invoke(animate_main, [*ck, "--subject", load_checkpoint(run / "ckpt.pt")["subjects"][0],
                                                     "--motion", f"{bad}:{subject}/{sequence}"]),
    }
    for command, r in results.items():
        assert r.exit_code == 1, (command, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and says in lines[0], (command, r.output)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_checkpoint_of_another_schema_version_is_refused(tmp_path, tiny_run):
    import torch

    from hipnet.cli.apps import fit_main
    from hipnet.model.train import load_checkpoint

    stores, run = tiny_run
    ck = load_checkpoint(run / "ckpt.pt")
    old = tmp_path / "old.pt"
    torch.save({**ck, "schema_version": 0}, old)
    results = [
        CliRunner().invoke(eval_main, ["--checkpoint", str(old), "--shards", str(stores["test"]), "--device", "cpu",
                                         "--out", str(tmp_path / "out")]),
        CliRunner().invoke(fit_main, ["--checkpoint", str(old), "--store", str(stores["test"]), "--out",
                                      str(tmp_path / "out")]),
    ]
    for r in results:
        assert r.exit_code == 1, r.output
        line = r.output.strip()
        assert "\n" not in line and str(stores["test"]) in line and str(old) in line, line
        assert f"store schema_version {SCHEMA_VERSION}" in line and "schema_version 0" in line, line
    assert not (tmp_path / "out").exists()


def test_per_joint_iou_averages_the_frames_where_the_joint_has_points():
    import warnings

    from hipnet.model.evaluate import Evaluation, FrameScore

    nan = float("nan")
    frames = [FrameScore(k, "s", "q", "test", f"test/s/q/{k}", 0.5, 0.4, joint) for k, joint in
              enumerate(([0.2, nan, nan], [0.6, 0.9, nan]))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a joint without points in any frame is NaN, without "Mean of empty slice"
        per_joint = Evaluation(frames).summary(["a", "b", "c"])["per_joint_near_iou"]
    assert per_joint["a"] == pytest.approx(0.4) and per_joint["b"] == pytest.approx(0.9)
    assert np.isnan(per_joint["c"])
