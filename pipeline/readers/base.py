"""The reader protocol every dataset module implements (``Reader``), its typed results and the per-process cache.

A reader is built from a raw dataset folder and a tuple of splits, is picklable (the runner sends it to worker
processes with every shard task) and offers what the runner (``pipeline.runner.driver``) and the CLI (``cli.data``) call:

- ``dataset``, ``name`` (what ``open_reader`` resolves again), ``root``, ``splits``, ``skeleton``;
- ``info -> ReaderInfo``: what the source describes (subjects, sequences, frame count, manifest hash);
- ``frame_refs() -> list[FrameRef]``: every frame of the chosen splits in a fixed order, without loading meshes;
- ``list_frames() -> Listing``: the same, sequence by sequence: a sequence whose file cannot be listed becomes a
  ``SequenceFailure`` naming the file, and the other sequences are listed (default: ``frame_refs()`` whole);
- ``dropped``: one line per subject or sequence a selection rule left out, with the rule (reported when a split
  has nothing to do and by ``manifest check``);
- ``subject_names() -> list[str]`` and ``subject(name) -> Subject``: rest poses;
- ``load(refs) -> Iterator[(FrameRef, Frame | Exception)]``: exactly one result per ref, in the order given (the
  runner writes result k into row k and checks its key); a frame that cannot be read or posed comes back, in its
  place, as the exception (its message names the file and the problem), never silently dropped or moved;
- ``sequences()``: the entries of ``all_sequences`` in the chosen splits;
- ``check(read_files) -> CheckReport``, ``count_mismatches()``, ``excluded_refs()``: what ``hipnet-data manifest
  check`` and ``preprocess`` report; the defaults say nothing is off;
- ``observed`` (frames are point clouds or raw scans, default False) and ``depth_sensor`` (default None).

Loaded data that is expensive to rebuild (body models, subjects' rest data) goes in ``self._cache``: a dict per
reader identity (``cache_key``) and per process, so every shard task a worker process runs for one reader shares it,
and a reader built anew (files may have changed) starts empty.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import ClassVar

from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.sources.manifest import SPLITS

# What listing one sequence may raise; it becomes that sequence's failure (the other sequences are listed).
LISTING_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError)
PROCESS_CACHE_READERS = 4  # readers whose caches a process keeps (a run uses one per split)


@dataclass
class CheckReport:
    """What ``hipnet-data manifest check`` found: files the manifest needs that are absent, files present that it
    does not use, files that cannot be read (with the reason), and counts against the manifest's ``expected``."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    counts: list[str] = field(default_factory=list)  # "sequences train: found 79, expected 80"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.counts)


@dataclass(frozen=True)
class SequenceFailure:
    """A sequence whose frames cannot be listed (its file is missing, truncated, not an archive ...); ``reason``
    names the file."""

    subject: str
    sequence: str
    reason: str

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.sequence}"

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


@dataclass
class Listing:
    """The frames of the chosen splits that could be listed, in order, and the sequences that could not."""

    refs: list[FrameRef]
    failures: list[SequenceFailure] = field(default_factory=list)


@dataclass(frozen=True)
class SequenceInfo:
    subject: str
    name: str
    split: str
    frames: int | None = None  # when the source records it without reading the sequence


@dataclass(frozen=True)
class ReaderInfo:
    """What a raw dataset describes, over all its splits (``Reader.info``)."""

    dataset: str
    name: str  # what ``open_reader`` resolves again: a reader name, a manifest name or a manifest YAML path
    root: str
    manifest_hash: str | None  # of the manifest the frames were chosen by (None for self-described folders)
    subjects: tuple[str, ...]  # every subject, in the source's order
    sequences: tuple[SequenceInfo, ...]  # every sequence, in the source's order
    frames: int | None = None  # frames of all splits, when the source records the count


@dataclass(frozen=True)
class ReaderKey:
    """A reader's identity for per-process caches: what it reads, and a token made when it was built (kept through
    pickling), so every copy sent to a worker shares one cache and a reader built again starts a new one."""

    kind: str  # module.class
    root: str
    source: str  # reader or manifest name
    body_models: str
    token: str


_PROCESS_CACHES: OrderedDict[ReaderKey, dict] = OrderedDict()


def process_cache(key: ReaderKey) -> dict:
    """This process's cache of the reader ``key`` (the last ``PROCESS_CACHE_READERS`` readers are kept)."""
    cache = _PROCESS_CACHES.get(key)
    if cache is None:
        cache = _PROCESS_CACHES[key] = {}
        while len(_PROCESS_CACHES) > PROCESS_CACHE_READERS:
            _PROCESS_CACHES.popitem(last=False)
    _PROCESS_CACHES.move_to_end(key)
    return cache


def check_splits(splits: Iterable[str]) -> tuple[str, ...]:
    splits = tuple(splits)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; choose from {SPLITS}")
    return splits


class Reader(ABC):
    """The reader protocol (module docstring). Subclasses call ``super().__init__(root, splits)`` first and
    implement the abstract members; ``all_sequences`` entries are dicts with at least ``subject``, ``name`` and
    ``split``."""

    needs_body_models: ClassVar[bool] = False  # subjects are posed through the user's SMPL-family files
    all_sequences: list[dict]

    def __init__(self, root: Path, splits: Iterable[str] = SPLITS) -> None:
        self.root = Path(root)
        self.splits = check_splits(splits)
        self._token = uuid.uuid4().hex
        self.dropped: list[str] = []  # what a selection rule left out, one line each with the rule

    # ------------------------------------------------------------------------------------ what it reads

    @property
    @abstractmethod
    def dataset(self) -> str: ...

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def skeleton(self) -> Skeleton: ...

    @property
    @abstractmethod
    def info(self) -> ReaderInfo: ...

    @property
    def body_models(self) -> Path | None:
        return None

    @property
    def observed(self) -> bool:
        """Whether the frames are observations (point clouds, raw scans, depth images) of no fixed topology: their
        subjects have no rest mesh, labels come from the point-cloud path with per-frame proxies, and the stores get
        the ``observed`` section instead of evaluation points and meshes."""
        return False

    @property
    def depth_sensor(self) -> dict | None:
        """The sensor a reader of rendered depth frames uses (``pipeline.runner.depthstores``), recorded in the store's
        identity; None for every other reader."""
        return None

    @property
    def cache_key(self) -> ReaderKey:
        return ReaderKey(f"{type(self).__module__}.{type(self).__qualname__}", str(self.root), self.name,
                         str(self.body_models or ""), self._token)

    @property
    def _cache(self) -> dict:
        return process_cache(self.cache_key)

    # ------------------------------------------------------------------------------------ frames and subjects

    @abstractmethod
    def frame_refs(self) -> list[FrameRef]: ...

    def list_frames(self) -> Listing:
        """Every frame of the chosen splits; readers whose sequences live in separate files override it so that
        one unreadable file fails its own sequence only (``sequence_listing``)."""
        return Listing(self.frame_refs())

    def sequence_listing(self, refs_of) -> Listing:
        """``refs_of(seq)`` for each sequence of the chosen splits; what it raises becomes that sequence's
        failure."""
        listing = Listing([])
        for seq in self.sequences():
            try:
                listing.refs += refs_of(seq)
            except LISTING_ERRORS as e:
                listing.failures.append(SequenceFailure(str(seq["subject"]), str(seq["name"]), str(e)))
        return listing

    def listed_refs(self) -> list[FrameRef]:
        """``list_frames().refs``, raising the first failure (for callers that need every frame)."""
        listing = self.list_frames()
        if listing.failures:
            more = f" (and {len(listing.failures) - 1} more sequences)" if len(listing.failures) > 1 else ""
            raise ValueError(f"{listing.failures[0]}{more}")
        return listing.refs

    def why_empty(self, split: str) -> str:
        """Why the chosen ``split`` has no sequences: the selection rules' drops and where the sequences went."""
        counts = {s: sum(q["split"] == s for q in self.all_sequences) for s in SPLITS}
        where = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none at all"
        why = f"no sequences in split {split!r} (the dataset's sequences by split: {where})"
        if self.dropped:
            shown = "; ".join(self.dropped[:5]) + (f"; and {len(self.dropped) - 5} more" if len(self.dropped) > 5 else "")
            why += f"; dropped by a selection rule: {shown}"
        return why

    @abstractmethod
    def subject(self, name: str) -> Subject: ...

    @abstractmethod
    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]: ...

    def sequences(self) -> list[dict]:
        return [s for s in self.all_sequences if s["split"] in self.splits]

    def subject_names(self) -> list[str]:
        """The subjects of the chosen splits, in the order of their first sequence."""
        return list(dict.fromkeys(s["subject"] for s in self.sequences()))

    def __iter__(self) -> Iterator[Frame]:
        for _, frame in self.load(self.frame_refs()):
            if isinstance(frame, Exception):
                raise frame
            yield frame

    # ------------------------------------------------------------------------------------ reports

    def count_mismatches(self) -> list[tuple[str, str]]:
        """``(key, message)`` per count the raw data does not meet; none unless the source states counts."""
        return []

    def excluded_refs(self) -> list[str]:
        """Sources of frames the chosen splits would use but the source excludes (known unreadable files)."""
        return []

    def check(self, read_files: bool = True) -> CheckReport:
        """Default: list every frame and (``read_files``) load it; what cannot be listed is missing, what cannot be
        loaded is corrupt."""
        report = CheckReport()
        listing = self.list_frames()
        report.corrupt += [str(f) for f in listing.failures]
        refs = listing.refs
        for _, frame in self.load(refs) if read_files else ():
            if isinstance(frame, Exception):
                report.corrupt.append(str(frame))
        return report


def group_by_source(refs: Iterable[FrameRef]) -> list[list[FrameRef]]:
    """Consecutive refs from the same file, so each file is read once per run of frames."""
    return [list(g) for _, g in groupby(refs, key=lambda r: r.source)]
