"""The reader protocol every dataset module implements, and helpers shared by readers.

A reader is built from a raw dataset folder and a tuple of splits, is picklable (it is sent to worker processes)
and offers:

- ``dataset`` (str) and ``skeleton`` (``Skeleton``);
- ``frame_refs() -> list[FrameRef]``: every frame of the chosen splits in a fixed order, without loading meshes;
- ``subject_names() -> list[str]`` and ``subject(name) -> Subject``: rest poses;
- ``load(refs) -> Iterator[(FrameRef, Frame | Exception)]``: exactly one result per ref, in the order given (the
  runner writes result k into row k and checks its key); a frame that cannot be read or posed comes back, in its
  place, as the exception (its message names the file and the problem), never silently dropped or moved.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby

from hipnet.pipeline.frames import FrameRef


class ReaderBase:
    """What every reader shares: ``sequences()`` = the entries of ``all_sequences`` in the chosen splits, and a
    per-process ``_cache`` that is not pickled to worker processes (each worker fills its own)."""

    splits: tuple[str, ...]
    all_sequences: list[dict]
    _cache: dict

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    def sequences(self) -> list[dict]:
        return [s for s in self.all_sequences if s["split"] in self.splits]


def group_by_source(refs: Iterable[FrameRef]) -> list[list[FrameRef]]:
    """Consecutive refs from the same file, so each file is read once per run of frames."""
    return [list(g) for _, g in groupby(refs, key=lambda r: r.source)]
