"""The reader protocol: a reader written here against ``Reader`` alone (a bending capsule, a 2-joint skeleton, frames
made in memory) goes through ``hipnet-data preprocess`` into valid, complete stores with no other edit than its
registry entry; the per-process cache is shared by the shard tasks of one reader and not by a reader built again."""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic import capsule

from hipnet.cli.data import main
from hipnet.pipeline import readers
from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.readers.base import Reader, ReaderInfo, SequenceInfo
from hipnet.pipeline.sources.manifest import SPLITS
from hipnet.pipeline.store.reading import Store
from hipnet.pipeline.store.schema import validate
from hipnet.pipeline.store.zarrstore import open_group

SEQUENCES = [{"subject": "tube", "name": "bend", "split": "train"}, {"subject": "tube", "name": "wave", "split": "test"}]
FRAMES = 5
KNEE = np.array([0.0, 0.85, 0.0])  # the child joint, halfway up the capsule


def bend(angle: float) -> np.ndarray:
    """Rotation (3, 3) by ``angle`` about +X."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


class BendingTube(Reader):
    """A 1.7 m capsule whose upper half turns about a knee at mid-height: joint 0 at the bottom, joint 1 the knee."""

    loads = 0  # subject builds in this process, for the cache test

    def __init__(self, root: Path, splits: Iterable[str] = SPLITS, manifest: str | Path | None = None,
                 body_models: Path | None = None, strict: bool = True) -> None:
        super().__init__(root, splits)
        self.all_sequences = SEQUENCES

    @property
    def dataset(self) -> str:
        return "tube"

    @property
    def name(self) -> str:
        return "tube"

    @property
    def skeleton(self) -> Skeleton:
        return Skeleton(("root", "knee"), (-1, 0))

    @property
    def info(self) -> ReaderInfo:
        return ReaderInfo(self.dataset, self.name, str(self.root), None, ("tube",),
                          tuple(SequenceInfo(s["subject"], s["name"], s["split"], FRAMES) for s in SEQUENCES),
                          FRAMES * len(SEQUENCES))

    def frame_refs(self) -> list[FrameRef]:
        return [FrameRef(s["subject"], s["name"], i, f"{self.root}/{s['name']}") for s in self.sequences()
                for i in range(FRAMES)]

    def subject(self, name: str) -> Subject:
        if name not in self._cache:
            type(self).loads += 1
            v, f, _ = capsule(24, 16)
            weights = np.eye(2)[(v[:, 1] > KNEE[1]).astype(int)]
            self._cache[name] = Subject(name, np.stack([np.zeros(3), KNEE]), f, v, weights)
        return self._cache[name]

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        for r in refs:
            subj = self.subject(r.subject)
            g = bend((0.15 if r.sequence == "bend" else -0.1) * r.index)
            upper = subj.skinning_weights[:, 1] > 0
            v = subj.rest_vertices.copy()
            v[upper] = (v[upper] - KNEE) @ g.T + KNEE
            jt = np.tile(np.eye(4), (2, 1, 1))
            jt[1, :3, :3], jt[:, :3, 3] = g, subj.rest_joints
            yield r, Frame(r.subject, r.sequence, r.index, v, subj.faces, jt, subj.rest_joints,
                           subj.skinning_weights)


def test_a_reader_written_against_the_protocol_preprocesses_into_valid_stores(tmp_path, monkeypatch):
    monkeypatch.setitem(readers.READERS, "tube", BendingTube)
    root = tmp_path / "raw"
    root.mkdir()
    out = tmp_path / "out"
    args = ["preprocess", "--dataset", "tube", "--root", str(root), "--out", str(out), "--points", "300",
            "--eval-points", "200", "--shard-frames", "2", "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for split in ("train", "test"):
        rep = validate(open_group(out / f"{split}.zarr"))
        assert rep.ok and rep.stats["frames"] == FRAMES, rep.problems
        store = Store.open(out / f"{split}.zarr")
        assert store.skeleton.names == ("root", "knee") and store.n_frames == FRAMES and store.n_shards == 3
        assert store.attrs["source"]["reader"] == "tube" and store.attrs["manifest_hash"] is None
        labels = store.read("surface/labels", 4)
        points = store.read("surface/points", 4)
        # geodesically nearest proxy: the bottom pole (root) for the bottom, the knee's surface vertex for the top
        assert (labels[points[:, 1] < 0.25] == 0).all() and (labels[points[:, 1] > 1.1] == 1).all()
    check = CliRunner().invoke(main, ["manifest", "check", "--dataset", "tube", "--root", str(root)])
    assert check.exit_code == 0 and "2 sequences, 10 frames selected" in check.output, check.output


def test_shard_tasks_of_one_reader_share_its_process_cache(tmp_path):
    reader = BendingTube(tmp_path)
    BendingTube.loads = 0
    for _ in range(2):  # what a worker process does with two shard tasks: unpickle the reader, load frames
        task_reader = pickle.loads(pickle.dumps(reader))
        assert [f.index for _, f in task_reader.load(reader.frame_refs()[:2])] == [0, 1]
    assert BendingTube.loads == 1
    assert task_reader.cache_key == reader.cache_key
    again = BendingTube(tmp_path)  # built anew (the files may have changed): its own cache
    assert again.cache_key != reader.cache_key
    next(iter(again))
    assert BendingTube.loads == 2


def test_registry_entries_open_readers_and_name_manifest_needs(tmp_path):
    for name, open_ in readers.READERS.items():
        assert callable(open_), name
    with pytest.raises(ValueError, match="needs a manifest"):
        readers.open_reader("amass", tmp_path)
    with pytest.raises(ValueError, match="not a manifest"):
        readers.READERS["anny"](tmp_path, manifest="amass_cmu")
