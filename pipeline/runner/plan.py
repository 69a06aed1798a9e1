"""Planning one split's store (the driver side of ``pipeline.runner.driver``): create it with its ids, subject tables and
provenance, or reopen it and reconcile a rerun's frame list with the rows it holds; and the swap that replaces a
store rebuilt without excluded frames."""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.core.frames import FrameRef
from hipnet.pipeline.core.location import as_path, is_url
from hipnet.pipeline.readers.base import Reader
from hipnet.pipeline.runner.tasks import STAGE_ERRORS, FrameFailure
from hipnet.pipeline.store.schema import (
    ATTR,
    CONVENTIONS,
    OBSERVED_CONVENTIONS,
    QUANTISED_CHUNK_POINTS,
    SCHEMA_VERSION,
    Dims,
)
from hipnet.pipeline.store.zarrstore import check_identity, create_store, frame_ids, frames_digest, open_group, store_exists

PROVENANCE_PACKAGES = ("numpy", "scipy", "zarr", "numcodecs", "dask", "potpourri3d", "libigl", "qdldl", "open3d-cpu",
                       "trimesh")


def versions() -> dict[str, str]:
    out = {}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Plan:
    """What one run of a split does: the store, its rows' refs (in store order) and what cannot be done."""

    path: Path
    refs: list[FrameRef]
    sections: tuple[str, ...]
    unlistable: dict[int, str] = field(default_factory=dict)  # row -> why its sequence cannot be listed now
    failures: list[FrameFailure] = field(default_factory=list)  # sequences with no rows that cannot be done
    excluded: list[dict] = field(default_factory=list)  # the store's ``excluded`` attr


def sequence_of(key: str) -> str:
    return key.rsplit("/", 1)[0]


def swap_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(f".{path.name}.rebuilding"), path.with_name(f".{path.name}.replaced")


def recover_swap(path: Path) -> None:
    """Finish or undo a rebuild that was interrupted while it swapped the new store in."""
    new, old = swap_paths(path)
    if not path.exists() and old.exists():
        finished = new.exists() and open_group(new).attrs.get(ATTR.complete)
        (new if finished else old).rename(path)
    for leftover in (new, old):
        if leftover.exists() and path.exists():
            shutil.rmtree(leftover)


def split_identity(reader: Reader, cfg: PreprocessConfig, split: str, keys: list[str], sections) -> dict:
    sensor = {ATTR.depth_sensor: reader.depth_sensor} if reader.depth_sensor else {}
    return {ATTR.schema_version: SCHEMA_VERSION, ATTR.dataset: reader.dataset, ATTR.split: split,
            ATTR.sections: list(sections), ATTR.shard_frames: cfg.shard_frames, ATTR.config: cfg.to_attrs(),
            ATTR.frames_sha: frames_digest(keys), ATTR.skeleton: reader.skeleton.to_attrs(), **sensor}


def readable_subjects(reader: Reader, names: list[str] | None = None) -> tuple[dict, dict[str, str]]:
    """The rest data (``reader.subject``) of the subjects ``names`` (default: all) and, for those that cannot be
    read, why: a subject whose shape cannot be read fails alone (its sequences are not written), the others are
    written."""
    rest, failed = {}, {}
    for name in reader.subject_names() if names is None else names:
        try:
            rest[name] = reader.subject(name)
        except STAGE_ERRORS as e:
            failed[name] = f"{e} (subject {name}'s shape: none of its sequences can be written)"
    return rest, failed


def create_split_store(reader: Reader, path: Path, refs: list[FrameRef], cfg: PreprocessConfig, split: str,
            sections: tuple[str, ...], extra: dict, rest: dict) -> None:
    """A new store at ``path`` for ``refs``: ids, the subject table (the subjects of ``rest``, their rest data),
    rest joints and faces written now."""
    subjects = [name for name in reader.subject_names() if name in rest]
    sequences = list(dict.fromkeys(r.sequence for r in refs))
    first = rest[subjects[0]]
    faces = first.faces
    if "mesh" in sections:
        for s in rest.values():
            if s.faces is None or not np.array_equal(s.faces, faces):
                raise ValueError(f"{reader.root}: subject {s.name} has another mesh topology; a store holds one")
    n_vertices = len(first.rest_vertices) if first.rest_vertices is not None else 0
    dims = Dims(
        F=len(refs), S=cfg.surface_points, J=reader.skeleton.num_joints, P=len(subjects),
        U=cfg.eval_points, N=cfg.eval_points, V=n_vertices, Fc=0 if faces is None else len(faces),
    )
    subject_id, sequence_id = {n: i for i, n in enumerate(subjects)}, {n: i for i, n in enumerate(sequences)}
    ids = {
        "frame/subject": np.array([subject_id[r.subject] for r in refs]),
        "frame/sequence": np.array([sequence_id[r.sequence] for r in refs]),
        "frame/index": np.array([r.index for r in refs]),
    }
    attrs = {
        **split_identity(reader, cfg, split, [r.key for r in refs], sections),
        ATTR.subjects: subjects,
        ATTR.sequences: sequences,
        ATTR.source: {"reader": reader.name, "root": str(Path(reader.root).resolve())},
        ATTR.manifest_hash: reader.info.manifest_hash,
        ATTR.versions: versions(),
        **CONVENTIONS,
        **(OBSERVED_CONVENTIONS if "observed" in sections else {}),
        **{k: v for k, v in extra.items() if v},
    }
    create_store(path, dims=dims, sections=sections, shard_frames=cfg.shard_frames, attrs=attrs, ids=ids,
                 rest_joints=np.stack([rest[n].rest_joints for n in subjects]), faces=faces)


def refuse_duplicates(refs: list[FrameRef]) -> None:
    seen: dict[str, str] = {}
    for r in refs:
        if r.key in seen:
            raise ValueError(f"frame {r.key} is listed twice ({seen[r.key]} and {r.source}): a sequence is named "
                             "twice in the dataset's description; a store holds each frame once")
        seen[r.key] = r.source


def prepare_store(reader: Reader, out: Path, cfg: PreprocessConfig, split: str) -> Plan:
    """Create (or reopen) the store of one split and say what this run does.

    The frame list is fixed when the store is created: the frames of every sequence that can be listed. A sequence
    that cannot be listed then is recorded (``unlisted``) and fails every run until ``--exclude-failed``. On a rerun
    the store's rows keep their places: a sequence that cannot be listed now keeps its rows (done ones stay done,
    the others fail with the reason); any other change of the frame list is refused."""
    path = as_path(out) / f"{split}.zarr"
    chunk = QUANTISED_CHUNK_POINTS
    if cfg.quantise and cfg.surface_points > chunk and cfg.surface_points % chunk:
        raise ValueError(f"--points {cfg.surface_points} with --quantise: a quantised store chunks each frame's "
                         f"surface samples by {chunk}, so give a multiple of {chunk} (or fewer than {chunk})")
    if not is_url(path):  # a store on object storage is never swapped (``pipeline.runner.driver``)
        recover_swap(path)
    if reader.observed and cfg.geodesics != "per-frame":
        raise ValueError(f"{reader.root}: {cfg.geodesics} labels need a rest mesh of a fixed topology; observed frames "
                         "(point clouds, raw scans, depth images) are labelled per frame: use --geodesics per-frame")
    listing = reader.list_frames()
    sections = cfg.sections(split, reader.observed)
    exists = store_exists(path)
    old = dict(open_group(path).attrs) if exists else {}
    excluded = list(old.get(ATTR.excluded, []))
    gone = {e["key"] for e in excluded}
    # the stride picks from every listed frame, so frames excluded later (--exclude-failed) move no other frame
    refs = [r for r in cfg.select(listing.refs) if r.key not in gone and sequence_of(r.key) not in gone]
    failed = {f.key: f.reason for f in listing.failures if f.key not in gone}
    refuse_duplicates(refs)
    if not exists:
        rest, bad = readable_subjects(reader)
        for r in refs:
            if r.subject in bad:
                failed.setdefault(sequence_of(r.key), bad[r.subject])
        refs = [r for r in refs if r.subject not in bad]
        seq_failures = [FrameFailure(k, "", why) for k, why in failed.items()]
        if refs:
            create_split_store(reader, path, refs, cfg, split, sections,
                               {ATTR.unlisted: [{"key": k, "reason": why} for k, why in failed.items()]}, rest)
        return Plan(path, refs, sections, {}, seq_failures)
    group = open_group(path, mode="r+")
    # subjects left out when the store was created: still unreadable, their sequences fail with the reason
    stored = set(old.get(ATTR.subjects, []))
    _, bad = readable_subjects(reader, [n for n in reader.subject_names() if n not in stored])
    for r in refs:
        if r.subject in bad:
            failed.setdefault(sequence_of(r.key), bad[r.subject])
    refs = [r for r in refs if r.subject not in bad]
    rows, unlistable, failures = reconcile_rows(path, frame_ids(group), refs, failed,
                                            {u["key"]: u["reason"] for u in old.get(ATTR.unlisted, [])})
    check_identity(path, old, split_identity(reader, cfg, split, [r.key for r in rows], sections))
    return Plan(path, rows, sections, unlistable, failures, excluded)


def reconcile_rows(path: Path, stored: list[tuple[str, str, int]], refs: list[FrameRef], failed: dict[str, str],
               unlisted: dict[str, str]) -> tuple[list[FrameRef], dict[int, str], list[FrameFailure]]:
    """The store's rows as refs of this run, (row -> reason) for rows whose sequence cannot be listed now, and the
    failures of sequences without rows. Refuses (FileExistsError) a frame list that changed otherwise."""
    now: dict[str, list[FrameRef]] = {}
    for r in refs:
        now.setdefault(sequence_of(r.key), []).append(r)
    by_seq: dict[str, list[tuple[str, str, int]]] = {}
    for ident in stored:
        by_seq.setdefault(f"{ident[0]}/{ident[1]}", []).append(ident)
    rows: list[FrameRef] = []
    unlistable: dict[int, str] = {}
    for seq, idents in by_seq.items():
        if seq in failed:
            unlistable.update({len(rows) + k: failed[seq] for k in range(len(idents))})
            rows += [FrameRef(s, q, i, "") for s, q, i in idents]
            continue
        got = now.pop(seq, [])
        if [r.key for r in got] != [f"{s}/{q}/{i}" for s, q, i in idents]:
            raise FileExistsError(f"{path} exists and its frame list differs from the data's: sequence {seq} has "
                                  f"{len(idents)} frames in the store and lists {len(got)} now; choose another --out "
                                  "or delete it to start over")
        rows += got
    failures = [FrameFailure(k, "", why) for k, why in failed.items() if k not in by_seq]
    for seq in now:
        if seq not in unlisted:
            raise FileExistsError(f"{path} exists and its frame list differs from the data's: sequence {seq} is not "
                                  "in the store; choose another --out or delete it to start over")
        failures.append(FrameFailure(seq, "", f"can be listed now, but this store's frame list was fixed without it "
                                              f"({unlisted[seq]}); --exclude-failed finishes the store without it, "
                                              "another --out makes a store with it"))
    return rows, unlistable, failures
