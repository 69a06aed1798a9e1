"""A reader over the meshes of an existing store (section ``mesh``: evaluation splits, or training splits written
with ``--eval-on-train``): each row back in its source frame (``pose/world_from_canonical``), so a stage that needs
meshes (``pipeline.runner.depthstores``) can start from a store instead of the raw dataset. Frames are named by the store and
row; the subjects carry rest joints only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.readers.base import Reader, ReaderInfo, SequenceInfo
from hipnet.pipeline.readers.common import FRAME_ERRORS, frame_error
from hipnet.pipeline.store.schema import ATTR

ARRAYS = ("mesh/vertices", "mesh/faces", "pose/joint_transforms", "pose/world_from_canonical", "subject/rest_joints")


class MeshStoreReader(Reader):
    """The frames of a finished store with meshes, in store order (the reader protocol of ``readers.base``)."""

    def __init__(self, path: Path) -> None:
        from hipnet.pipeline.store.reading import Store
        from hipnet.pipeline.store.zarrstore import open_group

        path = Path(path)
        sections = open_group(path).attrs.get(ATTR.sections, [])
        if "mesh" not in sections:
            raise ValueError(f"{path}: the store holds no meshes (sections {', '.join(sections)}); write it with "
                             "`hipnet-data preprocess --eval-on-train` (or use an evaluation split), or start from the "
                             "raw dataset")
        store = Store.open(path, arrays=ARRAYS)
        super().__init__(path, (store.attrs[ATTR.split],))
        self._attrs = store.attrs
        self._keys = store.frame_keys()
        self._rows = {key: row for row, key in enumerate(self._keys)}
        self.all_sequences = [{"subject": k.split("/")[0], "name": k.split("/")[1], "split": self.splits[0]}
                              for k in dict.fromkeys(k.rsplit("/", 1)[0] for k in self._keys)]

    @property
    def dataset(self) -> str:
        return self._attrs[ATTR.dataset]

    @property
    def name(self) -> str:
        return "store"

    @property
    def skeleton(self) -> Skeleton:
        return Skeleton.from_attrs(self._attrs[ATTR.skeleton])

    @property
    def info(self) -> ReaderInfo:
        return ReaderInfo(self.dataset, self.name, str(self.root), self._attrs.get(ATTR.manifest_hash),
                          tuple(self._attrs[ATTR.subjects]),
                          tuple(SequenceInfo(s["subject"], s["name"], s["split"]) for s in self.all_sequences),
                          len(self._keys))

    def frame_refs(self) -> list[FrameRef]:
        refs = []
        for row, key in enumerate(self._keys):
            subject, sequence, index = key.split("/")
            refs.append(FrameRef(subject, sequence, int(index), f"{self.root} (row {row})"))
        return refs

    @property
    def _store(self):
        from hipnet.pipeline.store.reading import Store

        if "store" not in self._cache:
            self._cache["store"] = Store.open(self.root, arrays=ARRAYS)
        return self._cache["store"]

    def subject(self, name: str) -> Subject:
        subjects = list(self._attrs[ATTR.subjects])
        if name not in subjects:
            raise ValueError(f"{self.root}: no subject {name}")
        return Subject(name, self._store.read("subject/rest_joints", subjects.index(name)))

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        faces = None
        for ref in refs:
            try:
                if faces is None:
                    faces = self._store.read("mesh/faces")
                row = self._rows[ref.key]
                w = self._store.read("pose/world_from_canonical", row).astype(np.float64)
                r, t = w[:3, :3], w[:3, 3]
                jt = self._store.read("pose/joint_transforms", row).astype(np.float64)
                jt[:, :3, :3] = r @ jt[:, :3, :3]
                jt[:, :3, 3] = jt[:, :3, 3] @ r.T + t
                verts = self._store.read("mesh/vertices", row).astype(np.float64) @ r.T + t
                frame = Frame(ref.subject, ref.sequence, ref.index, verts, faces, jt,
                              self.subject(ref.subject).rest_joints)
            except FRAME_ERRORS as e:
                yield ref, frame_error(ref.source, e)
                continue
            yield ref, frame
