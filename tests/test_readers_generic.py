"""Generic reader: a three-joint creature written in the documented folder format, Z up and in centimetres, comes
back Y up in metres with the joint transforms of docs/architecture.md section 3, and goes through the pipeline into a valid
store that carries its own skeleton."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
import yaml
from click.testing import CliRunner
from synthetic import capsule

from hipnet.cli.data import main
from hipnet.pipeline.core.kinematics import axis_angle_to_matrix, forward_kinematics, linear_blend_skinning
from hipnet.pipeline.readers import open_reader
from hipnet.pipeline.sources.bodymodels import Z_UP_TO_Y_UP
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group

NAMES, PARENTS = ("base", "middle", "tip"), (-1, 0, 1)


@pytest.fixture(scope="module")
def creature(tmp_path_factory):
    root = tmp_path_factory.mktemp("generic")
    rng = np.random.default_rng(4)
    v, f, _ = capsule(16, 12, height=1.2, rx=0.15, rz=0.12)
    rest_joints = np.array([[0, 0.2, 0], [0, 0.6, 0], [0, 1.0, 0]])
    d = np.abs(v[:, 1:2] - rest_joints[None, :, 1])
    w = np.exp(-((d / 0.15) ** 2))
    w /= w.sum(1, keepdims=True)
    to_source = Z_UP_TO_Y_UP.T  # the files are Z up and in centimetres
    (root / "subjects").mkdir()
    np.savez(root / "subjects" / "worm.npz", rest_joints=100 * rest_joints @ to_source.T,
             rest_vertices=100 * v @ to_source.T, faces=f, skinning_weights=w)
    truth = {}
    for seq, ext in (("crawl", ".ply"), ("curl", ".obj")):
        local = axis_angle_to_matrix(rng.normal(scale=0.3, size=(3, 3, 3)))
        jt = forward_kinematics(local, rest_joints, PARENTS, translation=rng.normal(size=(3, 3)))
        verts = linear_blend_skinning(v, w, jt, rest_joints)
        src = jt.copy()
        src[..., :3, :3] = to_source @ jt[..., :3, :3] @ to_source.T
        src[..., :3, 3] = 100 * jt[..., :3, 3] @ to_source.T
        folder = root / "sequences" / "worm" / seq
        (folder / "meshes").mkdir(parents=True)
        np.savez(folder / "skeleton.npz", names=np.array(NAMES), parents=np.array(PARENTS), joint_transforms=src)
        for t in range(3):
            trimesh.Trimesh(100 * verts[t] @ to_source.T, f, process=False).export(folder / "meshes" / f"{t:04d}{ext}")
        truth[seq] = (verts, jt)
    (root / "dataset.yaml").write_text(yaml.safe_dump({
        "dataset": "worms", "up": "z", "scale": 0.01,
        "sequences": [{"subject": "worm", "name": "crawl", "split": "train"},
                      {"subject": "worm", "name": "curl", "split": "test"}]}))
    return root, truth, rest_joints


def test_generic_frames_come_back_y_up_in_metres(creature):
    root, truth, rest_joints = creature
    reader = open_reader("generic", root)
    assert reader.skeleton.names == NAMES and reader.skeleton.parents == PARENTS
    frames = list(reader)
    assert [(f.sequence, f.index) for f in frames] == [(s, i) for s in ("crawl", "curl") for i in range(3)]
    for f in frames:
        verts, jt = truth[f.sequence]
        np.testing.assert_allclose(f.vertices, verts[f.index], atol=1e-5)
        np.testing.assert_allclose(f.joint_transforms, jt[f.index], atol=1e-5)
        np.testing.assert_allclose(f.rest_joints, rest_joints, atol=1e-6)
    result = CliRunner().invoke(main, ["manifest", "check", "--dataset", "generic", "--root", str(root)])
    assert result.exit_code == 0 and "2 sequences, 6 frames selected" in result.output, result.output


def test_generic_frames_go_into_a_store_with_their_own_skeleton(creature, tmp_path):
    root, _, _ = creature
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["preprocess", "--dataset", "generic", "--root", str(root), "--out", str(out),
                                       "--points", "300", "--eval-points", "200", "--geodesics", "per-template",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    for split in ("train", "test"):
        group = open_group(out / f"{split}.zarr")
        rep = validate(group)
        assert rep.ok and rep.stats["frames"] == 3, rep.problems
        assert group.attrs["skeleton"] == {"names": list(NAMES), "parents": list(PARENTS)}
        assert group["pose/joint_transforms"].shape == (3, 3, 4, 4)


def test_a_mesh_of_another_topology_is_reported_with_its_path(creature, tmp_path):
    import shutil

    root, _, _ = creature
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    bad = copy / "sequences" / "worm" / "crawl" / "meshes" / "0001.ply"
    mesh = trimesh.load(bad, process=False)
    trimesh.Trimesh(mesh.vertices, mesh.faces[:-2], process=False).export(bad)
    reader = open_reader("generic", copy, ("train",))
    results = list(reader.load(reader.frame_refs()))
    errors = [f for _, f in results if isinstance(f, Exception)]
    assert len(errors) == 1 and "0001.ply: faces differ" in str(errors[0])


def test_obj_vertices_keep_the_file_order(tmp_path):
    """An OBJ whose corners carry different normals (``f v//vn``): trimesh's default splits and reorders vertices;
    the reader keeps the file's four vertices in order."""
    from hipnet.pipeline.readers.generic import read_mesh

    path = tmp_path / "tet.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nvn 0 0 1\nvn 1 0 0\n"
                    "f 4//1 2//2 3//1\nf 1//2 2//1 3//2\nf 1//1 4//2 2//1\nf 1//1 3//2 4//2\n")
    v, f = read_mesh(path)
    np.testing.assert_array_equal(v, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(f, [[3, 1, 2], [0, 1, 2], [0, 3, 1], [0, 2, 3]])


def test_manifest_check_lists_every_missing_file_and_refuses_stl(creature, tmp_path):
    import shutil

    root, _, _ = creature
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    crawl, curl = copy / "sequences" / "worm" / "crawl", copy / "sequences" / "worm" / "curl"
    (crawl / "skeleton.npz").unlink()  # the first sequence's: the reader must not need it to start
    (copy / "subjects" / "worm.npz").unlink()
    for p in sorted((curl / "meshes").iterdir()):
        mesh = trimesh.load(p, process=False, force="mesh")
        mesh.export(p.with_suffix(".stl"))
        p.unlink()
    result = CliRunner().invoke(main, ["manifest", "check", "--dataset", "generic", "--root", str(copy)])
    assert result.exit_code == 1 and "missing: 3" in result.output, result.output
    for missing in (crawl / "skeleton.npz", copy / "subjects" / "worm.npz", curl / "meshes"):
        assert str(missing) in result.output
    assert "3 .stl files: STL has no shared vertices" in result.output
    reader = open_reader("generic", copy, ("test",))
    listing = reader.list_frames()  # .stl meshes are not frames: the sequence fails alone, naming its folder
    assert listing.refs == [] and "no .ply/.obj/.off meshes" in str(listing.failures[0])
