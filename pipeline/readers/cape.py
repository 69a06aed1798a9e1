"""CAPE reader (clothed SMPL-topology meshes, one ``.npz`` per frame; layouts in FORMATS.md).

Two layouts are read, below ``root`` or ``root/cape_release``:

- release: ``sequences/<subject>/<clothing>_<motion>/<clothing>_<motion>.<frame 6 digits>.npz``,
  ``minimal_body_shape/<subject>/<subject>_minimal.npy`` (or ``.ply``), ``misc/smpl_tris.npy``,
  ``misc/subj_genders.pkl``;
- per-subject extracted: ``<subject>/<clothing>_<motion>/...npz`` with the minimal body at
  ``<subject>/<subject>_minimal.npy`` (or under ``minimal_body_shape/``), ``misc/`` as above.

Per frame: vertices ``v_posed - transl`` (Y up, metres); joints from the user's SMPL model: rest joints are the SMPL
``J_regressor`` applied to the subject's minimal body (the template, since CAPE has no betas), posed with the frame's
72-d ``pose`` by ``smplx.lbs.batch_rigid_transform``; the 22 body joints are kept. The gender pickle is read with
``pipeline.sources.safepickle``. A frame file that cannot be read comes back as an error naming it (the run goes on and
lists it); files the manifest lists under ``exclude_frames`` (the release's known corrupt frames) are left out and
reported by count and path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.checks import numbers, require_finite
from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.io import load_npy, read_npz
from hipnet.pipeline.readers.common import FRAME_ERRORS, CheckReport, ManifestReader, frame_error
from hipnet.pipeline.sources.bodymodels import merge_weights, rigid_transforms
from hipnet.pipeline.sources.selection import select_frames, split_names

FRAME_FILE = re.compile(r"^(?P<sequence>.+)\.(?P<frame>\d{6})\.npz$")
FRAME_KEYS = {"v_posed": (None, 3), "pose": (72,), "transl": (3,)}


def frame_files(folder: Path) -> dict[int, Path]:
    """Frame number -> file of one sequence folder, sorted by frame number."""
    found = {}
    for p in folder.iterdir() if folder.is_dir() else []:
        m = FRAME_FILE.match(p.name)
        if m and m["sequence"] == folder.name:
            found[int(m["frame"])] = p
    return dict(sorted(found.items()))


def read_frame(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one CAPE frame, checked; a damaged file raises ValueError naming it."""
    data = read_npz(path, FRAME_KEYS)
    for key in FRAME_KEYS:
        data[key] = numbers(str(path), key, data[key])
    require_finite(str(path), **{k: data[k] for k in FRAME_KEYS})
    return data


class CapeReader(ManifestReader):
    """Frames of the ``cape`` manifest. Implements the reader protocol of ``pipeline.readers.base``."""

    reader_kind = "cape"

    # ---------------------------------------------------------------------------------------- layout

    @property
    def base(self) -> Path:
        return self.root / "cape_release" if (self.root / "cape_release").is_dir() else self.root

    def sequences_dir(self, subject: str) -> Path | None:
        for p in (self.base / "sequences" / subject, self.base / subject):
            if p.is_dir():
                return p
        return None

    def minimal_body_file(self, subject: str) -> Path | None:
        for folder in (self.base / "minimal_body_shape" / subject, self.base / subject):
            for ext in (".npy", ".ply"):
                if (folder / f"{subject}_minimal{ext}").is_file():
                    return folder / f"{subject}_minimal{ext}"
        return None

    def resolve(self) -> tuple[dict[str, dict], list[dict]]:
        m = self.manifest
        entries = {str(s["name"]): {**s, "name": str(s["name"])} for s in m["subjects"]}
        if m["sequences"]:
            return entries, [{**s, "subject": str(s["subject"]), "name": str(s["name"])} for s in m["sequences"]]
        rule = m.get("select", {}).get("split")
        if rule is None:
            raise ValueError(f"manifest {self.dataset}: no sequences listed and no select.split rule")
        seqs = []
        for name in entries:
            folder = self.sequences_dir(name)
            if folder is None:
                self._missing(f"{self.base}: no sequence folder for subject {name}")
                continue
            names = sorted(p.name for p in folder.iterdir() if p.is_dir())
            by_clothing: dict[str, list[str]] = {}
            for n in names:  # split per subject-clothing combination
                by_clothing.setdefault(n.split("_")[0], []).append(n)
            for clothing, group in by_clothing.items():
                split = split_names(group, rule, key=f"{self.dataset}/{name}/{clothing}")
                seqs += [{"subject": name, "name": n, "split": split[n]} for n in group]
        return entries, seqs

    def _files(self, subject: str, sequence: str) -> dict[int, Path]:
        key = ("files", subject, sequence)
        if key not in self._cache:
            folder = self.sequences_dir(subject)
            self._cache[key] = {} if folder is None else frame_files(folder / sequence)
        return self._cache[key]

    def _frame_refs_of(self, seq: dict) -> list[FrameRef]:
        files = self._files(seq["subject"], seq["name"])
        if not files:
            raise FileNotFoundError(f"{self.base}: no frames of sequence {seq['subject']}/{seq['name']} "
                                    "(run `hipnet-data manifest check` for everything that is missing)")
        numbers = list(files)
        pos = select_frames(len(numbers), self.manifest.get("frames"), key=f"{seq['subject']}/{seq['name']}")
        return [FrameRef(seq["subject"], seq["name"], numbers[i], str(files[numbers[i]])) for i in pos]

    # ---------------------------------------------------------------------------------------- subjects

    def genders(self) -> dict[str, str]:
        from hipnet.pipeline.sources.safepickle import load_pickle

        if "genders" not in self._cache:
            path = self.base / "misc" / "subj_genders.pkl"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: CAPE's subject genders not found")
            data = load_pickle(path)
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a dict subject -> gender, got {type(data).__name__}")
            self._cache["genders"] = {str(k).zfill(5): str(v).strip().lower() for k, v in data.items()}
        return self._cache["genders"]

    def minimal_body(self, subject: str) -> np.ndarray:
        path = self.minimal_body_file(subject)
        if path is None:
            raise FileNotFoundError(f"{self.base}: no minimal body {subject}_minimal.npy or .ply of subject {subject}")
        if path.suffix == ".npy":
            v = load_npy(path)
        else:
            from hipnet.pipeline.readers.generic import read_mesh

            v = read_mesh(path)[0]
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"{path}: minimal body has shape {v.shape}, expected (6890, 3)")
        v = numbers(str(path), "minimal body", v)
        require_finite(str(path), **{"minimal body": v})
        return v

    @staticmethod
    def faces(path: Path, n_vertices: int) -> np.ndarray:
        """CAPE's ``misc/smpl_tris.npy``: (F, 3) integer triangles into the ``n_vertices`` of the SMPL mesh."""
        try:
            f = load_npy(path)
        except ValueError as e:
            raise ValueError(f"{path}: cannot read the SMPL faces ({e})") from e
        if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
            raise ValueError(f"{path}: faces have shape {f.shape} and dtype {f.dtype}, expected (F, 3) integers "
                             "(13776 for SMPL)")
        if f.size and (f.min() < 0 or f.max() >= n_vertices):
            raise ValueError(f"{path}: face indices span [{f.min()}, {f.max()}], outside the {n_vertices} vertices "
                             "of the minimal body")
        return f.astype(np.int32)

    def _rest(self, name: str) -> tuple[Subject, np.ndarray, np.ndarray]:
        """(Subject, all SMPL rest joints (24, 3), SMPL parents)."""
        key = ("subject", name)
        if key not in self._cache:
            gender = self.genders().get(name)
            if gender is None:
                raise ValueError(f"{self.base / 'misc' / 'subj_genders.pkl'}: no gender for subject {name}")
            model = self.models.get("smpl", gender)
            rest = self.minimal_body(name)
            if len(rest) != int(model.keep.sum()):
                raise ValueError(f"subject {name}: minimal body has {len(rest)} vertices, SMPL has {model.keep.sum()}")
            joints = model.J_regressor[:, model.keep] @ rest
            tris = self.base / "misc" / "smpl_tris.npy"
            faces = self.faces(tris, len(rest)) if tris.is_file() else model.faces
            weights = merge_weights(model.weights[model.keep], model.parents, 22)
            subj = Subject(name, joints[:22], faces, rest, weights)
            self._cache[key] = (subj, joints, model.parents)
        return self._cache[key]

    def subject(self, name: str) -> Subject:
        return self._rest(name)[0]

    # ---------------------------------------------------------------------------------------- frames

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        for r in refs:
            try:
                subj, joints, parents = self._rest(r.subject)
                data = read_frame(Path(r.source))
                if len(data["v_posed"]) != len(subj.rest_vertices):
                    raise ValueError(f"{r.source}: v_posed has {len(data['v_posed'])} vertices, expected "
                                     f"{len(subj.rest_vertices)}")
                jt = rigid_transforms(data["pose"][None], joints, parents)[0, :22]
                frame = Frame(r.subject, r.sequence, r.index, data["v_posed"] - data["transl"],
                              subj.faces, jt, subj.rest_joints, subj.skinning_weights)
            except FRAME_ERRORS as e:
                yield r, frame_error(r.source, e)
                continue
            yield r, frame

    # ---------------------------------------------------------------------------------------- check

    def check(self, read_files: bool = True) -> CheckReport:
        report = CheckReport()
        if not (self.base / "misc" / "subj_genders.pkl").is_file():
            report.missing.append(str(self.base / "misc" / "subj_genders.pkl"))
        listed = {(s["subject"], s["name"]) for s in self.all_sequences}
        for name in self.subject_entries:
            if self.minimal_body_file(name) is None:
                report.missing.append(f"{self.base}: minimal body of subject {name}")
            folder = self.sequences_dir(name)
            if folder is None:
                report.missing.append(f"{self.base}: sequences of subject {name}")
                continue
            report.extra += [str(p) for p in sorted(folder.iterdir()) if p.is_dir() and (name, p.name) not in listed]
        for seq in self.all_sequences:
            files = self._files(seq["subject"], seq["name"])
            if not files:
                report.missing.append(f"{self.base}: frames of sequence {seq['subject']}/{seq['name']}")
            for path in files.values() if read_files else []:
                try:
                    read_frame(path)
                except (OSError, ValueError) as e:
                    if self.is_excluded(str(path)):
                        report.notes.append(f"{path}: unreadable, excluded by the manifest")
                    else:
                        report.corrupt.append(str(e))
        self.expected_counts(report)
        return report

    def found_counts(self) -> dict[str, int]:
        """The common counts plus subject-clothing combinations and frame files of the manifest's sequences."""
        seqs = self.all_sequences
        return {**super().found_counts(),
                "subject_clothing": len({(s["subject"], s["name"].split("_")[0]) for s in seqs}),
                "frames_on_disk": sum(len(self._files(s["subject"], s["name"])) for s in seqs)}
