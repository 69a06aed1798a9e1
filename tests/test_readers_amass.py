"""AMASS reader on files in the published layouts (synthetic values): frames against an independent smplx.lbs
computation, Z up to Y up, the 22 body joints only, layout by width, subset aliases, selection rules, the manifest
checker, and frames through the pipeline into a valid store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from synthetic import write_amass_body_models, write_amass_smplh, write_amass_smplx

from hipnet.cli.data import main
from hipnet.pipeline.core.kinematics import axis_angle_to_matrix, forward_kinematics
from hipnet.pipeline.readers import open_reader
from hipnet.pipeline.readers.amass import canonical_subset, motion_files, read_motion
from hipnet.pipeline.sources.bodymodels import Z_UP_TO_Y_UP, read_model_arrays
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_amass_body_models(tmp_path_factory.mktemp("bm"), kinds=("smplh",), genders=("female", "male"))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Transitions (as Transitions_mocap), DFaust (nested DFaust_67/DFaust_67), PosePrior (as MPI_Limits), CMU."""
    root = tmp_path_factory.mktemp("amass")
    rng = np.random.default_rng(0)
    subj = root / "Transitions_mocap" / "mazen_c3d"
    betas = rng.normal(size=16)
    for name in ("airkick_jog", "crouch_run", "jump_turn", "kick_walk", "sit_stand"):
        write_amass_smplh(subj / f"{name}_poses.npz", rng, frames=4, gender="female", betas=betas)
    np.savez(subj / "shape.npz", betas=betas, gender=np.array("female"))
    dfaust = root / "DFaust_67" / "DFaust_67" / "50002"
    dbetas = rng.normal(size=16)
    for name in ("chicken_wings", "hips"):
        write_amass_smplh(dfaust / f"50002_{name}_poses.npz", rng, frames=3, gender=np.array(b"male"), betas=dbetas)
    np.savez(dfaust / "shape.npz", betas=dbetas, gender=np.array(b"male"))
    write_amass_smplh(root / "MPI_Limits" / "03099" / "op2_poses.npz", rng, frames=3, gender="female")
    for s, n in (("01", 5), ("02", 2)):
        for k in range(n):
            write_amass_smplh(root / "CMU" / s / f"{s}_{k:02d}_poses.npz", rng, frames=40, gender="male")
    return root


def manifest(tmp_path, **m) -> str:
    path = tmp_path / f"{m['dataset']}.yaml"
    path.write_text(yaml.safe_dump({"reader": "amass", "subjects": [], "sequences": [], **m}))
    return str(path)


def transitions(tmp_path, **extra) -> str:
    return manifest(tmp_path, dataset="tiny_transitions", subset="Transitions",
                    subjects=[{"name": "mazen_c3d", "shape": "Transitions/mazen_c3d"}],
                    select={"split": {"train_fraction": 0.6, "seed": 0}}, **extra)


def test_frames_equal_an_independent_smplx_lbs_computation(tmp_path, raw, models):
    from smplx.lbs import lbs

    reader = open_reader(transitions(tmp_path), raw, body_models=models)
    refs = reader.frame_refs()
    assert len(refs) == 5 * 4 and reader.dataset == "tiny_transitions"
    ref = refs[6]
    (_, frame), = reader.load([ref])
    data = np.load(ref.source)
    a = read_model_arrays(models / "smplh" / "female" / "model.npz")
    full = np.zeros((1, 156))
    full[0, :66] = data["poses"][ref.index, :66]  # 22 body joints; hands at rest
    verts, joints = lbs(torch.tensor(data["betas"])[None], torch.tensor(full), torch.tensor(a["v_template"]),
                        torch.tensor(a["shapedirs"]), torch.tensor(a["posedirs"].reshape(-1, 459).T.astype(np.float64)),
                        torch.tensor(a["J_regressor"]), torch.tensor(np.r_[-1, a["kintree_table"][0, 1:]]),
                        torch.tensor(a["weights"]))
    t = data["trans"][ref.index]
    expect_v = (verts[0].numpy() + t) @ Z_UP_TO_Y_UP.T
    expect_j = (joints[0, :22].numpy() + t) @ Z_UP_TO_Y_UP.T
    np.testing.assert_allclose(frame.vertices, expect_v, atol=2e-6)
    np.testing.assert_allclose(frame.joint_transforms[:, :3, 3], expect_j, atol=2e-6)
    parents = np.r_[-1, a["kintree_table"][0, 1:22]]
    fk = forward_kinematics(axis_angle_to_matrix(full[0, :66].reshape(22, 3)), frame.rest_joints, parents)
    np.testing.assert_allclose(frame.joint_transforms[:, :3, :3], Z_UP_TO_Y_UP @ fk[:, :3, :3], atol=1e-6)
    assert frame.joint_transforms.shape == (22, 4, 4) and frame.skinning_weights.shape == (6890, 22)
    subj = reader.subject("mazen_c3d")
    np.testing.assert_allclose(subj.rest_joints, frame.rest_joints)
    assert subj.rest_vertices.shape == (6890, 3) and subj.faces.shape == (13776, 3)


def test_z_up_input_comes_out_y_up(tmp_path, raw, models):
    """A body standing in AMASS's Z-up frame (root turned +90 degrees about x, nothing else) stands along +Y."""
    root = tmp_path / "raw"
    poses = np.zeros((1, 156))
    poses[0, 0] = np.pi / 2
    path = root / "Transitions" / "s1" / "stand_poses.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, poses=poses, trans=np.zeros((1, 3)), betas=np.zeros(16), gender=np.array("male"),
             mocap_framerate=np.array(120.0))
    m = manifest(tmp_path, dataset="stand", subset="Transitions", subjects=[{"name": "s1"}],
                 select={"split": {"train_fraction": 1.0}})
    frame = next(iter(open_reader(m, root, body_models=models)))
    jt = frame.joint_transforms
    np.testing.assert_allclose(jt[0, :3, :3], np.eye(3), atol=1e-6)  # R_zy @ Rx(90) = identity
    up = jt[15, :3, 3] - jt[0, :3, 3]  # pelvis -> head
    assert up[1] > 0.5 and abs(up[0]) < 1e-6 and abs(up[2]) < 1e-6
    extent = frame.vertices.max(0) - frame.vertices.min(0)
    assert extent.argmax() == 1


def test_fingers_ignored_and_layout_read_from_the_width_of_poses(tmp_path, models):
    rng = np.random.default_rng(3)
    root = tmp_path / "raw"
    a = write_amass_smplh(root / "CMU" / "s1" / "a_poses.npz", rng, frames=2, gender="male")
    b = dict(a, poses=a["poses"].copy())
    b["poses"][:, 66:] = rng.normal(size=(2, 90))  # other finger rotations
    np.savez(root / "CMU" / "s1" / "b_poses.npz", **b)
    m = manifest(tmp_path, dataset="fingers", subset="CMU", subjects=[{"name": "s1"}],
                 select={"split": {"train_fraction": 1.0}})
    fa, fb = [f for f in open_reader(m, root, body_models=models)][::2]
    np.testing.assert_array_equal(fa.vertices, fb.vertices)
    np.testing.assert_array_equal(fa.joint_transforms, fb.joint_transforms)
    # SMPL-X content under an SMPL+H-style name is still SMPL-X; other widths are refused naming the file
    x = write_amass_smplx(root / "odd" / "c_poses.npz", rng)
    assert read_motion(root / "odd" / "c_poses.npz").layout == "smplx"
    np.testing.assert_array_equal(read_motion(root / "odd" / "c_poses.npz").poses, x["poses"][:, :66])
    write_amass_smplx(root / "odd" / "d_stageii.npz", rng)
    assert read_motion(root / "odd" / "d_stageii.npz").layout == "smplx"
    np.savez(root / "odd" / "e_poses.npz", poses=np.zeros((2, 72)), trans=np.zeros((2, 3)), betas=np.zeros(10),
             gender=np.array("male"))
    with pytest.raises(ValueError, match=r"e_poses.npz: poses has shape \(2, 72\)"):
        read_motion(root / "odd" / "e_poses.npz")
    np.savez(root / "odd" / "shape.npz", betas=np.zeros(16), gender=np.array("male"))
    np.savez(root / "odd" / "female_stagei.npz", betas=np.zeros(16))
    assert list(motion_files(root / "odd")) == ["c", "d", "e"]


def test_subset_aliases_and_motions_posed_on_another_subjects_body(tmp_path, raw, models):
    assert [canonical_subset(n) for n in ("MPI_Limits", "BioMotionLab_NTroje", "DFaust_67", "Transitions_mocap")] == [
        "PosePrior", "BMLrub", "DFaust", "Transitions"]
    m = manifest(tmp_path, dataset="oop", subset="DFaust", translation="zero",
                 subjects=[{"name": "50002", "shape": "DFaust/50002"}],
                 sequences=[{"subject": "50002", "name": "op2", "split": "test", "motion": "PosePrior/03099/op2"},
                            {"subject": "50002", "name": "hips", "split": "train",
                             "motion": "DFaust/50002/50002_hips"}])
    reader = open_reader(m, raw, body_models=models)
    sources = {r.sequence: r.source for r in reader.frame_refs()}
    assert "/MPI_Limits/03099/op2_poses.npz" in sources["op2"]
    assert "/DFaust_67/DFaust_67/50002/50002_hips_poses.npz" in sources["hips"]
    frames = list(reader)
    subject = reader.subject("50002")
    betas, gender, _, _ = reader.shape("50002")
    assert gender == "male"  # from shape.npz (stored as bytes)
    np.testing.assert_array_equal(betas, np.load(raw / "DFaust_67" / "DFaust_67" / "50002" / "shape.npz")["betas"])
    for f in frames:  # translation zeroed: the pelvis is where the rest pose puts it, only rotated
        np.testing.assert_allclose(f.joint_transforms[0, :3, 3], Z_UP_TO_Y_UP @ subject.rest_joints[0], atol=1e-5)


def test_selection_rules_are_deterministic(tmp_path, raw, models):
    m = manifest(tmp_path, dataset="cmu_small", subset="CMU",
                 select={"subjects": {"min_sequences": 5}, "split": {"train_fraction": 0.75, "seed": 0}},
                 frames={"fraction": 0.1, "seed": 0})
    reader = open_reader(m, raw, body_models=models)
    assert list(reader.subject_entries) == ["01"]  # "02" has 2 motions
    splits = [s["split"] for s in reader.all_sequences]
    assert splits.count("train") == 4 and splits.count("test") == 1
    refs = reader.frame_refs()
    assert len(refs) == 5 * 4  # 10% of 40 frames
    again = open_reader(m, raw, ("test",), body_models=models)
    assert [r.key for r in again.frame_refs()] == [r.key for r in refs if r.sequence in
                                                  {s["name"] for s in reader.all_sequences if s["split"] == "test"}]


def test_manifest_check_finds_missing_corrupt_and_extra_files(tmp_path, raw, models):
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(raw / "Transitions_mocap", root / "Transitions_mocap")
    m = transitions(tmp_path)
    args = ["manifest", "check", "--dataset", m, "--root", str(root), "--body-models", str(models)]
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0 and "ok" in ok.output and "20 frames selected" in ok.output, ok.output
    explicit = manifest(tmp_path, dataset="explicit", subset="Transitions", subjects=[{"name": "mazen_c3d"}],
                        sequences=[{"subject": "mazen_c3d", "name": n, "split": "train"}
                                   for n in ("airkick_jog", "crouch_run", "jump_turn")],
                        expected={"subjects": 1, "sequences": {"train": 3}})
    folder = root / "Transitions_mocap" / "mazen_c3d"
    (folder / "crouch_run_poses.npz").unlink()
    data = (folder / "jump_turn_poses.npz").read_bytes()
    (folder / "jump_turn_poses.npz").write_bytes(data[: len(data) // 2])
    result = CliRunner().invoke(main, ["manifest", "check", "--dataset", explicit, "--root", str(root)])
    assert result.exit_code == 1
    assert "missing: 1" in result.output and "crouch_run_poses.npz or crouch_run_stageii.npz" in result.output
    assert "corrupt: 1" in result.output and "jump_turn_poses.npz: cannot read" in result.output
    assert "extra: 2" in result.output and "kick_walk_poses.npz" in result.output


def test_frames_pass_through_the_pipeline_into_a_valid_store(tmp_path, raw, models):
    m = manifest(tmp_path, dataset="tiny_dfaust", subset="DFaust", translation="zero",
                 subjects=[{"name": "50002"}], motion="{shape}/{subject}_{name}",
                 sequences=[{"subject": "50002", "name": "hips", "split": "test"}], frames={"every": 2})
    out = tmp_path / "out"
    args = ["preprocess", "--dataset", m, "--root", str(raw), "--body-models", str(models), "--out", str(out),
            "--points", "300", "--eval-points", "200", "--geodesics", "per-template", "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rep = validate(open_group(out / "test.zarr"))
    assert rep.ok and rep.stats["frames"] == 2, rep.problems
    attrs = dict(open_group(out / "test.zarr").attrs)
    assert attrs["dataset"] == "tiny_dfaust" and attrs["source"]["reader"] == m
    missing = CliRunner().invoke(main, args[:5] + ["--out", str(tmp_path / "o2"), "--workers", "1"])
    assert missing.exit_code == 1 and "--body-models" in missing.output


def test_smplx_release_posed_with_an_smplx_model(tmp_path):
    """A ``*_stageii.npz`` motion (stagei fits skipped) through an SMPL-X model: 16 betas, separate eyeball shells
    dropped, vertices equal smplx.lbs on the raw model arrays."""
    from smplx.lbs import lbs

    models = write_amass_body_models(tmp_path / "bm", kinds=("smplx",), genders=("male",))
    rng = np.random.default_rng(7)
    folder = tmp_path / "raw" / "CMU" / "s1"
    data = write_amass_smplx(folder / "walk_stageii.npz", rng, frames=2, gender="male")
    np.savez(folder / "male_stagei.npz", betas=np.zeros(16), gender=np.array("male"))
    m = manifest(tmp_path, dataset="smplx_cmu", subset="CMU", subjects=[{"name": "s1"}],
                 select={"split": {"train_fraction": 1.0}})
    reader = open_reader(m, tmp_path / "raw", body_models=models)
    assert [s["name"] for s in reader.all_sequences] == ["walk"] and reader.shape("s1")[2] == "smplx"
    frame = list(reader)[1]
    a = read_model_arrays(models / "smplx" / "male" / "model.npz")
    full = np.zeros((1, 165))
    full[0, :66] = data["poses"][1, :66]
    verts, _ = lbs(torch.tensor(data["betas"])[None], torch.tensor(full), torch.tensor(a["v_template"]),
                   torch.tensor(a["shapedirs"][..., :16]),
                   torch.tensor(a["posedirs"].reshape(-1, 486).T.astype(np.float64)), torch.tensor(a["J_regressor"]),
                   torch.tensor(np.r_[-1, a["kintree_table"][0, 1:]]), torch.tensor(a["weights"]))
    body = len(a["v_template"]) - 12  # the eyeball shells come last in the synthetic model
    expect = (verts[0, :body].numpy() + data["trans"][1]) @ Z_UP_TO_Y_UP.T
    np.testing.assert_allclose(frame.vertices, expect, atol=2e-6)
    assert frame.faces.max() == body - 1


def _copy_transitions(raw, root):
    import shutil

    shutil.copytree(raw / "Transitions_mocap", root / "Transitions_mocap")
    return root / "Transitions_mocap" / "mazen_c3d"


def test_a_motion_shorter_than_its_refs_gives_errors_in_place_and_frames_in_their_rows(tmp_path, raw, models):
    """The refs are listed, then the motion file is cut to 2 of its 4 frames: frames 2 and 3 fail naming the file,
    frames 0 and 1 land in rows 0 and 1 (a reader that yields the failures first would shift them)."""
    from hipnet.pipeline.runner.tasks import _each_frame

    folder = _copy_transitions(raw, tmp_path / "raw")
    m = transitions(tmp_path)
    reader = open_reader(m, tmp_path / "raw", body_models=models)
    refs = [r for r in reader.frame_refs() if r.sequence in ("crouch_run", "jump_turn")]
    assert [r.index for r in refs] == [0, 1, 2, 3] * 2
    intact = dict(zip([r.key for r in refs], [f for _, f in reader.load(refs)], strict=True))
    path = folder / "crouch_run_poses.npz"
    data = dict(np.load(path))
    np.savez(path, **{k: v[:2] if k in ("poses", "trans", "dmpls") else v for k, v in data.items()})
    rows = {}
    done, failures = _each_frame(open_reader(m, tmp_path / "raw", body_models=models), refs, "per-frame",
                                 lambda k, frame, geom: rows.setdefault(k, frame))
    assert done.tolist() == [True, True, False, False, True, True, True, True]
    assert [f.key for f in failures] == ["mazen_c3d/crouch_run/2", "mazen_c3d/crouch_run/3"]
    assert all("crouch_run_poses.npz: has 2 frames, frame" in f.reason for f in failures)
    for k, frame in rows.items():
        assert frame.key == refs[k].key
        # float64 frames: posed in a batch of 2 here and of 4 before, BLAS may round the last bit differently
        np.testing.assert_allclose(frame.vertices, intact[refs[k].key].vertices, rtol=0, atol=1e-12)


class _ShuffledReader:
    """A broken reader: yields one failure per ref, but in reverse order (or drops the last ref)."""

    dataset = "broken"

    def __init__(self, drop: bool = False) -> None:
        self.drop = drop

    def load(self, refs):
        refs = list(refs)
        out = refs[:-1] if self.drop else refs[::-1]
        return ((r, ValueError(f"{r.source}: unreadable")) for r in out)


def test_each_frame_refuses_results_out_of_order():
    from hipnet.pipeline.core.frames import FrameRef
    from hipnet.pipeline.runner.tasks import _each_frame

    refs = [FrameRef("s", "walk", i, "walk.npz") for i in range(3)]
    with pytest.raises(RuntimeError, match=r"_ShuffledReader \(broken\) returned 's/walk/2' at position 0, where "
                                           r"'s/walk/0' was expected"):
        _each_frame(_ShuffledReader(), refs, "per-frame", lambda k, frame, geom: None)
    with pytest.raises(RuntimeError, match=r"_ShuffledReader \(broken\) returned 2 results for 3 refs; the first "
                                           r"without one is 's/walk/2'"):
        _each_frame(_ShuffledReader(drop=True), refs, "per-frame", lambda k, frame, geom: None)


def test_a_posing_error_becomes_that_frames_failure_naming_the_file(tmp_path, raw, models, monkeypatch):
    from hipnet.pipeline.sources.bodymodels import BodyModel

    reader = open_reader(transitions(tmp_path), raw, body_models=models)
    refs = [r for r in reader.frame_refs() if r.sequence == "sit_stand"]
    reader.subject("mazen_c3d")  # the rest pose is posed before the failure is switched on

    def fail(*args):
        raise RuntimeError("singular batch")

    monkeypatch.setattr(BodyModel, "pose", fail)
    results = list(reader.load(refs))
    assert [r.key for r, _ in results] == [r.key for r in refs]
    for ref, err in results:
        assert isinstance(err, ValueError) and str(err).startswith(ref.source)
        assert "RuntimeError: singular batch" in str(err)


def test_a_missing_or_extra_file_moves_no_other_sequence(tmp_path, models):
    rng = np.random.default_rng(11)
    folder = tmp_path / "raw" / "CMU" / "07"
    for k in range(12):
        write_amass_smplh(folder / f"07_{k:02d}_poses.npz", rng, frames=1, gender="male")
    m = manifest(tmp_path, dataset="cmu_split", subset="CMU", subjects=[{"name": "07"}],
                 select={"split": {"train_fraction": 0.5, "seed": 0}})

    def splits():
        return {s["name"]: s["split"] for s in open_reader(m, tmp_path / "raw", body_models=models).all_sequences}

    before = splits()
    assert set(before.values()) == {"train", "test"}
    for gone in (next(n for n, s in before.items() if s == "train"), next(n for n, s in before.items() if s == "test")):
        data = (folder / f"{gone}_poses.npz").read_bytes()
        (folder / f"{gone}_poses.npz").unlink()
        assert splits() == {n: s for n, s in before.items() if n != gone}
        (folder / f"{gone}_poses.npz").write_bytes(data)
    write_amass_smplh(folder / "07_99_poses.npz", rng, frames=1, gender="male")
    after = splits()
    assert {n: s for n, s in after.items() if n != "07_99"} == before


def test_preprocess_warns_when_counts_differ_from_the_manifest(tmp_path, raw):
    m = transitions(tmp_path, expected={"subjects": 1, "sequences_total": 6})
    result = CliRunner().invoke(main, ["preprocess", "--dataset", m, "--root", str(raw), "--out",
                                       str(tmp_path / "out"), "--workers", "1"])
    assert f"warning: manifest {m}:" in result.output and "sequences: found 5, expected 6" in result.output
    assert "subjects: found" not in result.output  # only what differs


def test_body_models_and_subjects_load_once_per_worker_process_across_shard_tasks(tmp_path, raw, models,
                                                                                monkeypatch):
    import pickle

    from hipnet.pipeline.readers import amass, base
    from hipnet.pipeline.runner import driver as run
    from hipnet.pipeline.runner import tasks as shards
    from hipnet.pipeline.runner.frame import PreprocessConfig, SubjectGeometry
    from hipnet.pipeline.sources.bodymodels import BodyModel

    counts = {"model files": 0, "subject shapes": 0, "subject geometries": 0}

    def counting(key, fn):
        def wrapped(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(BodyModel, "load", classmethod(counting("model files", BodyModel.load.__func__)))
    monkeypatch.setattr(amass, "read_shape", counting("subject shapes", amass.read_shape))
    monkeypatch.setattr(SubjectGeometry, "build", classmethod(counting("subject geometries",
                                                                        SubjectGeometry.build.__func__)))
    reader = open_reader(transitions(tmp_path), raw, ("train",), body_models=models)
    cfg = PreprocessConfig(surface_points=200, eval_points=100, shard_frames=4, geodesics="per-template")
    plan = run.prepare_store(reader, tmp_path / "out", cfg, "train")
    path, refs, sections = plan.path, plan.refs, plan.sections
    assert len(refs) == 12
    # a fresh worker process: nothing cached; then two shard tasks, each with its own unpickled copy of the reader
    monkeypatch.setattr(base, "_PROCESS_CACHES", type(base._PROCESS_CACHES)())
    monkeypatch.setattr(shards, "_GEOMETRY", type(shards._GEOMETRY)())
    counts.update(dict.fromkeys(counts, 0))
    for shard in (0, 1):
        task_reader = pickle.loads(pickle.dumps(reader))
        result = shards.preprocess_shard(task_reader, str(path), shard, refs[4 * shard:4 * shard + 4], cfg, sections)
        assert result.written == 4 and not result.failures
    assert counts == {"model files": 1, "subject shapes": 1, "subject geometries": 1}
