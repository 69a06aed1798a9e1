"""What the manifest-driven readers (AMASS, DFAUST, CAPE) share: the manifest, the split filter, frame lists built
from selection rules, excluded frames, and the report of ``hipnet-data manifest check``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hipnet.pipeline.core.frames import FrameRef
from hipnet.pipeline.core.skeleton import SMPL22, Skeleton
from hipnet.pipeline.readers.base import CheckReport, Listing, Reader, ReaderInfo, SequenceInfo
from hipnet.pipeline.sources.bodymodels import ModelCache
from hipnet.pipeline.sources.manifest import SPLITS, check_split, load_manifest, manifest_hash, manifest_path

# What reading or posing one frame may raise (numpy's LinAlgError is a ValueError, torch's errors RuntimeErrors).
# ``load`` turns them into that frame's recorded failure, named by its file, and goes on with the other frames.
FRAME_ERRORS = (OSError, ValueError, RuntimeError, IndexError, KeyError, TypeError, ArithmeticError)
# How the keys of a manifest's ``expected`` block read in messages; "frames_on_disk" is approximate (a note).
COUNT_LABELS = {"subjects": "subjects", "sequences_total": "sequences", "subject_clothing": "subject-clothing "
                "combinations", "frames_on_disk": "frames on disk"}
SOFT_COUNTS = ("frames_on_disk",)


def frame_error(source: str, e: Exception) -> Exception:
    """``e`` itself when its message names ``source``, else a ValueError that does (and keeps ``e`` as its cause)."""
    if str(source) in str(e):
        return e
    err = ValueError(f"{source}: {type(e).__name__}: {e}")
    err.__cause__ = e
    return err


class ManifestReader(Reader):
    """Base of the readers driven by a manifest in ``data_manifests/`` (or a YAML path).

    Subclasses set ``reader_kind`` and implement ``resolve()`` (the sequences of the manifest, explicit or from its
    selection rules against the files under ``root``), ``_frame_refs_of(seq)``, ``subject(name)``, ``load(refs)``
    and ``check()``. ``sequences`` entries are dicts with at least ``subject``, ``name`` and ``split``.
    """

    reader_kind = ""
    accepts: tuple[str, ...] = ()  # the manifest `reader` values this class reads (default: reader_kind)
    needs_body_models = True

    def __init__(self, root: Path, splits: Iterable[str] = SPLITS, manifest: str | Path | None = None,
                 body_models: Path | None = None, strict: bool = True) -> None:
        super().__init__(root, splits)
        self.strict = strict  # False (manifest check): missing folders are reported by check(), not raised
        self._lengths: dict[str, int] = {}  # frames per source, from file headers
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: raw dataset folder not found")
        manifest = manifest or self.reader_kind
        try:
            self.manifest = load_manifest(manifest)
        except FileNotFoundError:
            if manifest == self.reader_kind:
                raise ValueError(f"the {self.reader_kind} reader needs a manifest: pass one of its manifests in "
                                 "data_manifests/ (amass_transitions, amass_cmu, dfaust, dfaust_snarf, "
                                 "dfaust_poseprior, cape) or a YAML path as --dataset") from None
            raise
        kind = self.manifest.get("reader", self.manifest["dataset"])
        if kind not in (self.accepts or (self.reader_kind,)):
            raise ValueError(f"{manifest_path(manifest)}: manifest is for reader {kind!r}, not {self.reader_kind!r}")
        # the name a store records and `open_reader` resolves again: the shipped manifest's name or the YAML path
        shipped = Path(str(manifest)).suffix not in (".yaml", ".yml")
        self._name = str(manifest) if shipped else str(Path(manifest).resolve())
        self._body_models = None if body_models is None else Path(body_models)
        self._manifest_hash = manifest_hash(self.manifest)
        self.excluded = self._excluded()
        self.subject_entries, self.all_sequences = self.resolve()
        check_split({"subjects": list(self.subject_entries.values()), "sequences": self.all_sequences},
                    where=str(manifest))

    @property
    def name(self) -> str:
        return self._name

    @property
    def skeleton(self) -> Skeleton:
        return SMPL22

    @property
    def body_models(self) -> Path | None:
        return self._body_models

    @property
    def models(self) -> ModelCache:
        """The body models, loaded once per process for this reader (kept in its per-process cache)."""
        return self._cache.setdefault("models", ModelCache(self._body_models))

    @property
    def info(self) -> ReaderInfo:
        return ReaderInfo(self.dataset, self.name, str(self.root), self._manifest_hash, tuple(self.subject_entries),
                          tuple(SequenceInfo(s["subject"], s["name"], s["split"]) for s in self.all_sequences))

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    def resolve(self) -> tuple[dict[str, dict], list[dict]]:
        """(subject name -> subject entry, sequence entries) of the manifest, with its rules applied."""
        raise NotImplementedError

    def _frame_refs_of(self, seq: dict) -> list[FrameRef]:
        raise NotImplementedError

    def _missing(self, message: str) -> None:
        if self.strict:
            raise FileNotFoundError(message + " (run `hipnet-data manifest check` for everything that is missing)")

    def _excluded(self) -> dict[str, str]:
        """Frames the manifest excludes (known corrupt release files): path tail -> reason. A tail such as
        ``00032/seq/seq.000047.npz`` matches the file wherever the layout puts the subject folder."""
        return {str(e["file"]): e.get("reason", "listed in the manifest") for e in self.manifest.get("exclude_frames", [])}

    def is_excluded(self, source: str) -> bool:
        parts = Path(source).parts
        return any("/".join(parts[-len(Path(tail).parts):]) == tail for tail in self.excluded)

    def list_frames(self) -> Listing:
        """Sequence by sequence: a motion or frame folder that cannot be listed fails its own sequence."""
        return self.sequence_listing(lambda seq: [r for r in self._frame_refs_of(seq) if not self.is_excluded(r.source)])

    def frame_refs(self) -> list[FrameRef]:
        return self.listed_refs()

    def excluded_refs(self) -> list[str]:
        """The excluded files that the chosen splits would otherwise use (reported by the CLI, never dropped
        silently)."""
        if not self.excluded:
            return []
        return [r.source for r in self.sequence_listing(self._frame_refs_of).refs if self.is_excluded(r.source)]

    def found_counts(self) -> dict[str, int]:
        """What the resolved manifest holds, under the keys of its ``expected`` block (per split as
        ``"sequences <split>"``). Readers add what only they can count (CAPE: subject-clothing combinations)."""
        seqs = self.all_sequences
        found = {"subjects": len({s["subject"] for s in seqs}), "sequences_total": len(seqs)}
        for split in SPLITS:
            found[f"sequences {split}"] = sum(s["split"] == split for s in seqs)
        return found

    def count_mismatches(self) -> list[tuple[str, str]]:
        """``(key, "sequences train: found 79, expected 80")`` for each count of the manifest's ``expected`` block
        that the raw data does not meet (empty when everything is there)."""
        exp = self.manifest.get("expected", {})
        wanted = {k: n for k, n in exp.items() if k != "sequences"}
        wanted.update({f"sequences {split}": n for split, n in exp.get("sequences", {}).items()})
        unknown = [k for k in wanted if k not in COUNT_LABELS and not k.startswith("sequences ")]
        if unknown:
            raise ValueError(f"manifest {self.name}: unknown expected counts {unknown}; known: {sorted(COUNT_LABELS)}")
        found = self.found_counts()
        return [(k, f"{COUNT_LABELS.get(k, k)}: found {found[k]}, expected {n}")
                for k, n in wanted.items() if k in found and found[k] != n]

    def expected_counts(self, report: CheckReport) -> None:
        """Compare the resolved manifest with its ``expected`` block; an approximate count is a note."""
        for key, message in self.count_mismatches():
            (report.notes if key in SOFT_COUNTS else report.counts).append(message)
