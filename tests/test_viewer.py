"""hipnet-view: the scene of a frame (nodes, counts, positions), the colours (the static pictures' label palette,
occupancy, a monotone error map), one-frame reads, posing (identity edit, rotations move descendants only), the
sources' one-line problems, and the viewer wired to a real viser server on a tiny store and checkpoint (what it
draws, that a failing control is a message). The real-browser check is tests/test_viewer_browser.py."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import numpy as np
import pytest
import trimesh
from synthetic import BallsReader

from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.core.kinematics import axis_angle_to_matrix, forward_kinematics
from hipnet.pipeline.core.skeleton import SMPL22
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.store.reading import Store
from hipnet.viz.posing import edit_pose, local_rotations, rest_from_pose
from hipnet.viz.render import label_colors
from hipnet.viz.scene import (
    INSIDE,
    OUTSIDE,
    OVERLAP,
    FrameData,
    SceneOptions,
    SequenceIndex,
    error_colors,
    frame_facts,
    frame_scene,
    label_legend_html,
    label_point_colors,
    occupancy_colors,
    overlap_points,
    read_frame,
    read_log,
    surface_distance,
)
from hipnet.viz.sources import load_sources


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(float) @ np.array([0.2126, 0.7152, 0.0722])


def _random_pose(seed: int = 0):
    rng = np.random.default_rng(seed)
    rest = np.cumsum(rng.normal(0, 0.1, (22, 3)), axis=0)
    local = axis_angle_to_matrix(rng.normal(0, 0.4, (22, 3)))
    return forward_kinematics(local, rest, SMPL22.parents, translation=np.array([0.1, -0.2, 0.3])), rest


def _frame(n: int = 1000, seed: int = 0) -> FrameData:
    rng = np.random.default_rng(seed)
    jt, _ = _random_pose(seed)
    pts = rng.normal(size=(n, 3)).astype(np.float32)
    sphere = trimesh.creation.icosphere(2)
    occ = {"uniform": rng.random(500) < 0.3, "near": rng.random(400) < 0.5}
    return FrameData("adult07", "motion02", 5, 17, jt.astype(np.float32), pts,
                     pts / np.linalg.norm(pts, axis=1, keepdims=True), rng.integers(0, 22, n).astype(np.uint8),
                     np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces, np.int32),
                     {"uniform": rng.normal(size=(500, 3)).astype(np.float32),
                      "near": rng.normal(size=(400, 3)).astype(np.float32)}, occ, {"uniform": 4, "near": 27})


# ---------------------------------------------------------------------------------------------------- colours


def test_label_colours_are_the_palette_of_the_static_pictures():
    labels = np.array([0, 5, 21, 5, 12])
    rgb = label_point_colors(labels, 22)
    expected = np.round(np.asarray(label_colors(22))[labels, :3] * 255)
    np.testing.assert_array_equal(rgb, expected)
    assert rgb.dtype == np.uint8
    assert len({tuple(c) for c in label_point_colors(np.arange(22), 22)}) == 22  # every joint its own colour
    legend = label_legend_html(SMPL22.names, used=[5, 0])
    assert "pelvis" in legend and "R_knee" in legend and "L_hip" not in legend
    assert f"rgb({','.join(map(str, rgb[1]))})" in legend  # R_knee's swatch is its points' colour


def test_occupancy_colours_inside_outside_and_overlap():
    inside = np.array([True, False, True, False])
    overlap = np.array([False, False, True, False])
    rgb = occupancy_colors(inside, overlap)
    np.testing.assert_array_equal(rgb, [INSIDE, OUTSIDE, OVERLAP, OUTSIDE])
    np.testing.assert_array_equal(occupancy_colors(inside), [INSIDE, OUTSIDE, INSIDE, OUTSIDE])


def test_error_colours_grow_lighter_with_the_error_and_clip_at_the_scale():
    err = np.linspace(0, 0.02, 50)
    lum = _luminance(error_colors(err, 0.02))
    assert np.all(np.diff(lum) >= 0) and lum[-1] > lum[0] + 150  # monotone, dark to light
    np.testing.assert_array_equal(error_colors(np.array([0.02, 0.05, 1.0]), 0.02)[1:],
                                  error_colors(np.array([0.02, 0.02]), 0.02))
    with pytest.raises(ValueError, match="vmax"):
        error_colors(err, 0.0)


# ---------------------------------------------------------------------------------------------------- scenes


def test_frame_scene_draws_mesh_labelled_samples_skeleton_and_names():
    f = _frame()
    nodes = {n.name: n for n in frame_scene(f, SMPL22, SceneOptions())}
    assert set(nodes) == ({"/store/mesh", "/store/samples", "/store/skeleton/bones"}
                          | {f"/store/skeleton/names/{n}" for n in SMPL22.names})
    assert nodes["/store/mesh"].data["vertices"].shape == f.vertices.shape
    np.testing.assert_array_equal(nodes["/store/mesh"].data["faces"], f.faces)
    samples = nodes["/store/samples"].data
    assert samples["points"].shape == (1000, 3)
    np.testing.assert_array_equal(samples["colors"], label_point_colors(f.labels, 22))
    bones = nodes["/store/skeleton/bones"].data["points"]
    assert bones.shape == (21, 2, 3)
    pos = f.joint_transforms[:, :3, 3]
    np.testing.assert_allclose(bones[3], [pos[SMPL22.parents[4]], pos[4]])  # 4th bone: L_hip -> L_knee
    np.testing.assert_allclose(nodes["/store/skeleton/names/L_wrist"].data["position"], pos[20])


def test_frame_scene_options_normals_and_evaluation_points():
    f = _frame()
    off = frame_scene(f, SMPL22, SceneOptions(mesh=False, samples=False, skeleton=False))
    assert off == []
    nodes = {n.name: n for n in frame_scene(f, SMPL22, SceneOptions(samples=False, skeleton=False, normals=True,
                                                                     eval_set="uniform"))}
    normals = nodes["/store/normals"].data["points"]
    assert normals.shape == (100, 2, 3)  # every 10th of 1000 samples
    np.testing.assert_allclose(np.linalg.norm(normals[:, 1] - normals[:, 0], axis=1), 0.02, rtol=1e-3)
    ev = nodes["/store/eval/uniform"].data
    inside = f.eval_occupancy["uniform"]
    assert len(ev["points"]) == inside.sum()  # inside points only by default
    assert (ev["colors"] == INSIDE).all()
    overlap = np.zeros(500, bool)
    overlap[[0, 1, 2]] = True
    nodes = {n.name: n for n in frame_scene(f, SMPL22, SceneOptions(eval_set="uniform", outside=True),
                                            overlap={"uniform": overlap})}
    ev = nodes["/store/eval/uniform"].data
    assert len(ev["points"]) == 500
    assert (ev["colors"] == OVERLAP).all(axis=1).sum() == 3
    assert (ev["colors"] == OUTSIDE).all(axis=1).sum() == (~inside & ~overlap).sum()
    facts = frame_facts(f, {"uniform": 3})
    for text in ("adult07", "motion02", "**index** 5 (store frame 17)", "1,000", "**uniform disagreement** 4",
                 "inside 151 of 500" if inside.sum() == 151 else f"inside {inside.sum()} of 500",
                 "overlap points found 3", "**near disagreement** 27"):
        assert text in facts, (text, facts)


def test_overlap_points_are_the_points_inside_two_parts():
    a = trimesh.creation.icosphere(3, radius=0.3)
    b = trimesh.creation.icosphere(3, radius=0.3)
    b.apply_translation([0.4, 0, 0])
    v = np.concatenate([a.vertices, b.vertices])
    f = np.concatenate([a.faces, b.faces + len(a.vertices)])
    pts = np.array([[0.2, 0, 0], [-0.2, 0, 0], [0.6, 0, 0], [0.2, 0.5, 0], [0.18, 0.05, 0.02]])
    np.testing.assert_array_equal(overlap_points(v, f, pts), [True, False, False, False, True])


def test_surface_distance_to_a_sphere():
    s = trimesh.creation.icosphere(5, radius=0.5)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(200, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pts = 0.6 * d
    np.testing.assert_allclose(surface_distance(pts, s.vertices, s.faces), 0.1, atol=1e-3)
    near = surface_distance(pts, s.vertices, None)  # nearest vertex: never closer than the surface
    assert (near >= surface_distance(pts, s.vertices, s.faces) - 1e-6).all() and near.max() < 0.11


# ---------------------------------------------------------------------------------------------------- posing


def test_an_empty_edit_gives_the_start_pose_and_rest_joints_come_back():
    jt, rest = _random_pose()
    np.testing.assert_allclose(edit_pose(jt, SMPL22.parents, rest, np.zeros((22, 3))), jt, atol=1e-5)
    recovered = rest_from_pose(jt, SMPL22.parents)
    np.testing.assert_allclose(recovered - recovered[0], rest - rest[0], atol=1e-5)


def test_rotating_a_joint_moves_its_descendants_only_and_keeps_bone_lengths():
    jt, rest = _random_pose(1)
    extra = np.zeros((22, 3))
    extra[4] = [40.0, 0.0, 0.0]  # L_knee
    out = edit_pose(jt, SMPL22.parents, rest, extra)
    descendants = {4, 7, 10}  # L_knee, L_ankle, L_foot
    for j in range(22):
        if j in descendants - {4}:
            assert np.linalg.norm(out[j, :3, 3] - jt[j, :3, 3]) > 1e-3
        elif j not in descendants:
            np.testing.assert_allclose(out[j], jt[j], atol=1e-5)
    np.testing.assert_allclose(out[4, :3, 3], jt[4, :3, 3], atol=1e-5)  # a joint turns about itself
    bone = np.linalg.norm(out[7, :3, 3] - out[4, :3, 3])
    np.testing.assert_allclose(bone, np.linalg.norm(rest[7] - rest[4]), rtol=1e-5)
    c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    np.testing.assert_allclose(local_rotations(out, SMPL22.parents)[4], local_rotations(jt, SMPL22.parents)[4] @ rx,
                               atol=1e-5)


# ---------------------------------------------------------------------------------------------------- stores, runs


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    """(store path, run folder): the two balls with evaluation points and meshes, a tiny model trained 5 steps."""
    from hipnet.model.config import PRESETS
    from hipnet.model.train import train

    out = tmp_path_factory.mktemp("view")
    cfg = PreprocessConfig(surface_points=2000, eval_points=4000, geodesics="per-template", eval_on_train=True,
                           shard_frames=2)
    path = preprocess_split(BallsReader(), out, cfg, "train").store
    base = PRESETS["fast"]
    model = replace(base.model, hidden=16, layers=4, skip=2, pose_dim=4, pose_hidden=8, code_dim=4,
                    aggregator_hidden=8)
    tcfg = replace(base, model=model, points_per_frame=200, eikonal_per_frame=200, frames_per_step=2, steps=5,
                   lr=1e-2, loader_workers=0, checkpoint_every=1000, log_every=1)
    train([path], tcfg, out / "run", progress=False)
    return path, out / "run"


def test_read_frame_reads_that_frame_only(balls):
    store = Store.open(balls[0])
    calls = []
    read = store.read
    store.read = lambda name, frames=slice(None): calls.append((name, frames)) or read(name, frames)
    f = read_frame(store, 4, eval_points=True)
    assert all(frames == 4 for name, frames in calls if name != "mesh/faces"), calls
    assert (f.subject, f.sequence, f.index, f.frame) == ("large", "still", 1, 4)
    np.testing.assert_array_equal(f.points, read("surface/points", 4))
    np.testing.assert_array_equal(f.eval_occupancy["near"], read("eval/near_occupancy", 4))
    assert f.disagreements == {"uniform": int(read("eval/uniform_disagreements", 4)),
                               "near": int(read("eval/near_disagreements", 4))}
    assert not read_frame(store, 4).eval_points  # 2 x 4000 points only when asked


def test_sequence_index_orders_frames_in_time():
    index = SequenceIndex.build(np.array([1, 0, 1, 1]), np.array([0, 0, 0, 1]), np.array([2, 0, 1, 0]),
                                ["a", "b"], ["walk", "run"])
    assert index.frames == {("a", "walk"): [1], ("b", "run"): [3], ("b", "walk"): [2, 0]}
    assert index.subjects() == ["a", "b"] and index.sequences("b") == ["run", "walk"]
    assert index.locate(0) == ("b", "walk", 1)


def test_read_log_keeps_columns_and_names_a_bad_file(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,epoch,total,surface,points_per_s,wall_s\n25,0,0.5,0.1,900,1.0\n50,0,0.25,,950,2.0\n")
    log = read_log(p)
    np.testing.assert_array_equal(log["step"], [25, 50])
    assert np.isnan(log["surface"][1]) and log["total"][1] == 0.25
    (tmp_path / "bad.csv").write_text("just,some,words\n")
    with pytest.raises(ValueError, match="bad.csv: not a training log"):
        read_log(tmp_path / "bad.csv")


def test_bad_inputs_are_one_line_problems_naming_the_file(balls, tmp_path):
    import shutil

    broken = tmp_path / "broken.zarr"
    shutil.copytree(balls[0], broken)
    shutil.rmtree(broken / "surface" / "points" / "c" / "1")  # one shard file of a checked array gone
    empty = tmp_path / "emptyrun"
    empty.mkdir()
    (empty / "ckpt.pt").write_bytes(b"")
    (tmp_path / "other").mkdir()
    s = load_sources([tmp_path / "missing", tmp_path / "other", broken, empty, balls[0], balls[1]])
    assert len(s.stores) == 1 and [r.path for r in s.runs] == [empty, balls[1]]
    assert s.runs[0].model is None and s.runs[1].model is not None and "total" in s.runs[1].log
    assert len(s.problems) == 4 and all("\n" not in p for p in s.problems)
    missing, other, damaged, ckpt = s.problems
    assert "missing: no such file" in missing and "neither a store" in other
    assert str(broken) in damaged and "surface/points shard 1" in damaged
    assert "ckpt.pt: empty file" in ckpt


# ---------------------------------------------------------------------------------------------------- the page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_viewer_draws_a_store_frame_and_the_models_surfaces(balls, tmp_path):
    import viser

    from hipnet.viz.viewer import Viewer

    lines = []
    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    try:
        viewer = Viewer(server, load_sources([balls[0], balls[1]]), tmp_path, lines.append, coarse=24, fine=48)
        assert viewer.shown["/store"] == {"/store/mesh", "/store/samples", "/store/skeleton/bones",
                                          "/store/skeleton/names/pelvis", "/store/skeleton/names/top"}
        assert "**subject** large" in viewer.store.facts.content  # subjects sorted: large, small
        viewer.store.eval_set.value = "near"
        assert "/store/eval/near" in viewer.store.viewer.shown["/store"]
        viewer.store.subject.value = "small"
        assert "**subject** small" in viewer.store.facts.content
        viewer.store._advance()  # what play does each tick: the next frame, then back to the sequence's first
        assert "**index** 1" in viewer.store.facts.content
        viewer.store._advance()
        viewer.store._advance()
        assert "**index** 0" in viewer.store.facts.content and "**subject** small" in viewer.store.facts.content
        deadline = time.time() + 60
        while not viewer.worker.idle() or viewer.pose.surface is None:
            assert time.time() < deadline, "the surfaces were not extracted within a minute"
            time.sleep(0.2)
        assert "refined 48^3" in viewer.run.status.content and "step 5" in viewer.run.status.content
        assert "refined 48^3" in viewer.pose.status.content
        viewer.pose._export(None)
        assert len(list(tmp_path.glob("pose_*.ply"))) == 1
        viewer.guarded("a control")(lambda: 1 / 0)()  # a failing control: a message, the server goes on
        assert lines[-1].startswith("hipnet-view: a control: division by zero")
        assert "a control: division by zero" in viewer.message_box.content
    finally:
        server.stop()


def test_the_command_serves_whatever_opens_and_names_what_does_not(balls, tmp_path):
    from click.testing import CliRunner

    from hipnet.cli.view import main

    port = _free_port()
    result = CliRunner().invoke(main, [str(balls[0]), str(tmp_path / "nope.zarr"), "--port", str(port),
                                       "--seconds", "0.5", "--export-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "nope.zarr: no such file or folder" in result.output
    assert f"1 store(s), 0 run(s), 1 problem(s); open http://localhost:{port}/" in result.output
