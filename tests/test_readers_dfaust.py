"""DFAUST registrations route on an hdf5 in the published layout ((6890, 3, T) per ``{sid}_{seq}``, shared
``faces``): joints from the SMPL J_regressor, rotations recovered close to the pose that made the meshes, the
registrations' frame (Y up, facing +Z, as SMPL) kept, route detection, manifest check, and a valid store."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from synthetic import write_dfaust_male_model

from hipnet.cli.data import main
from hipnet.pipeline.readers import open_reader
from hipnet.pipeline.readers.amass import AmassReader
from hipnet.pipeline.readers.dfaust import DfaustRegistrationsReader
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An SMPL v1.0 .pkl body model and registrations_m.hdf5 posed from it with known poses. The synthetic body's
    parts move rigidly (one-hot skinning weights) and its shape is the template's, so the rotations and the rest
    mesh have exact answers; real SMPL blending makes them estimates (module docstring of readers.dfaust)."""
    base = tmp_path_factory.mktemp("dfaust")
    model = write_dfaust_male_model(base)
    models = base / "models"
    rng = np.random.default_rng(5)
    betas = np.zeros(10)
    pose = np.zeros((3, 72))
    pose[:, 3:66] = rng.normal(scale=0.25, size=(3, 63))  # the first frame too: the rest mesh is unposed from it
    pose[2, :3] = [0.3, 1.0, -0.2]
    posed = model.pose(betas, pose)
    reg = posed.vertices  # registrations are in SMPL's own frame (Y up, facing +Z), like the posed model
    raw = base / "raw"
    raw.mkdir()
    with h5py.File(raw / "registrations_m.hdf5", "w") as f:
        f["50002_hips"] = reg.transpose(1, 2, 0)
        f["50002_knees"] = reg[:1].transpose(1, 2, 0)
        f["faces"] = model.faces
    m = base / "tiny_dfaust.yaml"
    m.write_text(yaml.safe_dump({
        "dataset": "tiny_dfaust", "reader": "dfaust", "registrations_rotation_x_deg": 90.0,
        "subjects": [{"name": "50002", "gender": "male"}],
        "sequences": [{"subject": "50002", "name": "hips", "split": "test"}],
        "expected": {"subjects": 1, "sequences": {"test": 1}}}))
    return {"models": models, "raw": raw, "manifest": str(m), "model": model, "betas": betas, "posed": posed}


def test_registrations_give_regressor_joints_and_recovered_rotations(setup):
    reader = open_reader(setup["manifest"], setup["raw"], body_models=setup["models"])
    assert isinstance(reader, DfaustRegistrationsReader)
    frames = list(reader)
    assert [f.index for f in frames] == [0, 1, 2]
    model, posed = setup["model"], setup["posed"]
    for k, f in enumerate(frames):
        np.testing.assert_allclose(f.vertices, posed.vertices[k], atol=1e-5)  # Y up stays Y up
        np.testing.assert_allclose(f.joint_transforms[:, :3, 3], (model.J_regressor @ posed.vertices[k])[:22],
                                   atol=1e-5)
        g_true = posed.joint_transforms[k, :22, :3, :3]
        cos = (np.trace(np.swapaxes(g_true, 1, 2) @ f.joint_transforms[:, :3, :3], axis1=1, axis2=2) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 0.5
    # the rest mesh unposed from the first frame is the subject's shaped template
    subject = reader.subject("50002")
    np.testing.assert_allclose(subject.rest_vertices, model.rest_vertices(setup["betas"]), atol=3e-3)
    np.testing.assert_allclose(subject.rest_joints, posed.rest_joints[:22], atol=3e-3)


def test_a_registration_standing_along_plus_y_comes_out_standing_along_plus_y(setup, tmp_path):
    """Literal coordinates, no constant of the reader: DFAUST registrations share SMPL's frame (FORMATS.md: 90
    degrees about x from AMASS's Z up, i.e. Y up; SMPL faces +Z with the body's left at +X). Frame 0 is the template
    standing along +Y facing +Z; frame 1 the same body turned a quarter about +Y to face +X. Both must come out
    so: the reader's registrations -> AMASS -> Y-up turns must cancel."""
    model = setup["model"]
    stand = model.v_template[model.keep]
    turn = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # +Z -> +X, +X -> -Z, about +Y
    raw = tmp_path / "raw"
    raw.mkdir()
    with h5py.File(raw / "registrations_m.hdf5", "w") as f:
        f["50002_stand"] = np.stack([stand, stand @ turn.T]).transpose(1, 2, 0)
        f["faces"] = model.faces
    m = tmp_path / "stand.yaml"
    m.write_text(yaml.safe_dump({"dataset": "stand", "reader": "dfaust", "registrations_rotation_x_deg": 90.0,
                                 "subjects": [{"name": "50002", "gender": "male"}],
                                 "sequences": [{"subject": "50002", "name": "stand", "split": "test"}]}))
    first, turned = list(open_reader(str(m), raw, body_models=setup["models"]))
    for frame, forward in ((first, [0.0, 0.0, 1.0]), (turned, [1.0, 0.0, 0.0])):
        joints = frame.joint_transforms[:, :3, 3]
        up = joints[15] - joints[0]  # pelvis -> head
        left = joints[1] - joints[2]  # right hip -> left hip
        np.testing.assert_allclose(up / np.linalg.norm(up), [0.0, 1.0, 0.0], atol=1e-6)
        np.testing.assert_allclose(np.cross(left / np.linalg.norm(left), up / np.linalg.norm(up)), forward, atol=1e-6)
    np.testing.assert_allclose(first.vertices, stand, atol=1e-6)
    np.testing.assert_allclose(first.joint_transforms[:, :3, :3], np.broadcast_to(np.eye(3), (22, 3, 3)), atol=1e-5)
    np.testing.assert_allclose(turned.joint_transforms[0, :3, :3], turn, atol=1e-5)


def test_a_fitting_error_becomes_that_frames_failure_naming_the_file(setup, monkeypatch):
    import hipnet.pipeline.readers.dfaust as dfaust

    reader = open_reader(setup["manifest"], setup["raw"], body_models=setup["models"])
    refs = reader.frame_refs()
    reader.subject("50002")  # the rest mesh is fitted before the failure is switched on

    def fail(*args):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(dfaust, "part_fits", fail)
    results = list(reader.load(refs))
    assert [r.key for r, _ in results] == [r.key for r in refs]
    assert all(str(e).startswith(r.source) and "SVD did not converge" in str(e) for r, e in results)


def test_frames_past_the_end_fail_in_place(setup):
    from hipnet.pipeline.core.frames import FrameRef

    reader = open_reader(setup["manifest"], setup["raw"], body_models=setup["models"])
    src = reader.frame_refs()[0].source
    refs = [FrameRef("50002", "hips", i, src) for i in (2, 5, 0, 2)]  # unsorted, repeated, one past the end
    results = list(reader.load(refs))
    assert [r.key for r, _ in results] == [r.key for r in refs]
    assert isinstance(results[1][1], ValueError) and "has 3 frames, frame 5 requested" in str(results[1][1])
    for k in (0, 2, 3):
        np.testing.assert_allclose(results[k][1].vertices, setup["posed"].vertices[refs[k].index], atol=1e-5)


def test_route_detection_and_manifest_check(setup, tmp_path):
    (tmp_path / "DFaust_67" / "50002").mkdir(parents=True)
    assert isinstance(open_reader(setup["manifest"], tmp_path, strict=False), AmassReader)
    m = yaml.safe_load(open(setup["manifest"]))
    m["sequences"].append({"subject": "50002", "name": "jumping_jacks", "split": "train"})
    path = tmp_path / "more.yaml"
    path.write_text(yaml.safe_dump(m))
    result = CliRunner().invoke(main, ["manifest", "check", "--dataset", str(path), "--root", str(setup["raw"])])
    assert result.exit_code == 1
    assert "sequence 50002_jumping_jacks" in result.output and "extra: 1" in result.output
    assert "50002_knees" in result.output and "sequences train: found 0, expected" not in result.output


def test_registration_frames_pass_through_the_pipeline(setup, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "preprocess", "--dataset", setup["manifest"], "--root", str(setup["raw"]), "--body-models",
        str(setup["models"]), "--out", str(out), "--points", "300", "--eval-points", "200",
        "--geodesics", "per-template", "--workers", "1"])
    assert result.exit_code == 0, result.output
    rep = validate(open_group(out / "test.zarr"))
    assert rep.ok and rep.stats["frames"] == 3, rep.problems
