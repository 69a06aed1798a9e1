"""AMASS reader: SMPL+H ``*_poses.npz`` and SMPL-X ``*_stageii.npz`` motions posed through the user's body models.

FORMATS.md has the layouts. What this module decides:

- the layout is read from the width of ``poses`` (156: SMPL+H, 165: SMPL-X), never from the file name;
  ``shape.npz`` and ``*_stagei.npz`` are not motions and are skipped;
- HIPNet's 22 body joints only: ``poses[:, :66]`` drives the root and 21 body joints; hand, jaw and eye joints stay
  in their rest orientation (SMPL+H finger rotations are never fed into other joints);
- every identity coefficient in the file is used (16 for SMPL+H; smplx would silently keep 10);
- a subject's shape (betas, gender) comes from its ``shape`` folder: ``shape.npz`` there, else the first motion file
  in it (AMASS fits one shape per subject), so motions from another subset can be posed on a subject
  (PosePrior poses on DFAUST bodies);
- AMASS is Z up: vertices and joint transforms are rotated to Y up (x' = (x, z, -y)); the rest pose stays in the
  body model's own frame, which is already Y up, so ``G' = R G``;
- subset names drift between releases, so ``MPI_Limits``/``PosePrior``, ``BioMotionLab_NTroje``/``BMLrub``,
  ``DFaust_67``/``DFaust``, ``Transitions_mocap``/``Transitions`` name the same folder, also when a tar extracted
  into ``<Subset>/<Subset>/``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.checks import bad_rows, nonfinite, numbers, require_finite
from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.io import HEADER_ERRORS, ZIP_ERRORS, load_npz, one_line
from hipnet.pipeline.readers.base import group_by_source
from hipnet.pipeline.readers.common import FRAME_ERRORS, CheckReport, ManifestReader, frame_error
from hipnet.pipeline.sources.bodymodels import GENDERS, Z_UP_TO_Y_UP, merge_weights
from hipnet.pipeline.sources.selection import select_frames, split_names

SUBSET_ALIASES = {
    "PosePrior": ("PosePrior", "MPI_Limits"),
    "BMLrub": ("BMLrub", "BioMotionLab_NTroje"),
    "DFaust": ("DFaust", "DFaust_67"),
    "Transitions": ("Transitions", "Transitions_mocap"),
}
MOTION_SUFFIXES = ("_poses", "_stageii")
LAYOUTS = {156: "smplh", 165: "smplx"}  # width of poses -> layout (the frame rate is not used: frames are poses)
BODY_POSE = 66  # root (3) + 21 body joints (63)
BATCH = 64


def canonical_subset(name: str) -> str:
    for canon, names in SUBSET_ALIASES.items():
        if name in names:
            return canon
    return name


def subset_dir(root: Path, subset: str) -> Path | None:
    """The folder of a subset under ``root``, under any of its names, also nested one level (tar extraction)."""
    names = SUBSET_ALIASES.get(canonical_subset(subset), (subset,))
    for outer in names:
        for inner in names:
            if (root / outer / inner).is_dir():
                return root / outer / inner
    for outer in names:
        if (root / outer).is_dir():
            return root / outer
    return None


def motion_name(path: Path) -> str | None:
    """Sequence name of a motion file (``walk_poses.npz`` -> ``walk``); None for shape files and stagei fits."""
    stem = path.name[:-4] if path.name.endswith(".npz") else None
    if stem is None or stem.endswith("_stagei") or stem == "shape":
        return None
    for suffix in MOTION_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return None


def motion_files(folder: Path | None) -> dict[str, Path]:
    """Sequence name -> motion file in one subject folder, sorted by name."""
    if folder is None or not folder.is_dir():
        return {}
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        name = motion_name(p)
        if name is not None and name not in out:
            out[name] = p
    return out


def npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of one array in an ``.npz`` from its header, without reading the data."""
    if not Path(path).is_file() or Path(path).stat().st_size == 0 or not zipfile.is_zipfile(path):
        load_npz(path, ())  # raises our message: missing, empty, not a zip
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
    except KeyError as e:
        raise ValueError(f"{path}: no array {key!r}") from e
    except (ValueError, *HEADER_ERRORS, *ZIP_ERRORS) as e:
        raise ValueError(f"{path}: cannot read as npz ({type(e).__name__}: {one_line(e)})") from e
    if dtype.hasobject:
        raise ValueError(f"{path}: member {key} is a pickled object; refused")
    return tuple(shape)


def _gender(value: np.ndarray, path: Path) -> str:
    if value.size != 1 or value.dtype.kind not in "USO":
        raise ValueError(f"{path}: gender is a {value.dtype} array of shape {value.shape}, expected one string")
    v = value.ravel()[0]
    g = (v.decode(errors="replace") if isinstance(v, bytes) else str(v)).strip().lower()
    if g not in GENDERS:
        raise ValueError(f"{path}: gender {g!r} is not one of {GENDERS}")
    return g


@dataclass(frozen=True)
class Motion:
    path: Path
    layout: str  # smplh | smplx
    poses: np.ndarray  # (T, 66) root + body axis-angle
    trans: np.ndarray  # (T, 3)
    betas: np.ndarray  # (B,)
    gender: str

    def bad_frames(self) -> dict[int, str]:
        """Frame -> why it cannot be posed (NaN or inf in its body pose or translation)."""
        return {int(t): nonfinite("poses", self.poses[t]) or nonfinite("trans", self.trans[t])
                for t in bad_rows(self.poses, self.trans)}


def read_motion(path: Path) -> Motion:
    """Read the arrays HIPNet needs from an AMASS motion file (no pickle); the layout from the width of poses.
    Betas must be finite (they shape every frame); NaN or inf in one frame's pose is that frame's problem
    (``Motion.bad_frames``)."""
    path = Path(path)
    z = load_npz(path, ("poses", "trans", "betas", "gender"))
    if "poses" not in z:
        raise ValueError(f"{path}: no 'poses' array (a shape or stagei file, not a motion)")
    poses = numbers(str(path), "poses", z["poses"])
    if poses.ndim != 2 or poses.shape[1] not in LAYOUTS:
        raise ValueError(f"{path}: poses has shape {poses.shape}; expected (T, 156) SMPL+H or (T, 165) SMPL-X")
    layout = LAYOUTS[poses.shape[1]]
    missing = [k for k in ("trans", "betas", "gender") if k not in z]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    trans, betas = numbers(str(path), "trans", z["trans"]), numbers(str(path), "betas", z["betas"]).reshape(-1)
    if trans.shape != (len(poses), 3):
        raise ValueError(f"{path}: trans has shape {trans.shape}, expected ({len(poses)}, 3)")
    require_finite(str(path), betas=betas)
    return Motion(path, layout, poses[:, :BODY_POSE], trans, betas, _gender(z["gender"], path))


def read_shape(folder: Path) -> tuple[np.ndarray, str, str, Path]:
    """(betas, gender, layout, file) of an AMASS subject folder: ``shape.npz`` (SMPL+H release) or its first motion
    that can be read (AMASS fits one shape per subject, so every motion carries the same one)."""
    shape = folder / "shape.npz"
    if shape.is_file():
        z = load_npz(shape, ("betas", "gender"))
        if "betas" not in z or "gender" not in z:
            raise ValueError(f"{shape}: cannot read betas and gender (missing keys)")
        betas = numbers(str(shape), "betas", z["betas"]).reshape(-1)
        require_finite(str(shape), betas=betas)
        return betas, _gender(z["gender"], shape), "smplh", shape
    files = motion_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no shape.npz and no motion files to take the subject's shape from")
    errors = []
    for path in files.values():
        try:
            m = read_motion(path)
        except ValueError as e:
            errors.append(str(e))
            continue
        return m.betas, m.gender, m.layout, m.path
    raise ValueError(f"{folder}: no shape.npz and no readable motion to take the subject's shape from ({errors[0]})")


class AmassReader(ManifestReader):
    """Frames of an AMASS-based manifest (``amass_transitions``, ``amass_cmu``, ``dfaust`` ..., see
    ``data_manifests/README.md`` for the keys). Implements the reader protocol of ``pipeline.readers.base``."""

    reader_kind = "amass"
    accepts = ("amass", "dfaust")  # DFAUST's AMASS route (pipeline.readers.dfaust)

    # ---------------------------------------------------------------------------------------- manifest

    def folder(self, spec: str) -> Path | None:
        """``Subset/folder`` -> the folder on disk (subset aliases resolved), or None."""
        subset, _, rest = spec.partition("/")
        base = subset_dir(self.root, subset)
        if base is None:
            return None
        return base / rest if rest else base

    def motion_file(self, motion: str) -> Path:
        """``Subset/folder/name`` -> the motion file (``name_poses.npz`` or ``name_stageii.npz``)."""
        spec, _, name = motion.rpartition("/")
        folder = self.folder(spec)
        candidates = [] if folder is None else [folder / f"{name}{s}.npz" for s in MOTION_SUFFIXES]
        for c in candidates:
            if c.is_file():
                return c
        where = folder if folder is not None else self.root / spec
        raise FileNotFoundError(f"{where}: no motion file {name}_poses.npz or {name}_stageii.npz "
                                "(run `hipnet-data manifest check` for everything that is missing)")

    def resolve(self) -> tuple[dict[str, dict], list[dict]]:
        m = self.manifest
        subset = m.get("subset", "")
        rule = m.get("select", {})
        entries = {str(s["name"]): {**s, "name": str(s["name"]), "shape": s.get("shape", f"{subset}/{s['name']}")}
                   for s in m["subjects"]}
        if not entries:
            base = subset_dir(self.root, subset)
            if base is None:
                self._missing(f"{self.root}: no folder for subset {subset} (or its aliases)")
                return {}, []
            least = int(rule.get("subjects", {}).get("min_sequences", 1))
            for folder in sorted(p for p in base.iterdir() if p.is_dir()):
                found = len(motion_files(folder))
                if found >= least:
                    entries[folder.name] = {"name": folder.name, "shape": f"{subset}/{folder.name}"}
                else:
                    self.dropped.append(f"subject {folder.name} ({folder}): {found} motion files, fewer than the "
                                        f"manifest's select.subjects.min_sequences {least}")
        template = m.get("motion", "{shape}/{name}")
        seqs = []
        if m["sequences"]:
            for s in m["sequences"]:
                e = entries[str(s["subject"])] if str(s["subject"]) in entries else {"shape": ""}
                motion = s.get("motion") or template.format(shape=e["shape"], subject=s["subject"], name=s["name"])
                seqs.append({**s, "subject": str(s["subject"]), "name": str(s["name"]), "motion": motion})
            return entries, seqs
        if "split" not in rule:
            raise ValueError(f"manifest {self.dataset}: no sequences listed and no select.split rule")
        for name, e in entries.items():
            folder = self.folder(e["shape"])
            files = motion_files(folder)
            if not files:
                self._missing(f"{folder or self.root / e['shape']}: no motion files for subject {name}")
                continue
            splits = split_names(list(files), rule["split"], key=f"{self.dataset}/{name}")
            seqs += [{"subject": name, "name": n, "split": splits[n], "motion": f"{e['shape']}/{n}"} for n in files]
        return entries, seqs

    def _frame_refs_of(self, seq: dict) -> list[FrameRef]:
        path = self.motion_file(seq["motion"])
        key = str(path)
        if key not in self._lengths:
            self._lengths[key] = npz_shape(path, "poses")[0]
        idx = select_frames(self._lengths[key], self.manifest.get("frames"), key=f"{seq['subject']}/{seq['name']}")
        return [FrameRef(seq["subject"], seq["name"], int(i), key) for i in idx]

    # ---------------------------------------------------------------------------------------- subjects

    def shape(self, name: str) -> tuple[np.ndarray, str, str, Path]:
        """(betas, gender, layout, file) of a subject."""
        key = ("shape", name)
        if key not in self._cache:
            spec = self.subject_entries[name]["shape"]
            folder = self.folder(spec)
            if folder is None or not folder.is_dir():
                raise FileNotFoundError(f"{self.root / spec}: subject folder of {name} not found")
            self._cache[key] = read_shape(folder)
        return self._cache[key]

    def subject(self, name: str) -> Subject:
        key = ("subject", name)
        if key not in self._cache:
            betas, gender, layout, _ = self.shape(name)
            model = self.models.get(layout, gender)
            rest_v = model.rest_vertices(betas)
            rest_j = model.pose(betas, np.zeros((1, 3))).rest_joints[:22]
            weights = merge_weights(model.weights[model.keep], model.parents, 22)
            self._cache[key] = Subject(name, rest_j, model.faces, rest_v, weights)
        return self._cache[key]

    # ---------------------------------------------------------------------------------------- frames

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        """One result per ref, in the order given: a frame past the end of its file (a file shorter than when the
        refs were listed) or one whose posing fails comes back as an error naming the file, in its place."""
        for group in group_by_source(refs):
            ref0 = group[0]
            try:
                motion = read_motion(Path(ref0.source))
                betas, gender, layout, shape_file = self.shape(ref0.subject)
                if motion.layout != layout:
                    raise ValueError(f"{ref0.source}: a {motion.layout} motion, but subject {ref0.subject}'s shape "
                                     f"({shape_file}) is {layout}")
                subj = self.subject(ref0.subject)
                model = self.models.get(layout, gender)
            except FRAME_ERRORS as e:
                yield from ((r, frame_error(r.source, e)) for r in group)
                continue
            for start in range(0, len(group), BATCH):
                yield from self._pose_chunk(group[start:start + BATCH], motion, betas, model, subj)

    def _pose_chunk(self, chunk: list[FrameRef], motion: Motion, betas: np.ndarray, model, subj: Subject):
        """(ref, frame or error) for consecutive refs of one motion file, in their order; posed in one batch. A frame
        past the end of the file or with NaN or inf in its pose fails alone, naming the file, frame and array."""
        n = len(motion.poses)
        bad = motion.bad_frames()
        out: list[Frame | Exception] = [
            ValueError(f"{r.source}: has {n} frames, frame {r.index} requested (the file changed after the frames "
                       "were listed?)") for r in chunk]
        for k, r in enumerate(chunk):
            if r.index in bad:
                out[k] = ValueError(f"{r.source}: frame {r.index}: {bad[r.index]}")
        inside = [k for k, r in enumerate(chunk) if 0 <= r.index < n and r.index not in bad]
        try:
            if inside:
                idx = np.array([chunk[k].index for k in inside])
                zero = self.manifest.get("translation", "keep") == "zero"
                posed = model.pose(betas, motion.poses[idx], np.zeros((len(idx), 3)) if zero else motion.trans[idx])
                verts = posed.vertices @ Z_UP_TO_Y_UP.T
                r4 = np.eye(4)
                r4[:3, :3] = Z_UP_TO_Y_UP
                jt = r4 @ posed.joint_transforms[:, :22]
        except FRAME_ERRORS as e:
            for k in inside:
                out[k] = frame_error(chunk[k].source, e)
            inside = []
        for row, k in enumerate(inside):
            r = chunk[k]
            try:
                out[k] = Frame(r.subject, r.sequence, r.index, verts[row], subj.faces, jt[row], subj.rest_joints,
                               subj.skinning_weights)
            except ValueError as e:
                out[k] = frame_error(r.source, e)
        yield from zip(chunk, out, strict=True)

    # ---------------------------------------------------------------------------------------- check

    def check(self, read_files: bool = True) -> CheckReport:
        report = CheckReport()
        report.notes += self.dropped
        if not self.subject_entries:
            why = f" ({len(self.dropped)} dropped by a selection rule, listed under notes)" if self.dropped else ""
            report.missing.append(f"{self.root}: no subjects found for subset {self.manifest.get('subset')}{why}")
        used_folders: dict[Path, set[str]] = {}
        for name, e in self.subject_entries.items():
            folder = self.folder(e["shape"])
            if folder is None or not folder.is_dir():
                report.missing.append(f"{self.root / e['shape']}: folder of subject {name}")
                continue
            try:
                _, gender, _, src = read_shape(folder)
                if e.get("gender") and e["gender"] != gender:
                    report.notes.append(f"{src}: gender {gender}, the manifest says {e['gender']} (the file is used)")
            except (OSError, ValueError) as err:
                report.corrupt.append(str(err))
        for seq in self.all_sequences:
            try:
                path = self.motion_file(seq["motion"])
            except FileNotFoundError as err:
                report.missing.append(str(err).split(" (run")[0])
                continue
            used_folders.setdefault(path.parent, set()).add(path.name)
            try:
                npz_shape(path, "poses")
                if read_files:
                    report.corrupt += [f"{path}: frame {t}: {why}" for t, why in read_motion(path).bad_frames().items()]
            except ValueError as err:
                report.corrupt.append(str(err))
        for folder, used in sorted(used_folders.items()):
            report.extra += [str(p) for p in motion_files(folder).values() if p.name not in used]
        self.expected_counts(report)
        return report
