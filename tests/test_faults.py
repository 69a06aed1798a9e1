"""Fault injection through ``hipnet-data`` (click's CliRunner): each class of bad input is one case asserting the
exit code, a one-line message naming the file (and frame), no traceback, no finished frame lost and nothing
non-finite stored (``validate`` passes on what was written, or the store is incomplete). README "Reliability" lists
the classes and points here."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import trimesh
import yaml
from click.testing import CliRunner
from synthetic import (
    write_amass_body_models,
    write_amass_smplh,
    write_cape,
    write_dfaust,
    write_generic,
    write_registrations,
)

from hipnet.cli.data import main
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group

FAST = ["--points", "200", "--eval-points", "50", "--geodesics", "per-template", "--workers", "1",
        "--shard-frames", "2"]
MOTIONS = ("a", "b", "c")  # 3 frames each: 9 frames in 5 shards of 2


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None))), \
        (result.output, result.exception)
    return result


def one_line(result, *parts) -> str:
    """The output line naming all of ``parts`` (a one-line message), or fail."""
    for line in result.output.splitlines():
        if all(str(p) in line for p in parts):
            return line
    raise AssertionError(f"no line names {parts}:\n{result.output}")


def store_state(path):
    """(done mask, complete) of a store; what was written must validate but for completeness."""
    group = open_group(path)
    rep = validate(group)
    allowed = ("not done", "not marked complete")
    assert all(any(a in str(p) for a in allowed) for p in rep.problems), rep.problems
    return np.asarray(group["done"][:]), bool(group.attrs.get("complete"))


# ------------------------------------------------------------------------------------------------ AMASS


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_amass_body_models(tmp_path_factory.mktemp("bm"), kinds=("smplh",), genders=("female",))


def amass(tmp_path, **manifest):
    root = tmp_path / "raw"
    folder = root / "Transitions_mocap" / "mazen"
    rng = np.random.default_rng(0)
    betas = rng.normal(size=16)
    for name in MOTIONS:
        write_amass_smplh(folder / f"{name}_poses.npz", rng, frames=3, betas=betas)
    np.savez(folder / "shape.npz", betas=betas, gender=np.array("female"))
    m = tmp_path / "faults.yaml"
    m.write_text(yaml.safe_dump({"dataset": "faults", "reader": "amass", "subset": "Transitions",
                                 "subjects": [{"name": "mazen"}],
                                 "sequences": [{"subject": "mazen", "name": n, "split": "train"} for n in MOTIONS],
                                 **manifest}))
    return m, root, folder


def rewrite(path, **change):
    data = dict(np.load(path, allow_pickle=True))
    data.update(change)
    for key in [k for k, v in change.items() if v is None]:
        del data[key]
    np.savez(path, **data)


def nan_at(key, t, col=None):
    def corrupt(path):
        a = np.load(path)[key].astype(np.float64)
        a[t if col is None else (t, col)] = np.nan if key != "trans" else np.inf
        rewrite(path, **{key: a})
    return corrupt


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# (what, how to damage b_poses.npz, the words of the message, the failing frame or None for the whole file)
MOTION_FAULTS = [
    ("nan in poses", nan_at("poses", 1, 5), "poses has 1 NaN", 1),
    ("inf in trans", nan_at("trans", 2, 0), "trans has 1 inf", 2),
    ("nan in betas", nan_at("betas", 3), "betas has 1 NaN", None),
    ("truncated", truncate, "not a valid .npz (zip) file", None),
    ("not a zip", lambda p: p.write_bytes(b"\x93NUMPY garbage" * 10), "not a valid .npz (zip) file", None),
    ("zero bytes", lambda p: p.write_bytes(b""), "empty file (0 bytes)", None),
    ("no poses", lambda p: rewrite(p, poses=None), "no array 'poses'", None),
    ("pickled member", lambda p: rewrite(p, poses=np.array([{"x": 1}], dtype=object)),
     "member poses is a pickled object; refused", None),
    ("wrong dtype", lambda p: rewrite(p, poses=np.full((3, 156), "x")), "poses has dtype <U1, expected real numbers",
     None),
    ("wrong width", lambda p: rewrite(p, poses=np.zeros((3, 100))), "expected (T, 156) SMPL+H", None),
]


@pytest.mark.parametrize("what, damage, words, frame", MOTION_FAULTS, ids=[f[0] for f in MOTION_FAULTS])
def test_a_bad_motion_file_fails_alone_and_the_store_can_be_finished(tmp_path, models, what, damage, words, frame):
    m, root, folder = amass(tmp_path)
    bad = folder / "b_poses.npz"
    damage(bad)
    out = tmp_path / "out"
    args = ["preprocess", "--dataset", m, "--root", root, "--body-models", models, "--out", out, *FAST]
    result = run(*args)
    assert result.exit_code == 1
    line = one_line(result, bad, words)
    assert "allow_pickle" not in result.output
    if frame is not None:
        assert f"frame {frame}" in line and "mazen/b/" in line
    done, complete = store_state(out / "train.zarr")
    expect = 9 - (1 if frame is not None else 3) if what in ("nan in poses", "inf in trans", "nan in betas") else \
        (8 if frame is not None else 6)
    assert done.sum() == expect and not complete
    # the same command resumes (the frame list is kept, done frames stay done) and fails the same way
    again = run(*args)
    assert again.exit_code == 1 and str(bad) in again.output
    assert store_state(out / "train.zarr")[0].sum() == expect
    # one documented command finishes the store without what failed, recorded with its reason
    finished = run(*args, "--exclude-failed")
    assert finished.exit_code == 0, finished.output
    store = Store.open(out / "train.zarr")
    assert validate(store.group).ok and store.n_frames == expect
    assert all(str(bad) in e["reason"] for e in store.attrs["excluded"])
    assert run(*args).exit_code == 0  # a plain rerun honours the recorded exclusion


def test_one_run_names_every_bad_file_and_processes_every_good_one(tmp_path, models):
    m, root, folder = amass(tmp_path)
    truncate(folder / "a_poses.npz")
    nan_at("poses", 0, 3)(folder / "c_poses.npz")
    out = tmp_path / "out"
    result = run("preprocess", "--dataset", m, "--root", root, "--body-models", models, "--out", out, *FAST)
    assert result.exit_code == 1
    one_line(result, folder / "a_poses.npz", "not a valid .npz")
    one_line(result, folder / "c_poses.npz", "frame 0", "poses has 1 NaN")
    done, _ = store_state(out / "train.zarr")
    assert done.sum() == 3 + 2  # b, and c's frames 1 and 2
    # removing a bad file (or fixing it) does not make the store refuse the rerun
    (folder / "c_poses.npz").unlink()
    result = run("preprocess", "--dataset", m, "--root", root, "--body-models", models, "--out", out, *FAST)
    assert result.exit_code == 1 and "c_poses.npz" in result.output
    assert store_state(out / "train.zarr")[0].sum() == 5  # frames done before stay done


def test_a_selection_rule_that_leaves_nothing_is_an_error_naming_the_rule(tmp_path, models):
    m, root, _ = amass(tmp_path, subjects=[], sequences=[],
                       select={"subjects": {"min_sequences": 5}, "split": {"train_fraction": 0.5, "seed": 0}})
    result = run("preprocess", "--dataset", m, "--root", root, "--body-models", models, "--out", tmp_path / "o", *FAST)
    assert result.exit_code == 1 and "done in" in result.output
    one_line(result, "nothing to do", "subject mazen", "3 motion files, fewer than", "min_sequences 5")
    check = run("manifest", "check", "--dataset", m, "--root", root)
    assert check.exit_code == 1
    one_line(check, "no subjects found")
    one_line(check, "subject mazen", "min_sequences 5")


def test_manifest_check_reports_what_preprocess_would_hit_without_raising(tmp_path, models):
    m, root, folder = amass(tmp_path)
    rewrite(folder / "a_poses.npz", poses=np.array([{"x": 1}], dtype=object))
    nan_at("poses", 2, 7)(folder / "b_poses.npz")
    (folder / "c_poses.npz").write_bytes(b"")
    result = run("manifest", "check", "--dataset", m, "--root", root, "--body-models", models)
    assert result.exit_code == 1
    one_line(result, folder / "a_poses.npz", "member poses is a pickled object; refused")
    one_line(result, folder / "b_poses.npz", "frame 2", "poses has 1 NaN")
    one_line(result, folder / "c_poses.npz", "empty file (0 bytes)")


def test_a_stage_that_returns_nan_writes_nothing_for_that_frame(tmp_path, models, monkeypatch):
    import hipnet.pipeline.runner.frame as process

    real = process.sample_surface

    def poisoned(vertices, faces, n, rng):
        s = real(vertices, faces, n, rng)
        if poisoned.calls == 4:  # one frame's samples
            s.points[3] = np.nan
        poisoned.calls += 1
        return s

    poisoned.calls = 0
    monkeypatch.setattr(process, "sample_surface", poisoned)
    m, root, _ = amass(tmp_path)
    out = tmp_path / "out"
    result = run("preprocess", "--dataset", m, "--root", root, "--body-models", models, "--out", out, *FAST)
    assert result.exit_code == 1
    line = one_line(result, "failed: ", "stage output (not written)", "surface/points has 3 NaN", "1 frame failed")
    _, seq, index = line.split("first ")[1].rstrip(")").split("/")
    done, complete = store_state(out / "train.zarr")
    assert done.sum() == 8 and not done[3 * MOTIONS.index(seq) + int(index)] and not complete


# ------------------------------------------------------------------------------------------------ stores


@pytest.fixture
def finished(tmp_path, models):
    m, root, _ = amass(tmp_path)
    out = tmp_path / "out"
    args = ["preprocess", "--dataset", m, "--root", root, "--body-models", models, "--out", out, *FAST]
    assert run(*args).exit_code == 0
    return out / "train.zarr", args


def test_a_store_whose_done_and_complete_disagree_is_refused_then_repaired(finished):
    path, args = finished
    before = np.asarray(open_group(path)["surface/points"][:])
    open_group(path, mode="r+")["done"][3] = False
    result = run("validate", path)
    assert result.exit_code == 1
    one_line(result, "done frame 3", "not done")
    one_line(result, "marked complete but frames are missing")
    with pytest.raises(ValueError, match="marked complete but 1 frames are not done"):
        Store.open(path)
    assert run(*args).exit_code == 0
    assert run("validate", path).exit_code == 0
    np.testing.assert_array_equal(np.asarray(Store.open(path).read("surface/points")), before)


def test_a_deleted_shard_file_is_found_then_recomputed(finished):
    path, args = finished
    before = np.asarray(open_group(path)["surface/points"][:])
    (path / "surface" / "points" / "c" / "2" / "0" / "0").unlink()
    result = run("validate", path)
    assert result.exit_code == 1
    one_line(result, "surface/points shard 2 (frames 4-5) is missing")
    with pytest.raises(ValueError, match="shard 2 .frames 4-5. is missing"):
        Store.open(path)
    repaired = run(*args)
    assert repaired.exit_code == 0, repaired.output
    one_line(repaired, "surface/points shard 2", "recomputing")
    assert run("validate", path).exit_code == 0
    np.testing.assert_array_equal(np.asarray(Store.open(path).read("surface/points")), before)


# ------------------------------------------------------------------------------------------------ DFAUST


@pytest.fixture(scope="module")
def dfaust(tmp_path_factory):
    return write_dfaust(tmp_path_factory.mktemp("dfaust"))


def registrations(tmp_path, dfaust, verts):
    return write_registrations(tmp_path / "raw", verts, dfaust["faces"])


@pytest.mark.parametrize("frame", [0, 2])
def test_a_nan_registration_frame_fails_alone_with_its_reason(tmp_path, dfaust, frame):
    verts = dfaust["verts"].copy()
    verts[frame, 10, 1] = np.nan
    raw = registrations(tmp_path, dfaust, verts)
    out = tmp_path / "out"
    result = run("preprocess", "--dataset", dfaust["manifest"], "--root", raw, "--body-models", dfaust["models"],
                 "--out", out, *FAST)
    assert result.exit_code == 1 and "SVD" not in result.output
    one_line(result, raw / "registrations_m.hdf5", f"50002/hips/{frame}", f"frame {frame}", "vertices has 3 NaN")
    done, _ = store_state(out / "train.zarr")
    assert done.sum() == 3 and not done[frame]


@pytest.mark.parametrize("what, make, words", [
    ("fewer vertices", lambda d: d["verts"][:, :5000], "expected (6890, 3, T)"),
    ("not hdf5", None, "cannot open as hdf5"),
])
def test_a_registrations_file_that_does_not_fit_is_a_clear_error(tmp_path, dfaust, what, make, words):
    if make is None:
        raw = tmp_path / "raw"
        raw.mkdir()
        (raw / "registrations_m.hdf5").write_bytes(b"not hdf5" * 100)
    else:
        raw = registrations(tmp_path, dfaust, make(dfaust))
    for args in (["preprocess", "--out", tmp_path / "out", *FAST], ["manifest", "check"]):
        result = run(*args, "--dataset", dfaust["manifest"], "--root", raw, "--body-models", dfaust["models"])
        assert result.exit_code == 1
        one_line(result, raw / "registrations_m.hdf5", words)


# ------------------------------------------------------------------------------------------------ CAPE


@pytest.fixture(scope="module")
def cape(tmp_path_factory):
    return write_cape(tmp_path_factory.mktemp("cape"))


@pytest.mark.parametrize("what, damage, words", [
    ("not a zip", lambda p: p.write_bytes(b"PK garbage" * 30), "not a valid .npz (zip) file"),
    ("nan in v_posed", lambda p: rewrite(p, v_posed=np.where(np.arange(6890)[:, None] == 7, np.nan,
                                                             np.load(p)["v_posed"])), "v_posed has 3 NaN"),
])
def test_a_bad_cape_frame_is_named_in_our_words(tmp_path, cape, what, damage, words):
    root = tmp_path / "raw"
    shutil.copytree(cape["root"], root)
    bad = root / "cape_release" / "sequences" / "00032" / "shortlong_hips" / "shortlong_hips.000002.npz"
    damage(bad)
    result = run("preprocess", "--dataset", cape["manifest"], "--root", root, "--body-models", cape["models"],
                 "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 1 and "allow_pickle" not in result.output
    one_line(result, "00032/shortlong_hips/2", bad, words)
    done, _ = store_state(tmp_path / "out" / "train.zarr")
    assert done.tolist() == [True, False, True]


# ------------------------------------------------------------------------------------------------ generic format


def test_a_disconnected_rest_mesh_is_named_by_check_and_preprocess(tmp_path):
    root = write_generic(tmp_path / "raw")
    worm = dict(np.load(root / "subjects" / "worm.npz"))
    far = worm["rest_vertices"][:3] + 5.0
    worm["faces"] = np.concatenate([worm["faces"], len(worm["rest_vertices"]) + np.array([[0, 1, 2]])])
    worm["rest_vertices"] = np.concatenate([worm["rest_vertices"], far])
    worm["skinning_weights"] = np.concatenate([worm["skinning_weights"], worm["skinning_weights"][:3]])
    np.savez(root / "subjects" / "worm.npz", **worm)
    for ply in (root / "sequences").rglob("*.ply"):  # every frame carries the separate shell too
        mesh = trimesh.load(ply, process=False)
        trimesh.Trimesh(np.concatenate([mesh.vertices, far]), worm["faces"], process=False).export(ply)
    check = run("manifest", "check", "--dataset", "generic", "--root", root)
    assert check.exit_code == 1
    one_line(check, root / "subjects" / "worm.npz", "2 connected components")
    result = run("preprocess", "--dataset", "generic", "--root", root, "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 1 and not (tmp_path / "out" / "train.zarr").exists()
    # its subject fails alone: its sequences are named once with the file and why; nothing else to write here
    one_line(result, "failed: ", root / "subjects" / "worm.npz", "2 connected components", "worm/crawl, worm/curl")


def test_generic_nan_transforms_an_empty_mesh_and_a_duplicated_sequence(tmp_path):
    root = write_generic(tmp_path / "raw")
    skeleton = root / "sequences" / "worm" / "crawl" / "skeleton.npz"
    data = dict(np.load(skeleton))
    data["joint_transforms"][2, 1, 0, 3] = np.nan
    np.savez(skeleton, **data)
    empty = root / "sequences" / "worm" / "curl" / "meshes" / "0001.ply"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    result = run("preprocess", "--dataset", "generic", "--root", root, "--out", out, *FAST)
    assert result.exit_code == 1
    one_line(result, "failed: ", skeleton, "frame 2: joint_transforms has 1 NaN", "first worm/crawl/2")
    one_line(result, "worm/curl/1", empty)
    check = run("manifest", "check", "--dataset", "generic", "--root", root)
    one_line(check, skeleton, "frame 2", "joint_transforms has 1 NaN")
    assert store_state(out / "train.zarr")[0].sum() == 4
    meta = yaml.safe_load((root / "dataset.yaml").read_text())
    meta["sequences"].append(meta["sequences"][0])
    (root / "dataset.yaml").write_text(yaml.safe_dump(meta))
    twice = run("preprocess", "--dataset", "generic", "--root", root, "--out", tmp_path / "out2", *FAST)
    assert twice.exit_code == 1
    one_line(twice, "Error", root / "dataset.yaml", "sequence ('worm', 'crawl') is listed twice")


# ------------------------------------------------------------------------------------------------ readable output


class _RunsACommand:
    """A pickled member whose unpickling would run a command (it must never be unpickled)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


SEVEN = {  # the bad files of a real-looking AMASS folder, each with the words its entry must say
    "truncated": "not a valid .npz (zip) file",
    "noposes": "no array 'poses'",
    "width99": "expected (T, 156) SMPL+H",
    "nanframe": "frame 5: poses has 1 NaN",
    "notzip": "not a valid .npz (zip) file",
    "pickle": "member poses is a pickled object; refused",
    "objarray": "member poses is a pickled object; refused",
}


def seven_bad_files(tmp_path):
    root = tmp_path / "raw"
    folder = root / "Transitions_mocap" / "mazen"
    rng = np.random.default_rng(0)
    betas = rng.normal(size=16)
    names = ["good", *SEVEN]
    for name in names:
        write_amass_smplh(folder / f"{name}_poses.npz", rng, frames=24, betas=betas)
    np.savez(folder / "shape.npz", betas=betas, gender=np.array("female"))
    path = {n: folder / f"{n}_poses.npz" for n in names}
    truncate(path["truncated"])
    rewrite(path["noposes"], poses=None)
    rewrite(path["width99"], poses=np.zeros((24, 99)))
    nan_at("poses", 5, 3)(path["nanframe"])
    path["notzip"].write_bytes(b"not a zip file " * 50)
    rewrite(path["pickle"], poses=np.array([_RunsACommand(tmp_path / "RAN")], dtype=object))
    rewrite(path["objarray"], poses=np.array([[1.0, 2.0], [3.0]], dtype=object))
    m = tmp_path / "seven.yaml"
    m.write_text(yaml.safe_dump({"dataset": "seven", "reader": "amass", "subset": "Transitions",
                                 "subjects": [{"name": "mazen"}],
                                 "sequences": [{"subject": "mazen", "name": n, "split": "train"} for n in names]}))
    return m, root, path


def test_seven_bad_files_are_each_named_once_with_what_is_wrong(tmp_path, models):
    m, root, path = seven_bad_files(tmp_path)
    out = tmp_path / "out"
    args = ["preprocess", "--dataset", m, "--root", root, "--body-models", models, "--out", out, *FAST]
    for flags, verb, code in (([], "failed", 1), (["--exclude-failed"], "excluded", 0)):
        result = run(*args, *flags)
        assert result.exit_code == code, result.output
        lines = result.output.splitlines()
        for name, words in SEVEN.items():
            named = [line for line in lines if str(path[name]) in line]
            assert len(named) == 1 and words in named[0] and named[0].startswith(f"  {verb}: "), (name, named)
        assert not [line for line in lines if str(path["good"]) in line]
        assert "24 frames failed, first mazen/width99/0" in result.output
        assert "1 frame failed, first mazen/nanframe/5" in result.output
        summary = one_line(result, f"{verb}: 7 files, 25 frames and 5 sequences with nothing written")
        report = out / "train.failures.txt"
        assert str(report) in summary
        rows = report.read_text().splitlines()[1:]
        assert len(rows) == 30 and all(r.startswith(f"{verb}\tmazen/") for r in rows)
    assert not (tmp_path / "RAN").exists()  # the pickled member was never unpickled
    store = Store.open(out / "train.zarr")
    assert validate(store.group).ok and store.n_frames == 24 + 23  # good, and nanframe without its frame 5
    assert run(*args).exit_code == 0 and not (out / "train.failures.txt").exists()  # a clean rerun: no stale report


def test_a_subject_whose_shape_cannot_be_read_fails_alone(tmp_path, models):
    root = tmp_path / "raw"
    rng = np.random.default_rng(1)
    sequences = []
    for subject in ("mazen", "nogender"):
        folder = root / "Transitions_mocap" / subject
        betas = rng.normal(size=16)
        for name in MOTIONS:
            write_amass_smplh(folder / f"{name}_poses.npz", rng, frames=3, betas=betas)
            sequences.append({"subject": subject, "name": name, "split": "train"})
        shape = {"betas": betas} if subject == "nogender" else {"betas": betas, "gender": np.array("female")}
        np.savez(folder / "shape.npz", **shape)  # an exporter that leaves the gender out
    m = tmp_path / "two.yaml"
    m.write_text(yaml.safe_dump({"dataset": "two", "reader": "amass", "subset": "Transitions",
                                 "subjects": [{"name": "mazen"}, {"name": "nogender"}], "sequences": sequences}))
    out = tmp_path / "out"
    args = ["preprocess", "--dataset", m, "--root", root, "--body-models", models, "--out", out, *FAST]
    for _ in range(2):  # the rerun says the same, and keeps what was written
        result = run(*args)
        assert result.exit_code == 1
        line = one_line(result, "failed: ", root / "Transitions_mocap" / "nogender" / "shape.npz", "missing keys")
        assert "subject nogender's shape" in line and "nogender/a, nogender/b, nogender/c: nothing written" in line
        done, complete = store_state(out / "train.zarr")
        assert done.all() and len(done) == 9 and not complete  # every frame of the readable subject
    assert run(*args, "--exclude-failed").exit_code == 0
    store = Store.open(out / "train.zarr")
    assert store.subjects == ["mazen"] and store.n_frames == 9
    assert sorted(e["key"] for e in store.attrs["excluded"]) == ["nogender/a", "nogender/b", "nogender/c"]


def test_a_long_failure_list_is_cut_between_files_never_inside_one():
    from hipnet.pipeline.runner.failures import group_failures, summary_lines
    from hipnet.pipeline.runner.tasks import FrameFailure

    failures = [FrameFailure(f"s/m{k:02d}/{i}", f"/data/m{k:02d}.npz", f"/data/m{k:02d}.npz: frame {i}: poses has 1 NaN")
                for k in range(30) for i in range(100)]
    failures.append(FrameFailure("s/x", "", "/data/x.npz: not a valid .npz (zip) file"))
    groups = group_failures(failures)
    assert len(groups) == 31 and groups[0].reasons == ["poses has 1 NaN"] and groups[0].first == "frame 0: poses has 1 NaN"
    lines = summary_lines(failures, report=None, shown=5)
    assert len(lines) == 5 + 2 and all(line.count("/data/") == 1 for line in lines[:5])
    assert lines[5] == "  ... and 26 more files (2500 frames, 1 sequence)"
    assert lines[6] == "failed: 31 files, 3000 frames and 1 sequence with nothing written"
    assert "100 frames failed, first s/m00/0" in lines[0]


def test_validate_names_a_problem_once_however_many_shards_have_it():
    from hipnet.pipeline.store.validate import Problem, problem_lines

    problems = [Problem("surface/points", 2 * s, "contains NaN or inf (2 frames in this shard)") for s in range(40)]
    problems += [Problem("surface/labels", 3, "label >= 22 joints")]
    lines = problem_lines(problems)
    assert lines == ["surface/points frame 0: contains NaN or inf (2 frames in this shard) (and 39 more shards like it)",
                     "surface/labels frame 3: label >= 22 joints"]
