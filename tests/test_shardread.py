"""Direct shard-file reads (``pipeline.store.shardread``) against zarr's own reads, the reference: real stores written by
the pipeline (lossless, with evaluation arrays and meshes, and quantised with ten chunks per frame), arrays with
unwritten shards and empty inner chunks, and a damaged shard index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import compressors
from hipnet.pipeline.store.shardread import layout, read_frames


def arrays(path: Path):
    group = zarr.open_group(path, mode="r")

    def walk(g, prefix=""):
        for key, node in g.members():
            if isinstance(node, zarr.Group):
                yield from walk(node, f"{prefix}{key}/")
            else:
                yield f"{prefix}{key}", node

    return list(walk(group))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_raw):
    """The tiny test split (24 frames, shards of 5: the last holds 4) lossless with evaluation arrays, and the
    train split quantised in chunks of 250 points (eight per frame)."""
    out = tmp_path_factory.mktemp("shardread")
    lossless = preprocess_split(AnnyReader(tiny_raw, ("test",)), out / "lossless",
                                PreprocessConfig(surface_points=2000, eval_points=500, shard_frames=5,
                                                 geodesics="per-template"), "test", workers=1)
    import hipnet.pipeline.store.schema as schema

    saved = schema.QUANTISED_CHUNK_POINTS
    schema.QUANTISED_CHUNK_POINTS = 250
    try:
        quantised = preprocess_split(AnnyReader(tiny_raw, ("train",)), out / "quantised",
                                     PreprocessConfig(surface_points=2000, shard_frames=8, geodesics="per-template",
                                                      quantise=True), "train", workers=1)
    finally:
        schema.QUANTISED_CHUNK_POINTS = saved
    return lossless.store, quantised.store


SELECTIONS = [(slice(None), slice(None)), (slice(3, 12), slice(None)), (slice(4, 6), slice(240, 760)),
              (slice(-4, None), slice(1999, 2000)), (slice(7, 8), slice(0, 1)), (slice(9, 9), slice(None))]


def test_every_frame_major_array_reads_as_zarr_reads_it(stores):
    for path in stores:
        read = 0
        for name, arr in arrays(path):
            if layout(path / name) is None:  # written once at creation (a single chunk): read through zarr
                assert arr.shards is None, name
                continue
            for frames, points in SELECTIONS:
                sel = (frames, points) if arr.ndim > 1 else frames
                got = read_frames(path / name, frames, points if arr.ndim > 1 else slice(None))
                want = arr[sel]
                assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), (name, sel)
            read += 1
        assert read >= 8
    assert Store.open(stores[1]).group["surface/labels"].chunks[1] == 250  # many chunks per frame were read


def test_store_reads_decode_the_same_values_through_either_path(stores, monkeypatch):
    """Store.read (which now takes the direct path, for a slice or one frame) against the same reads forced through
    zarr; a frame past the end still fails as zarr fails."""
    import hipnet.pipeline.store.reading as store_mod

    direct = []

    def counted(*args, **kwargs):
        out = read_frames(*args, **kwargs)
        direct.append(out is not None)
        return out

    monkeypatch.setattr(store_mod, "read_frames", counted)
    for path in stores:
        store = Store.open(path)
        names = ["surface/points", "surface/normals", "surface/labels", "pose/joint_transforms"]
        names += ["frame/subject"]
        fast = [(n, f, store.read(n, f)) for n in names for f in (slice(2, 11), 7, np.int64(0))]
        window = store.read_window(slice(0, 5), 1900, 300, ["surface/points", "surface/labels"])
        assert direct and all(direct)  # every one of these reads took the direct path
        monkeypatch.setattr(store_mod, "read_frames", lambda *a, **k: None)
        for n, f, got in fast:
            want = store.read(n, f)
            assert got.shape == want.shape and got.dtype == want.dtype and np.array_equal(got, want), (n, f)
        slow = store.read_window(slice(0, 5), 1900, 300, ["surface/points", "surface/labels"])
        assert all(np.array_equal(window[k], slow[k]) for k in window)
        monkeypatch.setattr(store_mod, "read_frames", counted)
        direct.clear()
        with pytest.raises(IndexError):
            store.read("surface/labels", store.n_frames)


def test_unwritten_shards_and_empty_chunks_read_as_the_fill_value(tmp_path):
    """An array in the store's layout where one shard was never written (no file) and another has inner chunks
    equal to the fill value (zarr leaves them out of the shard: empty index entries)."""
    group = zarr.open_group(tmp_path / "a.zarr", mode="w", zarr_format=3)
    arr = group.create_array("x", shape=(10, 40, 3), dtype="float32", chunks=(1, 10, 3), shards=(4, 40, 3),
                             compressors=compressors("float32"), fill_value=-1.5)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(10, 40, 3)).astype(np.float32)
    data[1, 10:20] = -1.5  # an inner chunk of fill values
    data[4:8] = -1.5  # the whole second shard: no file
    arr[:] = data
    assert not (tmp_path / "a.zarr" / "x" / "c" / "1" / "0" / "0").exists()
    for frames, points in [(slice(None), slice(None)), (slice(1, 2), slice(5, 25)), (slice(3, 9), slice(30, 40))]:
        assert np.array_equal(read_frames(tmp_path / "a.zarr" / "x", frames, points), data[frames, points])


def test_a_damaged_shard_index_is_refused_naming_the_file(tmp_path):
    group = zarr.open_group(tmp_path / "a.zarr", mode="w", zarr_format=3)
    arr = group.create_array("x", shape=(4, 20), dtype="uint8", chunks=(1, 10), shards=(4, 20),
                             compressors=compressors("uint8"), fill_value=0)
    arr[:] = np.arange(80, dtype=np.uint8).reshape(4, 20)
    shard = tmp_path / "a.zarr" / "x" / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # inside the index, before its checksum
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"c/0/0: the shard index fails its crc32c checksum"):
        read_frames(tmp_path / "a.zarr" / "x", slice(None))


def test_selections_it_does_not_handle_are_left_to_zarr(stores):
    path = stores[0] / "surface" / "labels"
    assert read_frames(path, slice(0, 10, 2)) is None
    assert read_frames(path, np.array([1, 2]), slice(None)) is None
    assert read_frames(path, slice(0, 3), slice(0, 10, 3)) is None
    assert read_frames(stores[0] / "no_such_array", slice(0, 3)) is None


def test_layouts_it_does_not_handle_are_left_to_zarr(tmp_path):
    """An encoded fill value (NaN) and a layout the pipeline never writes (chunks along the last axis) read through
    zarr; a rebuilt array in the same folder is read with its new layout."""
    group = zarr.open_group(tmp_path / "a.zarr", mode="w", zarr_format=3)
    blosc = compressors("float32")
    group.create_array("nan", shape=(4, 20), dtype="float32", chunks=(1, 10), shards=(4, 20), fill_value=np.nan,
                       compressors=blosc)
    group.create_array("last", shape=(4, 20, 4), dtype="float32", chunks=(1, 20, 2), shards=(4, 20, 4), fill_value=0,
                       compressors=blosc)
    assert layout(tmp_path / "a.zarr" / "nan") is None and layout(tmp_path / "a.zarr" / "last") is None
    first = group.create_array("x", shape=(4, 20), dtype="uint8", chunks=(1, 10), shards=(2, 20), fill_value=0,
                               compressors=compressors("uint8"))
    first[:] = 1
    assert layout(tmp_path / "a.zarr" / "x").shard == (2, 20)
    again = zarr.open_group(tmp_path / "a.zarr", mode="a").create_array(
        "x", shape=(6, 20), dtype="uint8", chunks=(1, 5), shards=(3, 20), fill_value=0, overwrite=True,
        compressors=compressors("uint8"))
    again[:] = 2
    assert layout(tmp_path / "a.zarr" / "x").shard == (3, 20)
    assert np.array_equal(read_frames(tmp_path / "a.zarr" / "x", slice(None)), np.full((6, 20), 2, np.uint8))
