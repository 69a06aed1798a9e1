"""Body models without chumpy: the restricted unpickler, convert-body-model, finding model files, and posing checked
against an independent computation with ``smplx.lbs`` and our own numpy forward kinematics."""

from __future__ import annotations

import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from synthetic import body_model_arrays, pickle_with_chumpy, smpl_pkl_bytes, write_amass_body_models

from hipnet.cli.data import main
from hipnet.pipeline.core.kinematics import axis_angle_to_matrix, forward_kinematics
from hipnet.pipeline.sources.bodymodels import BodyModel, find_body_model, merge_weights, read_model_arrays
from hipnet.pipeline.sources.safepickle import load_pickle


@pytest.fixture(scope="module")
def smplh_dir(tmp_path_factory):
    return write_amass_body_models(tmp_path_factory.mktemp("models"), kinds=("smplh",), genders=("female",))


def test_chumpy_pickle_reads_without_chumpy(tmp_path):
    import scipy.sparse

    assert importlib.util.find_spec("chumpy") is None
    blob, arrays = smpl_pkl_bytes()
    path = tmp_path / "basicModel_f_lbs_10_207_0_v1.0.0.pkl"
    path.write_bytes(blob)
    assert b"chumpy.ch" in blob and b"scipy.sparse" in blob
    data = load_pickle(path)
    for key in ("v_template", "shapedirs", "weights", "J"):  # chumpy arrays -> numpy
        assert isinstance(data[key], np.ndarray)
        np.testing.assert_array_equal(data[key], arrays[key], err_msg=key)
    assert isinstance(data["J_regressor"], np.ndarray)  # scipy sparse -> dense numpy
    np.testing.assert_array_equal(data["J_regressor"], arrays["J_regressor"])
    assert data["bs_type"] == "lrotmin"
    assert BodyModel.load(path).kind == "smpl"
    # protocol 0 (copyreg._reconstructor, _codecs.encode) and a CSR matrix
    small = {"x": np.arange(6.0).reshape(2, 3), "m": scipy.sparse.csr_matrix(np.eye(3)[:2])}
    (tmp_path / "p0.pkl").write_bytes(pickle_with_chumpy(lambda ch: {"x": ch(small["x"]), "m": small["m"]}, 0))
    data = load_pickle(tmp_path / "p0.pkl")
    np.testing.assert_array_equal(data["x"], small["x"])
    np.testing.assert_array_equal(data["m"], np.eye(3)[:2])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalCall:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_pickles_that_call_anything_else_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    for name, obj in [("system", {"v_template": _Evil(marker)}), ("eval", [_EvalCall()])]:
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(ValueError, match=r"refused to load global (posix|os|builtins|__builtin__)\.(system|eval)"):
            load_pickle(path)
    assert not marker.exists()
    # a chumpy expression (not a plain array) is refused as well
    blob = pickle.dumps(1, protocol=2).replace(b"K\x01", b"cchumpy.reordering\nSelect\n)\x81")
    (tmp_path / "expr.pkl").write_bytes(blob)
    with pytest.raises(ValueError, match="chumpy.reordering.Select"):
        load_pickle(tmp_path / "expr.pkl")


def test_convert_body_model_writes_a_clean_npz(tmp_path):
    blob, _ = smpl_pkl_bytes()
    src = tmp_path / "basicModel_m_lbs_10_207_0_v1.0.0.pkl"
    src.write_bytes(blob)
    dst = tmp_path / "smpl" / "SMPL_MALE.npz"
    result = CliRunner().invoke(main, ["convert-body-model", str(src), str(dst)])
    assert result.exit_code == 0, result.output
    assert "smpl model" in result.output
    with np.load(dst, allow_pickle=False) as z:  # readable without pickle
        assert sorted(z.files) == sorted(["v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                          "kintree_table", "f"])
    a, b = BodyModel.load(src), BodyModel.load(dst)
    np.testing.assert_array_equal(a.J_regressor, b.J_regressor)
    np.testing.assert_array_equal(a.posedirs, b.posedirs)
    bad = CliRunner().invoke(main, ["convert-body-model", str(src), str(tmp_path / "x.pkl")])
    assert bad.exit_code != 0 and "npz" in bad.output


def test_find_body_model_layouts(tmp_path, smplh_dir):
    assert find_body_model(smplh_dir, "smplh", "female") == smplh_dir / "smplh" / "female" / "model.npz"
    with pytest.raises(FileNotFoundError, match="male SMPLH"):
        find_body_model(smplh_dir, "smplh", "male")
    for name in ("smpl/SMPL_NEUTRAL.pkl", "basicmodel_m_lbs_10_207_0_v1.1.0.pkl", "smplx/SMPLX_FEMALE.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_body_model(tmp_path, "smpl", "neutral").name == "SMPL_NEUTRAL.pkl"
    assert find_body_model(tmp_path, "smpl", "male").name == "basicmodel_m_lbs_10_207_0_v1.1.0.pkl"
    assert find_body_model(tmp_path, "smplx", "female").name == "SMPLX_FEMALE.npz"
    with pytest.raises(ValueError, match="--body-models"):
        find_body_model(None, "smplh", "male")


def test_pose_equals_smplx_lbs_and_numpy_kinematics(smplh_dir):
    from smplx.lbs import lbs

    path = smplh_dir / "smplh" / "female" / "model.npz"
    model = BodyModel.load(path)
    raw = read_model_arrays(path)
    assert model.kind == "smplh" and model.num_joints == 52 and model.keep.all()
    rng = np.random.default_rng(1)
    betas = rng.normal(size=16)
    pose = rng.normal(scale=0.4, size=(3, 66))
    transl = rng.normal(size=(3, 3))
    posed = model.pose(betas, pose, transl)
    # independent: smplx.lbs.lbs on the raw file arrays with the full 52-joint pose (hands at rest)
    full = np.zeros((3, 156))
    full[:, :66] = pose
    verts, joints = lbs(
        torch.tensor(betas)[None].expand(3, -1), torch.tensor(full), torch.tensor(raw["v_template"]),
        torch.tensor(raw["shapedirs"]), torch.tensor(raw["posedirs"].reshape(-1, 459).T.astype(np.float64)),
        torch.tensor(raw["J_regressor"]), torch.tensor(model.parents), torch.tensor(raw["weights"]),
    )
    np.testing.assert_allclose(posed.vertices, verts.numpy() + transl[:, None], atol=1e-9)
    np.testing.assert_allclose(posed.joint_transforms[..., :3, 3], joints.numpy() + transl[:, None], atol=1e-9)
    # rotations: numpy forward kinematics of the axis-angles (another implementation)
    fk = forward_kinematics(axis_angle_to_matrix(full.reshape(3, 52, 3)), posed.rest_joints, model.parents, transl)
    np.testing.assert_allclose(posed.joint_transforms, fk, atol=1e-7)  # smplx's Rodrigues adds 1e-8 to the angle
    # the rest pose: identity rotations, rest joints
    rest = model.pose(betas, np.zeros((1, 66)))
    np.testing.assert_allclose(rest.joint_transforms[0, :, :3, :3], np.broadcast_to(np.eye(3), (52, 3, 3)))
    np.testing.assert_allclose(rest.vertices[0], model.rest_vertices(betas), atol=1e-12)


def test_pose_runs_the_kinematic_chain_once_and_returns_smplx_transforms(smplh_dir, monkeypatch):
    import smplx.lbs
    from smplx.lbs import batch_rigid_transform, batch_rodrigues

    path = smplh_dir / "smplh" / "female" / "model.npz"
    model, raw = BodyModel.load(path), read_model_arrays(path)
    rng = np.random.default_rng(2)
    betas, pose = rng.normal(size=16), rng.normal(scale=0.4, size=(4, 66))
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return batch_rigid_transform(*args, **kwargs)

    monkeypatch.setattr(smplx.lbs, "batch_rigid_transform", counted)
    monkeypatch.setattr(smplx.lbs, "lbs", None)  # the posing must not run smplx.lbs.lbs (a second chain) at all
    posed = model.pose(betas, pose)
    assert len(calls) == 1
    # independent: the rest joints from the raw file arrays, then smplx's batch_rigid_transform
    full = np.zeros((4, 156))
    full[:, :66] = pose
    rest = raw["J_regressor"] @ (raw["v_template"] + raw["shapedirs"] @ betas)
    rot = batch_rodrigues(torch.tensor(full).reshape(-1, 3)).view(4, 52, 3, 3)
    joints, a = batch_rigid_transform(rot, torch.tensor(rest)[None].expand(4, -1, -1), torch.tensor(model.parents),
                                      dtype=torch.float64)
    np.testing.assert_allclose(posed.joint_transforms[..., :3, :3], a[..., :3, :3].numpy(), atol=1e-12)
    np.testing.assert_allclose(posed.joint_transforms[..., :3, 3], joints.numpy(), atol=1e-12)
    np.testing.assert_allclose(posed.rest_joints, rest, atol=1e-12)


def test_all_sixteen_betas_change_the_mesh(smplh_dir):
    model = BodyModel.load(smplh_dir / "smplh" / "female" / "model.npz")
    betas = np.zeros(16)
    base = model.rest_vertices(betas)
    for k in (0, 9, 10, 15):  # 10..15 are the ones smplx drops unless num_betas=16
        b = betas.copy()
        b[k] = 2.0
        assert np.abs(model.rest_vertices(b) - base).max() > 1e-3, k
    with pytest.raises(ValueError, match="17 shape coefficients"):
        model.rest_vertices(np.zeros(17))


def test_smplx_model_kind_and_separate_eyeballs_dropped():
    a = body_model_arrays("smplx")
    model = BodyModel.from_arrays(a, "synthetic smplx")
    assert model.kind == "smplx" and model.num_shape == 300
    assert model.keep.sum() == len(a["v_template"]) - 12  # the two 6-vertex eyeball shells
    assert model.faces.max() == model.keep.sum() - 1
    posed = model.pose(np.zeros(16), np.zeros((1, 66)))
    assert posed.vertices.shape == (1, model.keep.sum(), 3)
    w = merge_weights(model.weights, model.parents, 22)
    np.testing.assert_allclose(w.sum(1), 1.0)
    bad = {**a, "posedirs": a["posedirs"][..., :100]}
    with pytest.raises(ValueError, match="posedirs"):
        BodyModel.from_arrays(bad, "bad")


def test_shape_and_pose_errors_name_the_model_file_and_the_amass_models(tmp_path):
    path = tmp_path / "smplh" / "SMPLH_FEMALE.npz"  # a 10-beta SMPL+H (MANO release) instead of AMASS's 16
    path.parent.mkdir()
    np.savez(path, **body_model_arrays("smplh", num_betas=10))
    model = BodyModel.load(path)
    with pytest.raises(ValueError, match=rf"{path}: 16 shape coefficients given but this smplh model has 10\. "
                                         r"AMASS motions need .* smplh/<gender>/model\.npz"):
        model.rest_vertices(np.zeros(16))
    with pytest.raises(ValueError, match=rf"{path}: pose must have shape \(N, 3K\) with K <= 52 joints of this smplh "
                                         r"model, got \(1, 165\)\. AMASS motions need .* smplh/<gender>/model\.npz"):
        model.pose(np.zeros(10), np.zeros((1, 165)))


def test_smplx_identity_count_is_stated_with_its_reason():
    v10 = BodyModel.from_arrays(body_model_arrays("smplx", num_betas=20), "SMPLX_MALE.npz (v1.0)")
    assert v10.num_shape == 10
    with pytest.raises(ValueError, match=r"SMPLX_MALE.npz \(v1.0\): 16 shape coefficients given but this smplx model "
                                         r"has 10 \(its 20 blend shapes were read as 10 identity \+ 10 expression, "
                                         r"the SMPL-X v1.0 layout \(10 \+ 10\), since fewer than 400"):
        v10.rest_vertices(np.zeros(16))
    assert BodyModel.from_arrays(body_model_arrays("smplx"), "v1.1").shape_note.startswith(
        "its 400 blend shapes were read as 300 identity + 100 expression")


def test_a_pickle_cannot_give_state_to_the_reconstructor(tmp_path):
    import hipnet.pipeline.sources.safepickle as safepickle

    head = b"\x80\x02ccopyreg\n_reconstructor\n"
    x_is_1 = b"}X\x01\x00\x00\x00xK\x01s"  # {"x": 1}
    for state in (x_is_1, b"N" + x_is_1 + b"\x86"):  # as __dict__ state, and as slot state (None, {"x": 1})
        path = tmp_path / "build.pkl"
        path.write_bytes(head + state + b"b.")
        with pytest.raises(ValueError, match=rf"{path}: .*refused: the pickle sets state on copyreg._reconstructor"):
            load_pickle(path)
        assert not hasattr(safepickle._reconstructor, "x")


def test_runaway_pickles_are_refused_naming_the_file(tmp_path, monkeypatch):
    from hipnet.pipeline.sources.safepickle import SafeUnpickler

    deep = tmp_path / "deep.pkl"
    deep.write_bytes(b"\x80\x02" + b"]" * 20_000 + b"a" * 19_999 + b".")  # lists nested 20,000 deep
    with pytest.raises(ValueError, match=rf"{deep}: cannot read as a safe pickle \(RecursionError"):
        load_pickle(deep)
    (tmp_path / "big.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=2))

    def exhausted(self):
        raise MemoryError()

    monkeypatch.setattr(SafeUnpickler, "load", exhausted)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'big.pkl'}: cannot read as a safe pickle \(MemoryError"):
        load_pickle(tmp_path / "big.pkl")
