"""CAPE reader on a tree in the release layout (and the per-subject extracted one) with one corrupt frame:
``v_posed - transl``, joints of the minimal body posed independently, the corrupt frame counted and reported with its
path (never a crash, never silently dropped), exclusion through the manifest, manifest check, a valid store."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import trimesh
import yaml
from click.testing import CliRunner
from synthetic import write_amass_body_models

from hipnet.cli.data import main
from hipnet.pipeline.core.kinematics import axis_angle_to_matrix, forward_kinematics
from hipnet.pipeline.readers import open_reader
from hipnet.pipeline.sources.bodymodels import BodyModel
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group

SEQUENCES = {"00032": {"shortlong_hips": 3, "shortlong_pose_model": 2, "longshort_punching": 2},
             "00096": {"shirtshort_chicken_wings": 2}}
CORRUPT = "00032/shortlong_pose_model/shortlong_pose_model.000002.npz"


@pytest.fixture(scope="module")
def cape(tmp_path_factory):
    base = tmp_path_factory.mktemp("cape")
    models = write_amass_body_models(base / "models", kinds=("smpl",), genders=("male", "female"))
    model = BodyModel.load(models / "smpl" / "male" / "model.npz")
    root = base / "raw" / "cape_release"
    rng = np.random.default_rng(2)
    truth = {}
    for subject, seqs in SEQUENCES.items():
        betas = rng.normal(size=10)
        minimal = model.rest_vertices(betas)
        folder = root / "minimal_body_shape" / subject
        folder.mkdir(parents=True)
        if subject == "00032":
            np.save(folder / f"{subject}_minimal.npy", minimal)
        else:  # the release also has .ply minimal bodies
            trimesh.Trimesh(minimal, model.faces, process=False).export(folder / f"{subject}_minimal.ply")
        for seq, n in seqs.items():
            pose = rng.normal(scale=0.1, size=(n, 72))
            transl = rng.normal(size=(n, 3))
            posed = model.pose(betas, pose)
            for k in range(n):
                path = root / "sequences" / subject / seq / f"{seq}.{k + 1:06d}.npz"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, v_cano=minimal + 0.01, v_posed=posed.vertices[k] + transl[k], pose=pose[k],
                         transl=transl[k])
                truth[path.name] = (minimal, pose[k], transl[k], posed.vertices[k])
    (root / "misc").mkdir()
    np.save(root / "misc" / "smpl_tris.npy", model.faces)
    (root / "misc" / "subj_genders.pkl").write_bytes(pickle.dumps({"00032": "male", "00096": "female"}, protocol=2))
    bad = root / "sequences" / CORRUPT
    bad.write_bytes(bad.read_bytes()[:300])
    return {"root": base / "raw", "models": models, "model": model, "truth": truth}


def manifest(tmp_path, **extra) -> str:
    path = tmp_path / "tiny_cape.yaml"
    path.write_text(yaml.safe_dump({
        "dataset": "tiny_cape", "reader": "cape", "subjects": [{"name": s} for s in SEQUENCES], "sequences": [],
        "select": {"split": {"per": "subject-clothing", "train_fraction": 0.75, "seed": 0}},
        "expected": {"subjects": 2, "sequences_total": 4}, **extra}))
    return str(path)


def test_frames_are_v_posed_minus_transl_with_the_minimal_body_joints_posed(tmp_path, cape):
    reader = open_reader(manifest(tmp_path), cape["root"], body_models=cape["models"])
    splits = {(s["subject"], s["name"]): s["split"] for s in reader.all_sequences}
    # each sequence's split is drawn from its own name (seed 0 puts these two in test)
    assert sorted(k for k, v in splits.items() if v == "test") == [("00032", "shortlong_pose_model"),
                                                                   ("00096", "shirtshort_chicken_wings")]
    assert reader.genders() == {"00032": "male", "00096": "female"}
    model = cape["model"]
    results = list(reader.load(reader.frame_refs()))
    assert len(results) == 9
    errors = [(r, f) for r, f in results if isinstance(f, Exception)]
    assert len(errors) == 1 and errors[0][0].source.endswith(CORRUPT) and CORRUPT in str(errors[0][1])
    for ref, frame in results:
        if isinstance(frame, Exception):
            continue
        minimal, pose, transl, posed = cape["truth"][ref.source.rsplit("/", 1)[1]]
        np.testing.assert_allclose(frame.vertices, posed, atol=1e-5)  # (v_posed - transl)
        fk = forward_kinematics(axis_angle_to_matrix(pose.reshape(24, 3)), model.J_regressor @ minimal, model.parents)
        np.testing.assert_allclose(frame.joint_transforms, fk[:22], atol=1e-5)
        np.testing.assert_allclose(frame.rest_joints, (model.J_regressor @ minimal)[:22], atol=1e-5)


def test_per_subject_extracted_layout_reads_the_same_frames(tmp_path, cape):
    flat = tmp_path / "flat"
    release = cape["root"] / "cape_release"
    shutil.copytree(release / "misc", flat / "misc")
    for subject in SEQUENCES:
        shutil.copytree(release / "sequences" / subject, flat / subject)
        for p in (release / "minimal_body_shape" / subject).iterdir():
            shutil.copy(p, flat / subject / p.name)
    m = manifest(tmp_path)
    a = open_reader(m, cape["root"], ("train",), body_models=cape["models"])
    b = open_reader(m, flat, ("train",), body_models=cape["models"])
    assert [r.key for r in a.frame_refs()] == [r.key for r in b.frame_refs()]
    fa, fb = next(iter(a)), next(iter(b))
    np.testing.assert_array_equal(fa.vertices, fb.vertices)
    np.testing.assert_array_equal(fa.joint_transforms, fb.joint_transforms)


def _preprocess(m, cape, out):
    return CliRunner().invoke(main, [
        "preprocess", "--dataset", m, "--root", str(cape["root"]), "--body-models", str(cape["models"]),
        "--out", str(out), "--points", "300", "--eval-points", "200", "--geodesics", "per-template", "--workers", "1"])


def test_corrupt_frame_is_reported_then_excluded_through_the_manifest(tmp_path, cape):
    out = tmp_path / "out"
    result = _preprocess(manifest(tmp_path), cape, out)
    assert result.exit_code == 1
    assert "failed 1;" in result.output and CORRUPT in result.output and "cannot read as npz" in result.output
    assert "train.zarr: 5 frames" in result.output and "test.zarr: 4 frames" in result.output, result.output
    store = Store.open(out / "test.zarr", allow_incomplete=True)  # the other frames are written, not marked done
    assert int(store.read("done").sum()) == 3 and not store.attrs.get("complete")
    assert Store.open(out / "train.zarr").attrs["complete"]
    excluding = manifest(tmp_path, exclude_frames=[{"file": CORRUPT, "reason": "unreadable in the release"}])
    out2 = tmp_path / "out2"
    result = _preprocess(excluding, cape, out2)
    assert result.exit_code == 0, result.output
    assert "1 frames left out" in result.output and CORRUPT in result.output
    for split, n in (("train", 5), ("test", 3)):
        rep = validate(open_group(out2 / f"{split}.zarr"))
        assert rep.ok and rep.stats["frames"] == n, rep.problems


def test_manifest_check_reports_corrupt_and_missing(tmp_path, cape):
    m = manifest(tmp_path, frames={"fraction": 0.5, "seed": 0})
    args = ["manifest", "check", "--dataset", m, "--root", str(cape["root"]), "--body-models", str(cape["models"])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "corrupt: 1" in result.output and CORRUPT in result.output
    root = tmp_path / "raw"
    shutil.copytree(cape["root"], root)
    (root / "cape_release" / "sequences" / CORRUPT).unlink()
    shutil.rmtree(root / "cape_release" / "sequences" / "00032" / "longshort_punching")
    (root / "cape_release" / "minimal_body_shape" / "00096" / "00096_minimal.ply").unlink()
    result = CliRunner().invoke(main, args[:4] + ["--root", str(root)])
    assert result.exit_code == 1
    assert "minimal body of subject 00096" in result.output and "sequences: found 3, expected 4" in result.output
    assert "corrupt" not in result.output
    result = CliRunner().invoke(main, args[:4] + ["--root", str(root), "--body-models", str(cape["models"])])
    assert "subject 00096" in result.output


def test_manifest_check_counts_subject_clothing_combinations(tmp_path, cape):
    m = manifest(tmp_path, expected={"subjects": 2, "subject_clothing": 3})  # shortlong, longshort; shirtshort
    args = ["manifest", "check", "--dataset", m, "--no-read"]
    result = CliRunner().invoke(main, args + ["--root", str(cape["root"])])
    assert result.exit_code == 0 and "ok" in result.output, result.output
    root = tmp_path / "raw"
    shutil.copytree(cape["root"], root)
    shutil.rmtree(root / "cape_release" / "sequences" / "00032" / "longshort_punching")
    result = CliRunner().invoke(main, args + ["--root", str(root)])
    assert result.exit_code == 1 and "subject-clothing combinations: found 2, expected 3" in result.output


@pytest.mark.parametrize("bad, message", [
    (b"not an npy file", "cannot read the SMPL faces"),
    (np.zeros((4, 4), dtype=np.int64), r"faces have shape \(4, 4\)"),
    (np.array([[0, 1, 6890]]), r"face indices span \[0, 6890\], outside the 6890 vertices"),
])
def test_a_bad_smpl_tris_file_is_named_with_the_problem(tmp_path, cape, bad, message):
    root = tmp_path / "raw"
    shutil.copytree(cape["root"], root)
    tris = root / "cape_release" / "misc" / "smpl_tris.npy"
    if isinstance(bad, bytes):
        tris.write_bytes(bad)
    else:
        np.save(tris, bad)
    reader = open_reader(manifest(tmp_path), root, body_models=cape["models"])
    with pytest.raises(ValueError, match=f"{tris}: {message}"):
        reader.subject("00032")
