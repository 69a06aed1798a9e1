"""DFAUST reader, three routes to the same manifests (``dfaust``, ``dfaust_snarf``):

- **AMASS route** (what NASA, SNARF and HIPNet call DFAUST): the ``DFaust_67`` subset of AMASS posed through the
  user's SMPL+H models, translation zeroed; read by ``AmassReader``.
- **Registrations route**: the raw registered meshes ``registrations_{m,f}.hdf5`` (key ``{sid}_{seq}``, array
  ``(6890, 3, T)``, shared ``faces``). They carry no skeleton, so with the user's SMPL model:
  joints ``J = J_regressor @ V`` (22 body joints); each joint's global rotation ``G_j`` is the weighted Kabsch fit
  of the vertices it dominates (argmax of SMPL's skinning weights) from the subject's rest mesh to the frame; the
  subject's rest mesh is the first frame (the first without NaN or inf) of its first manifest sequence unposed by
  inverse LBS with per-part rigid fits (iterated from the SMPL template, so rotations are relative to SMPL's rest
  orientation of each part; the subject's shape differences from the template bias them slightly; exact when parts
  move rigidly). The
  registrations' frame is turned into AMASS's (+90 degrees about x, manifest key ``registrations_rotation_x_deg``)
  and then Y up like every AMASS frame.

- **Raw-scan route** (``route: scans``, ``pipeline.readers.dfaust_scans``): the scanner's own per-frame meshes
  (what IGR trains on), with the skeleton of the matching registration frame; observed frames (point-cloud path).

``open_dfaust`` picks the route from what ``root`` holds (the manifest's ``route`` key can force one): the AMASS
folder when present, else the registrations; the raw scans only when the manifest says ``route: scans``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.checks import bad_rows, nonfinite, numbers, rows_text
from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.io import one_line
from hipnet.pipeline.readers.amass import AmassReader, subset_dir
from hipnet.pipeline.readers.base import group_by_source
from hipnet.pipeline.readers.common import FRAME_ERRORS, CheckReport, ManifestReader, frame_error
from hipnet.pipeline.sources.bodymodels import Z_UP_TO_Y_UP, BodyModel, merge_weights
from hipnet.pipeline.sources.manifest import SPLITS, load_manifest
from hipnet.pipeline.sources.selection import select_frames

REGISTRATION_FILES = {"male": "registrations_m.hdf5", "female": "registrations_f.hdf5"}
UNPOSE_ITERATIONS = 4
ROUTES = ("auto", "amass", "registrations", "scans")


def rotation_x(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def open_dfaust(root: Path, splits: Iterable[str] = SPLITS, manifest: str | Path | None = None,
                body_models: Path | None = None, strict: bool = True) -> ManifestReader:
    """The reader for a DFAUST manifest (default ``dfaust``): the AMASS route if ``root`` has the DFaust subset,
    else the registrations."""
    manifest = manifest or "dfaust"
    route = load_manifest(manifest).get("route", "auto")
    if route not in ROUTES:
        raise ValueError(f"manifest {manifest}: route must be one of {ROUTES}, got {route!r}")
    if route == "auto":
        has_amass = subset_dir(Path(root), "DFaust") is not None
        has_reg = any(find_registrations(Path(root), g) for g in REGISTRATION_FILES)
        route = "amass" if has_amass or not has_reg else "registrations"
    if route == "scans":
        from hipnet.pipeline.readers.dfaust_scans import DfaustScansReader

        return DfaustScansReader(root, splits, manifest=manifest, body_models=body_models, strict=strict)
    cls = AmassReader if route == "amass" else DfaustRegistrationsReader
    return cls(root, splits, manifest=manifest, body_models=body_models, strict=strict)


def find_registrations(root: Path, gender: str) -> Path | None:
    name = REGISTRATION_FILES[gender]
    for p in [root / name, *sorted(root.glob(f"*/{name}"))]:
        if p.is_file():
            return p
    return None


# what h5py raises on a damaged file past opening it (a broken link, a truncated dataset, a header it cannot parse)
HDF5_ERRORS = (OSError, KeyError, TypeError, RuntimeError, ValueError, IndexError)


def open_hdf5(path: Path):
    """``h5py.File(path, "r")``; a file that cannot be opened is a ValueError naming it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: cannot open as hdf5 ({one_line(e)})") from e


def kabsch(rest: np.ndarray, posed: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rotation R (..., 3, 3) minimising sum_i w_i |R rest_i - posed_i|^2 for centred point sets.

    Args:
        rest: (n, 3) centred rest points; posed: (..., n, 3) centred posed points; weights: (n,).
    """
    h = np.einsum("n,na,...nb->...ab", weights, rest, posed)  # ... x 3 x 3: sum w rest posed^T
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    fix = np.broadcast_to(np.eye(3), h.shape).copy()
    fix[..., 2, 2] = d
    return np.swapaxes(vt, -1, -2) @ fix @ np.swapaxes(u, -1, -2)


def part_fits(model: BodyModel, rest: np.ndarray, posed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigid fit (G, t) per model joint, ``posed ~ G rest + t`` on the vertices the joint dominates (argmax of the
    model's skinning weights): weighted Kabsch about the weighted centroids. Returns G (T, J, 3, 3), t (T, J, 3).

    Args:
        rest: (V, 3) rest-pose vertices; posed: (T, V, 3) posed vertices of the same topology.
    """
    weights = model.weights[model.keep]
    owner = weights.argmax(axis=1)
    n = len(posed)
    g = np.tile(np.eye(3), (n, model.num_joints, 1, 1))
    t = np.zeros((n, model.num_joints, 3))
    for j in range(model.num_joints):
        part = np.flatnonzero(owner == j)
        if len(part) < 3:  # too few vertices to fix a rotation: move with the parent
            if j > 0:
                g[:, j], t[:, j] = g[:, model.parents[j]], t[:, model.parents[j]]
            continue
        w = weights[part, j] / weights[part, j].sum()
        c_rest = w @ rest[part]
        c_posed = np.einsum("n,tna->ta", w, posed[:, part])
        g[:, j] = kabsch(rest[part] - c_rest, posed[:, part] - c_posed[:, None], w)
        t[:, j] = c_posed - np.einsum("tab,b->ta", g[:, j], c_rest)
    return g, t


def unpose(model: BodyModel, posed: np.ndarray, iterations: int = UNPOSE_ITERATIONS) -> np.ndarray:
    """Rest-pose vertices (V, 3) of one posed registration (V, 3) by inverse LBS with the per-part rigid fits,
    starting from the template (so rotations are relative to the template's rest orientation of each part)."""
    w = model.weights[model.keep]
    rest = model.v_template[model.keep].copy()
    for _ in range(iterations):
        g, t = part_fits(model, rest, posed[None])
        m = np.einsum("vj,jab->vab", w, g[0])
        rest = np.linalg.solve(m, (posed - w @ t[0])[..., None])[..., 0]
    return rest


class DfaustRegistrationsReader(ManifestReader):
    """DFAUST frames from the registrations (see the module docstring). Reader protocol of ``readers.base``."""

    reader_kind = "dfaust"

    def resolve(self) -> tuple[dict[str, dict], list[dict]]:
        entries = {str(s["name"]): {**s, "name": str(s["name"])} for s in self.manifest["subjects"]}
        seqs = [{**s, "subject": str(s["subject"]), "name": str(s["name"])} for s in self.manifest["sequences"]]
        if not seqs:
            raise ValueError(f"manifest {self.dataset}: the registrations route needs its sequences listed")
        for e in entries.values():
            if e.get("gender") not in REGISTRATION_FILES:
                raise ValueError(f"manifest {self.dataset}: subject {e['name']} needs gender male or female")
        return entries, seqs

    def source(self, subject: str, sequence: str) -> tuple[Path, str]:
        gender = self.subject_entries[subject]["gender"]
        path = find_registrations(self.root, gender)
        if path is None:
            raise FileNotFoundError(f"{self.root}: no {REGISTRATION_FILES[gender]}")
        return path, f"{subject}_{sequence}"

    def _frame_refs_of(self, seq: dict) -> list[FrameRef]:
        path, key = self.source(seq["subject"], seq["name"])
        src = f"{path}:{key}"
        if src not in self._lengths:
            self._lengths[src] = self.sequence_length(seq["subject"], seq["name"])
        idx = select_frames(self._lengths[src], self.manifest.get("frames"), key=f"{seq['subject']}/{seq['name']}")
        return [FrameRef(seq["subject"], seq["name"], int(i), src) for i in idx]

    def _to_y_up(self) -> np.ndarray:
        return Z_UP_TO_Y_UP @ rotation_x(float(self.manifest.get("registrations_rotation_x_deg", 90.0)))

    def read(self, subject: str, sequence: str, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vertices (T, V, 3) Y up, faces) of some frames (increasing, unique) of one sequence. The sequence must
        have the SMPL model's vertex count; frames may hold NaN or inf (``bad_frames`` finds them)."""
        path, key = self.source(subject, sequence)
        n_model = int(self.model(subject).keep.sum())
        with open_hdf5(path) as f:
            try:
                if key not in f:
                    raise ValueError(f"{path}: no sequence {key}")
                data = f[key]
                if data.ndim != 3 or data.shape[:2] != (n_model, 3):
                    raise ValueError(f"{path}:{key} has shape {data.shape}, expected ({n_model}, 3, T): the "
                                     f"{self.subject_entries[subject]['gender']} SMPL model has {n_model} vertices")
                v = numbers(f"{path}:{key}", "vertices", data[:, :, np.asarray(index)]).transpose(2, 0, 1)
                faces = np.asarray(f["faces"]) if "faces" in f else None
            except HDF5_ERRORS as e:
                if str(path) in str(e):
                    raise
                raise ValueError(f"{path}:{key}: cannot read ({type(e).__name__}: {one_line(e)})") from e
        return v @ self._to_y_up().T, faces

    def sequence_length(self, subject: str, sequence: str) -> int:
        """Frames of one sequence in the file as it is now."""
        path, key = self.source(subject, sequence)
        with open_hdf5(path) as f:
            try:
                if key not in f:
                    raise ValueError(f"{path}: no sequence {key}")
                return int(f[key].shape[-1])
            except HDF5_ERRORS as e:
                if str(path) in str(e):
                    raise
                raise ValueError(f"{path}:{key}: cannot read ({type(e).__name__}: {one_line(e)})") from e

    def model(self, subject: str) -> BodyModel:
        return self.models.get("smpl", self.subject_entries[subject]["gender"])

    def subject(self, name: str) -> Subject:
        return self.registration_subject(name)

    def registration_subject(self, name: str) -> Subject:
        """The subject's rest mesh unposed from its first registration, rest joints and merged weights."""
        key = ("subject", name)
        if key not in self._cache:
            model = self.model(name)
            first = next(s for s in self.all_sequences if s["subject"] == name)
            posed, faces = self.read(name, first["name"], np.array([0]))
            if not np.isfinite(posed).all():  # a damaged first frame: look further (rarely needed, so read lazily)
                posed, faces = self.read(name, first["name"], np.arange(self.sequence_length(name, first["name"])))
            path, seq_key = self.source(name, first["name"])
            if faces is not None and not np.array_equal(np.asarray(faces, dtype=np.int64), model.faces):
                raise ValueError(f"{path}: faces differ from the SMPL model's")
            finite = np.flatnonzero(np.isfinite(posed.reshape(len(posed), -1)).all(axis=1))
            if not len(finite):
                raise ValueError(f"{path}:{seq_key}: no frame without NaN or inf to take subject {name}'s rest mesh "
                                 "from")
            try:
                rest = unpose(model, posed[finite[0]])  # the first finite frame (frame 0 unless it is damaged)
                rest_joints = (model.J_regressor[:, model.keep] @ rest)[:22]
                weights = merge_weights(model.weights[model.keep], model.parents, 22)
                self._cache[key] = Subject(name, rest_joints, model.faces, rest, weights)
            except (ValueError, ArithmeticError) as e:  # LinAlgError (a ValueError) on vertices no body takes
                raise ValueError(f"{path}:{seq_key}: frame {finite[0]}: cannot unpose subject {name}'s rest mesh "
                                 f"from it ({type(e).__name__}: {one_line(e)})") from e
        return self._cache[key]

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        """One result per ref, in the order given; a frame past the end of its sequence, or one whose reading or
        fitting fails, comes back as an error naming the file, in its place."""
        for group in group_by_source(refs):
            r0 = group[0]
            out: list[Frame | Exception] = []
            inside: list[int] = []
            try:
                subj, model = self.registration_subject(r0.subject), self.model(r0.subject)
                n = self.sequence_length(r0.subject, r0.sequence)  # now, not when the refs were listed
                out = [ValueError(f"{r.source}: has {n} frames, frame {r.index} requested") for r in group]
                inside = [k for k, r in enumerate(group) if 0 <= r.index < n]
                if inside:
                    # h5py reads increasing, unique indices: read those, then put each frame back at its ref
                    wanted, rows = np.unique([group[k].index for k in inside], return_inverse=True)
                    verts, _ = self.read(r0.subject, r0.sequence, wanted)
                    verts = verts[rows]
                    bad = set(bad_rows(verts).tolist())
                    for row in bad:  # a damaged frame fails alone, before the fit sees it
                        k = inside[row]
                        out[k] = ValueError(f"{group[k].source}: frame {group[k].index}: "
                                            f"{nonfinite('vertices', verts[row])}")
                    good = [row for row in range(len(inside)) if row not in bad]
                    inside = [inside[row] for row in good]
                    verts = verts[good]
                if inside:
                    joints = np.einsum("jv,tva->tja", model.J_regressor[:, model.keep], verts)
                    g, _ = part_fits(model, np.asarray(subj.rest_vertices, dtype=np.float64), verts)
                    jt = np.zeros((len(inside), 22, 4, 4))
                    jt[..., :3, :3], jt[..., :3, 3], jt[..., 3, 3] = g[:, :22], joints[:, :22], 1.0
                    for row, k in enumerate(inside):
                        r = group[k]
                        try:
                            out[k] = Frame(r.subject, r.sequence, r.index, verts[row], subj.faces, jt[row],
                                           subj.rest_joints, subj.skinning_weights)
                        except ValueError as e:
                            out[k] = frame_error(r.source, e)
            except (*FRAME_ERRORS, StopIteration) as e:
                failed = set(inside) if out else set(range(len(group)))  # past the end stays that frame's error
                out = [frame_error(r.source, e) if k in failed else out[k] for k, r in enumerate(group)]
            yield from zip(group, out, strict=True)

    def check(self, read_files: bool = True) -> CheckReport:
        import h5py

        report = CheckReport()
        used: dict[Path, set[str]] = {}
        for seq in self.all_sequences:
            try:
                path, key = self.source(seq["subject"], seq["name"])
            except FileNotFoundError as e:
                report.missing.append(str(e))
                continue
            used.setdefault(path, set()).add(key)
        for path, keys in sorted(used.items()):
            try:
                with h5py.File(path, "r") as f:
                    present = set(f.keys()) - {"faces"}
                    for key in sorted(keys - present):
                        report.missing.append(f"{path}: sequence {key}")
                    report.extra += [f"{path}: sequence {k}" for k in sorted(present - keys)]
                    for key in sorted(keys & present) if read_files else []:
                        data = f[key]
                        if data.ndim != 3 or data.shape[:2] != (6890, 3):
                            report.corrupt.append(f"{path}:{key} has shape {data.shape}, expected (6890, 3, T)")
                        elif data.dtype.kind != "f":
                            report.corrupt.append(f"{path}:{key} has dtype {data.dtype}, expected real numbers")
                        else:
                            bad = bad_rows(np.asarray(data).transpose(2, 0, 1))
                            if len(bad):
                                report.corrupt.append(f"{path}:{key}: {rows_text(bad)}: vertices have NaN or inf "
                                                      "values")
            except (OSError, ValueError, KeyError, TypeError) as e:
                report.corrupt.append(f"{path}: cannot open as hdf5 ({e})")
        report.missing = list(dict.fromkeys(report.missing))
        self.expected_counts(report)
        return report
