"""DFAUST raw-scan route on files in the published layout that the test writes: registrations_m.hdf5 as in
tests/test_readers_dfaust.py, and per-frame scans ``scans/<subject>/<seq>/<seq>.<frame>.ply`` made from the
registered meshes the way scanners break them: holes, a cut into two pieces, noise, a stray fragment. The frames
take the point-cloud path (instead of being refused as meshes without one shell), labelled piece by piece, with
normals that agree with the whole registered mesh's."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import trimesh
import yaml
from click.testing import CliRunner
from synthetic import write_dfaust_male_model

from hipnet.cli.data import main
from hipnet.pipeline.readers import open_reader
from hipnet.pipeline.readers.dfaust_scans import DfaustScansReader
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group

UPPER_BODY = [6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]  # spine2 and up (SMPL order)
LOWER_LEGS = [4, 5, 7, 8, 10, 11]  # knees, ankles, feet


def broken_scan(vertices: np.ndarray, faces: np.ndarray, rng: np.random.Generator) -> trimesh.Trimesh:
    """The registration as a raw scan: a band of faces removed across the body (two pieces), two holes, 0.5 mm noise
    on the vertices, and a stray fragment beside the body."""
    c = vertices[faces].mean(axis=1)
    keep = np.abs(c[:, 1] - 0.75) > 0.02  # cut through the hips: legs and torso apart
    keep &= np.linalg.norm(c - [0.0, 1.2, 0.13], axis=1) > 0.05  # a hole in the chest
    keep &= np.linalg.norm(c - [0.1, 0.4, 0.0], axis=1) > 0.04  # and one in a thigh
    scan = trimesh.Trimesh(vertices + rng.normal(scale=0.0005, size=vertices.shape), faces[keep], process=False)
    stray = trimesh.creation.icosphere(1, radius=0.02)
    stray.apply_translation([0.6, 1.0, 0.0])
    return trimesh.util.concatenate([scan, stray])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dfaust_scans")
    model = write_dfaust_male_model(base)
    models = base / "models"
    rng = np.random.default_rng(5)
    pose = np.zeros((3, 72))
    pose[:, 3:66] = rng.normal(scale=0.05, size=(3, 63))  # small: rigid parts of one capsule interpenetrate
    posed = model.pose(np.zeros(10), pose)
    raw = base / "raw"
    raw.mkdir()
    with h5py.File(raw / "registrations_m.hdf5", "w") as f:
        f["50002_hips"] = posed.vertices.transpose(1, 2, 0)
        f["faces"] = model.faces
    folder = raw / "scans" / "50002" / "hips"
    folder.mkdir(parents=True)
    for t in range(3):
        broken_scan(posed.vertices[t], model.faces, rng).export(folder / f"hips.{t:06d}.ply")
    manifests = {}
    for route in ("scans", "registrations"):
        m = base / f"{route}.yaml"
        m.write_text(yaml.safe_dump({
            "dataset": "tiny_dfaust", "reader": "dfaust", "route": route, "registrations_rotation_x_deg": 90.0,
            "subjects": [{"name": "50002", "gender": "male"}],
            "sequences": [{"subject": "50002", "name": "hips", "split": "train"}]}))
        manifests[route] = str(m)
    return {"models": models, "raw": raw, "manifests": manifests, "posed": posed, "scans": folder}


def test_scan_frames_are_observations_posed_by_the_registrations(setup):
    reader = open_reader(setup["manifests"]["scans"], setup["raw"], body_models=setup["models"])
    assert isinstance(reader, DfaustScansReader) and reader.observed
    assert reader.subject("50002").rest_vertices is None
    registrations = list(open_reader(setup["manifests"]["registrations"], setup["raw"], body_models=setup["models"]))
    for frame, reg in zip(reader, registrations, strict=True):
        assert frame.key == reg.key and len(frame.faces) < len(reg.faces)  # the scan, with its holes
        np.testing.assert_array_equal(frame.joint_transforms, reg.joint_transforms)
        scan = trimesh.load(setup["scans"] / f"hips.{frame.index:06d}.ply", process=False)
        np.testing.assert_allclose(frame.vertices, scan.vertices, atol=1e-6)  # the registrations' frame: Y up


def test_a_two_piece_scan_with_holes_is_processed_and_labelled_like_the_whole_body(setup, tmp_path):
    """The scans route processes the broken scans (no refusal for pieces or holes), with normals from the scans'
    winding (agreeing with the whole registered mesh's) and labels from the point-cloud path solved piece by piece:
    the legs' piece never takes an upper-body joint, the upper body never a knee, ankle or foot."""
    from scipy.spatial import cKDTree

    from hipnet.pipeline.runner.frame import frame_rng
    from hipnet.pipeline.stages.canonical import canonicalise
    from hipnet.pipeline.stages.pointcloud import observe_frame

    out = tmp_path / "scans"
    result = CliRunner().invoke(main, ["preprocess", "--dataset", setup["manifests"]["scans"], "--root",
                                       str(setup["raw"]), "--body-models", str(setup["models"]), "--out", str(out),
                                       "--points", "3000", "--workers", "1"])
    assert result.exit_code == 0, result.output
    scans = open_group(out / "train.zarr")
    rep = validate(scans)
    assert rep.ok and rep.stats["frames"] == 3, rep.problems
    assert scans.attrs["sections"] == ["train", "observed"]
    np.testing.assert_array_equal(scans["observed/normal_source"][:], 1)  # the scans' winding
    assert scans["observed/proxy_distance"][:].max() < 0.15
    reader = open_reader(setup["manifests"]["registrations"], setup["raw"], body_models=setup["models"])
    parents = reader.skeleton.parents
    for k, whole in enumerate(reader):
        canon = canonicalise(whole.vertices, whole.joint_transforms)
        ref = observe_frame(canon.vertices, whole.faces, None, canon.joint_transforms[:, :3, 3], parents, 3000,
                            frame_rng(0, "whole", whole.key))
        p, lab = scans["surface/points"][k], scans["surface/labels"][k]
        d, nb = cKDTree(ref.points).query(p)
        w = scans["pose/world_from_canonical"][k]
        world = p @ w[:3, :3].T + w[:3, 3]
        legs, upper = world[:, 1] < 0.5, world[:, 1] > 1.1  # well below the cut (at 0.75 m); well above it
        assert not np.isin(lab[legs], UPPER_BODY).any()  # the legs' piece is labelled from its own proxies
        assert not np.isin(lab[upper], LOWER_LEGS).any()
        assert len(np.unique(lab[legs])) >= 4 and len(np.unique(lab[upper])) >= 8
        # the synthetic body is one capsule with its 22 joints in a plane: which side a joint's nearest surface
        # point falls on is nearly a tie, so labels are compared where they are well posed, in coarse agreement
        agree = np.mean(lab[d < 0.02] == ref.labels[nb[d < 0.02]])
        assert agree > 0.5, (k, agree)
        cos = np.einsum("ni,ni->n", scans["surface/normals"][k].astype(np.float32)[d < 0.02], ref.normals[nb[d < 0.02]])
        assert np.mean(cos > 0.8) > 0.95  # outward, as the whole mesh's


def test_a_missing_or_unreadable_scan_fails_that_frame_naming_the_file(setup, tmp_path):
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(setup["raw"], raw)
    folder = raw / "scans" / "50002" / "hips"
    (folder / "hips.000001.ply").unlink()
    (folder / "hips.000002.ply").write_text("not a ply")
    result = CliRunner().invoke(main, ["preprocess", "--dataset", setup["manifests"]["scans"], "--root", str(raw),
                                       "--body-models", str(setup["models"]), "--out", str(tmp_path / "o"),
                                       "--points", "500", "--workers", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"failed: {folder / 'hips.000001.ply'}: " in result.output and "first 50002/hips/1)" in result.output
    assert f"failed: {folder / 'hips.000002.ply'}: cannot read" in result.output and "first 50002/hips/2)" in result.output
    check = CliRunner().invoke(main, ["manifest", "check", "--dataset", setup["manifests"]["scans"], "--root",
                                      str(raw), "--body-models", str(setup["models"])])
    assert check.exit_code == 1 and str(folder / "hips.000001.ply") in check.output, check.output
    assert "Traceback" not in check.output
