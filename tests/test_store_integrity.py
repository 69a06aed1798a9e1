"""Stores prove they are whole: the schema's names and tables, the shard index, and what ``Store.open`` and
``hipnet-data validate`` (full and ``--quick``) say about a wrong dtype, a deleted shard, a shard altered behind the
writer's back, a done mask that contradicts ``complete``, a complete store without its shard index, and a store of
schema version 1."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hipnet.cli.data import main
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.store.integrity import file_size
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import ATTR, HASH_GROUP, IDENTITY_ATTRS, ROOT_ATTRS, SPECS, markdown, shard_key
from hipnet.pipeline.store.schema import main as schema_main
from hipnet.pipeline.store.validate import validate_store
from hipnet.pipeline.store.zarrstore import open_group

PIPELINE_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "pipeline.md"


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_raw) -> Path:
    """The tiny held-out split (24 frames, with evaluation points and meshes) in shards of 5: 5 shards."""
    cfg = PreprocessConfig(surface_points=300, eval_points=200, shard_frames=5, geodesics="per-template")
    summary = preprocess_split(AnnyReader(tiny_raw, ("heldout",)), tmp_path_factory.mktemp("integrity"), cfg,
                               "heldout")
    assert summary.complete and summary.frames == 24
    return summary.store


@pytest.fixture
def store(written, tmp_path) -> Path:
    path = tmp_path / "heldout.zarr"
    shutil.copytree(written, path)
    return path


def _validate(path: Path, *flags: str):
    return CliRunner().invoke(main, ["validate", str(path), *flags])


def test_every_attribute_is_in_the_schema_and_the_readme_mirrors_it(written, capsys):
    names = {getattr(ATTR, f.name) for f in fields(ATTR)}
    assert names == {a.name for a in ROOT_ATTRS}
    assert set(IDENTITY_ATTRS) <= names
    assert set(open_group(written).attrs) <= names  # nothing written that the schema does not name
    schema_main(["--markdown"])
    table = capsys.readouterr().out
    assert table == markdown() and "| `surface/points` | float32 | (F, S, 3) | train |" in table
    assert table in PIPELINE_GUIDE.read_text(), \
        "docs/guides/pipeline.md's schema tables differ: paste `python -m hipnet.pipeline.store.schema --markdown`"


def test_the_shard_index_records_every_shard_file(written):
    store = Store.open(written)
    index = store.shard_index
    assert index["algorithm"].startswith("blake2b")
    assert "done" not in index["arrays"] and len(index["arrays"]["subject/rest_joints"]) == 1
    for name, entries in index["arrays"].items():
        assert len(entries) == (store.n_shards if SPECS[name].per_frame else 1), name
        for i, (size, digest) in enumerate(entries):
            assert size == file_size(written, name, i) and len(digest) == 32, (name, i)
    # the per-shard records (written by each task before its done slice) are what the index collects
    records = open_group(written)[HASH_GROUP]
    assert dict(records["2"].attrs)["arrays"]["surface/points"] == index["arrays"]["surface/points"][2]
    rep = validate_store(open_group(written))
    assert rep.ok and not rep.notes, rep.problems


def test_a_wrong_dtype_or_shape_is_refused_naming_the_array(store):
    g = open_group(store, mode="r+")
    normals = np.asarray(g["surface/normals"][:])
    g.create_array("surface/normals", shape=normals.shape, dtype="float32", chunks=(1, *normals.shape[1:]),
                   overwrite=True)[:] = normals.astype(np.float32)
    with pytest.raises(ValueError) as e:
        Store.open(store)
    assert str(e.value) == f"{store}: surface/normals has dtype float32, the schema says float16"
    assert Store.open(store, arrays=["surface/points"]).n_frames == 24  # only the arrays asked for are checked
    assert ("surface/normals", None) in {(p.array, p.frame) for p in validate_store(open_group(store)).problems}

    g.create_array("eval/near_labels", shape=(24, 199), dtype="uint8", chunks=(1, 199), overwrite=True)
    with pytest.raises(ValueError, match=r"eval/near_labels has shape \(24, 199\), expected \(24, 200\) "
                                         r"\(F x N with F=24, N=200\)"):
        Store.open(store, arrays=["eval/near_labels"])


def test_a_deleted_shard_file_is_named_with_its_frames(store):
    (store / shard_key(SPECS["surface/points"], 2)).unlink()
    where = "surface/points shard 2 (frames 10-14) is missing (surface/points/c/2/0/0)"
    full, quick = _validate(store), _validate(store, "--quick")
    assert full.exit_code == 1 and f"{store}: {where}" in full.stderr, full.output
    assert quick.exit_code == 1 and f"{store}: {where}" in quick.stderr, quick.output
    with pytest.raises(ValueError) as e:
        Store.open(store)
    assert str(e.value).startswith(f"{store}: {where}; the store is damaged")
    Store.open(store, arrays=["pose/joint_transforms"])  # a reader that never reads the shard is not refused


def test_an_altered_shard_of_the_same_size_fails_the_full_check_only(store):
    """Frames 5-9 of surface/points written back in reverse order through zarr: the shard file holds the same
    compressed chunks in another order, so its size is unchanged. ``--quick`` and ``Store.open`` check presence and
    sizes, so they pass; the full check hashes the content and names the shard."""
    g = open_group(store, mode="r+")
    before = file_size(store, "surface/points", 1)
    g["surface/points"][5:10] = np.asarray(g["surface/points"][5:10])[::-1]
    assert file_size(store, "surface/points", 1) == before
    quick = _validate(store, "--quick")
    assert quick.exit_code == 0 and "ok (24 frames, quick check)" in quick.output, quick.output
    full = _validate(store)
    assert full.exit_code == 1, full.output
    assert (f"{store}: surface/points shard 1 (frames 5-9) content differs from its hash in the shard index "
            "(altered) (surface/points/c/1/0/0)") in full.stderr
    Store.open(store)  # documented: same-size alterations are for `hipnet-data validate` to find

    g["surface/points"][0] = np.zeros_like(g["surface/points"][0])  # a smaller shard 0: every check finds it
    with pytest.raises(ValueError, match=r"surface/points shard 0 \(frames 0-4\) has \d+ bytes, the shard index "
                                         r"says \d+ \(altered or truncated\)"):
        Store.open(store)
    assert _validate(store, "--quick").exit_code == 1


def test_a_done_mask_that_contradicts_complete_is_refused(store):
    g = open_group(store, mode="r+")
    g["done"][7] = False
    with pytest.raises(ValueError) as e:
        Store.open(store)
    assert str(e.value).startswith(f"{store}: marked complete but 1 frames are not done (first: frame 7, shard 1, "
                                   "frames 5-9)")
    assert not validate_store(open_group(store), quick=True).ok


def test_a_complete_store_without_its_shard_index_or_hash_records_is_refused(store):
    """Schema version 2: a complete store always has its shard index and hash records; one without is damaged."""
    from hipnet.pipeline.store.integrity import collect_index

    g = open_group(store, mode="r+")
    del g.attrs[ATTR.shard_index]
    with pytest.raises(ValueError, match="marked complete but has no shard index"):
        Store.open(store)
    result = _validate(store)
    assert result.exit_code == 1 and "has no shard index (damaged)" in result.output, result.output
    del g[f"{HASH_GROUP}/1"]
    with pytest.raises(ValueError, match=r"shard 1 has no hash record \(hashes/1\)"):
        collect_index(g)


def test_a_version_1_store_is_refused_with_rerun_preprocess(store, tmp_path):
    """A store written with schema version 1 is refused by every reader and by a rerun into it, each saying how to
    rebuild it."""
    g = open_group(store, mode="r+")
    g.attrs[ATTR.schema_version] = 1
    with pytest.raises(ValueError, match=r"store schema version 1; this code reads version 2: rebuild it .*rerun "
                                         r"`hipnet-data preprocess`"):
        Store.open(store)
    result = _validate(store)
    assert result.exit_code == 1 and "schema_version is 1, this code reads 2: rebuild it" in result.output
    from hipnet.pipeline.store.zarrstore import check_identity

    with pytest.raises(FileExistsError, match="written with store schema version 1; this code writes version 2"):
        check_identity(store, dict(g.attrs), {**dict(g.attrs), ATTR.schema_version: 2})
