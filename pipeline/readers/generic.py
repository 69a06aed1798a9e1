"""Generic reader: any creature with a skeleton, from a documented folder of per-frame meshes (docs/generic_format.md).

```
ROOT/
  dataset.yaml                       dataset name, up axis, scale to metres, subjects, sequences and their splits
  subjects/<subject>.npz             rest_joints (J, 3), rest_vertices (V, 3), faces (F, 3) [, skinning_weights (V, J)]
  sequences/<subject>/<sequence>/
      skeleton.npz                   names (J,) str, parents (J,) int, joint_transforms (T, J, 4, 4)
      meshes/<frame>.ply|.obj|.off   one mesh per frame, frames in file-name order, the rest mesh's topology
                                     (vertices shared by faces and in the rest mesh's order: no .stl)
```

Observed frames: a subject file with ``rest_joints`` only (no ``rest_vertices``, no ``faces``) says its frames are
observations of no fixed topology: per frame a point cloud (a PLY without faces; its ``nx ny nz`` normals are used
where present) or a raw scan mesh (open, noisy, in several pieces), in ``meshes/`` or ``points/``. They take the
point-cloud path (``pipeline.stages.pointcloud``): per-frame proxies, point-cloud heat labels, PCA normals where
the input has none. A dataset's subjects are all meshes or all observations.

``joint_transforms[t, j] = [G_j | J_j]`` as in docs/architecture.md section 3 (G_j global rotation relative to the rest
orientation, identity in the rest pose; J_j the posed joint position). ``up: z`` turns everything to Y up
(x' = (x, z, -y); rotations ``G' = R G R^T`` since the rest pose turns too); ``scale`` multiplies lengths.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.checks import bad_rows, nonfinite, numbers
from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.io import read_npz, read_yaml
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.readers.base import Listing, Reader, ReaderInfo, SequenceInfo
from hipnet.pipeline.readers.common import FRAME_ERRORS, CheckReport, frame_error
from hipnet.pipeline.sources.bodymodels import Z_UP_TO_Y_UP
from hipnet.pipeline.sources.manifest import SPLITS, check_split
from hipnet.pipeline.stages.geodesics import require_one_component, weld

MESH_SUFFIXES = (".ply", ".obj", ".off")  # not .stl: it stores every triangle's corners apart, no shared vertices
UP = {"y": np.eye(3), "z": Z_UP_TO_Y_UP}


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of a mesh file in the file's vertex order: trimesh with ``process=False`` (no merging),
    and for OBJ ``maintain_order=True`` (else vertices with several normals or texture coordinates are split and
    reordered, and vertices no face uses are dropped)."""
    import trimesh

    path = Path(path)
    options = {"maintain_order": True} if path.suffix.lower() == ".obj" else {}
    try:
        mesh = trimesh.load(path, process=False, force="mesh", **options)
    except (OSError, ValueError, IndexError, KeyError, TypeError, AttributeError, EOFError, NotImplementedError) as e:
        raise ValueError(f"{path}: cannot read as a mesh ({type(e).__name__}: {e})") from e
    if not len(mesh.vertices) or not len(mesh.faces):
        raise ValueError(f"{path}: cannot read as a mesh (no vertices or faces: empty or another format)")
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def read_observation(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(points (V, 3), faces (F, 3) or (0, 3), normals (V, 3) or None) of a point cloud or raw scan file: a PLY
    without faces is a cloud, whose ``nx ny nz`` vertex properties are its normals; anything with faces a scan
    (its own normals are not read: the scan's winding gives them)."""
    import trimesh

    path = Path(path)
    try:
        loaded = trimesh.load(path, process=False)
        if isinstance(loaded, trimesh.Scene):
            loaded = trimesh.load(path, process=False, force="mesh")
    except (OSError, ValueError, IndexError, KeyError, TypeError, AttributeError, EOFError, NotImplementedError) as e:
        raise ValueError(f"{path}: cannot read as a point cloud or mesh ({type(e).__name__}: {e})") from e
    points = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    if not len(points):
        raise ValueError(f"{path}: cannot read as a point cloud or mesh (no points: empty or another format)")
    if isinstance(loaded, trimesh.Trimesh):
        return points, np.asarray(loaded.faces, dtype=np.int64).reshape(-1, 3), None
    columns = loaded.metadata.get("_ply_raw", {}).get("vertex", {}).get("data", {})
    if all(k in columns for k in ("nx", "ny", "nz")):
        return points, np.zeros((0, 3), dtype=np.int64), np.stack([np.asarray(columns[k], np.float64).reshape(-1)
                                                                    for k in ("nx", "ny", "nz")], axis=1)
    return points, np.zeros((0, 3), dtype=np.int64), None


class GenericReader(Reader):
    """Frames of a folder in the generic format (the reader protocol of ``pipeline.readers.base``). ``meta`` is the
    folder's ``dataset.yaml``."""

    def __init__(self, root: Path, splits: Iterable[str] = SPLITS, manifest: str | Path | None = None,
                 body_models: Path | None = None, strict: bool = True) -> None:
        super().__init__(root, splits)
        marker = self.root / "dataset.yaml"
        if manifest is not None:
            raise ValueError(f"the generic reader reads {marker}, not a manifest ({manifest})")
        if not marker.is_file():
            raise FileNotFoundError(f"{marker} not found: {self.root} is not a dataset in the generic format "
                                    "(docs/generic_format.md)")
        self.meta = read_yaml(marker)
        for key in ("dataset", "sequences"):
            if key not in self.meta:
                raise ValueError(f"{marker}: lacks the key {key!r}")
        subjects = [{"name": n} for n in dict.fromkeys(s["subject"] for s in self.meta["sequences"])]
        check_split({"subjects": subjects, "sequences": self.meta["sequences"]}, where=str(marker))
        up = str(self.meta.get("up", "y")).lower()
        if up not in UP:
            raise ValueError(f"{marker}: up must be y or z, got {up!r}")
        self.rotation = UP[up]
        self.scale = float(self.meta.get("scale", 1.0))
        self.all_sequences = self.meta["sequences"]

    @property
    def name(self) -> str:
        return "generic"

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def info(self) -> ReaderInfo:
        return ReaderInfo(self.dataset, self.name, str(self.root), None,
                          tuple(dict.fromkeys(s["subject"] for s in self.all_sequences)),
                          tuple(SequenceInfo(s["subject"], s["name"], s["split"]) for s in self.all_sequences))

    def sequence_dir(self, subject: str, sequence: str) -> Path:
        return self.root / "sequences" / subject / sequence

    def _skeleton_file(self, subject: str, sequence: str) -> dict[str, np.ndarray]:
        path = self.sequence_dir(subject, sequence) / "skeleton.npz"
        data = read_npz(path, {"names": (None,), "parents": (None,), "joint_transforms": (None, None, 4, 4)})
        n = len(data["names"])
        if data["parents"].shape != (n,) or data["joint_transforms"].shape[1] != n:
            raise ValueError(f"{path}: names, parents and joint_transforms disagree on the number of joints")
        data["joint_transforms"] = numbers(str(path), "joint_transforms", data["joint_transforms"])
        return data

    def bad_frames(self, subject: str, sequence: str) -> dict[int, str]:
        """Frame -> why its joint transforms cannot be used (NaN or inf)."""
        jt = self._skeleton_file(subject, sequence)["joint_transforms"]
        return {int(t): nonfinite("joint_transforms", jt[t]) for t in bad_rows(jt)}

    @property
    def skeleton(self) -> Skeleton:
        """The dataset's skeleton: that of its first sequence (read on first use, so ``check`` can list every
        missing file of a folder whose first ``skeleton.npz`` is absent)."""
        key = ("dataset skeleton",)
        if key not in self._cache:
            self._cache[key] = self._first_skeleton()
        return self._cache[key]

    def _first_skeleton(self) -> Skeleton:
        first = self.meta["sequences"][0]
        path = self.sequence_dir(first["subject"], first["name"]) / "skeleton.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the skeleton of the dataset's first sequence is missing (run "
                                    "`hipnet-data manifest check --dataset generic` for everything that is missing)")
        data = self._skeleton_file(first["subject"], first["name"])
        try:
            return Skeleton(tuple(str(n) for n in data["names"]), tuple(int(p) for p in data["parents"]))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a skeleton: {e}") from None

    def frame_folder(self, subject: str, sequence: str) -> Path:
        """``meshes/``, or for observed frames ``points/`` where that is the folder present."""
        folder = self.sequence_dir(subject, sequence)
        return folder / "points" if (folder / "points").is_dir() and not (folder / "meshes").is_dir() else \
            folder / "meshes"

    def meshes(self, subject: str, sequence: str) -> list[Path]:
        folder = self.frame_folder(subject, sequence)
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES) if folder.is_dir() else []

    @property
    def observed(self) -> bool:
        """Whether the subjects have no rest mesh (their frames are point clouds or raw scans); every subject file
        must say the same."""
        key = ("observed",)
        if key not in self._cache:
            kinds = {}
            for name in dict.fromkeys(s["subject"] for s in self.meta["sequences"]):
                path = self.root / "subjects" / f"{name}.npz"
                kinds[path] = "rest_vertices" not in read_npz(path, {"rest_joints": (None, 3)})
            if len(set(kinds.values())) > 1:
                meshes = [str(p) for p, obs in kinds.items() if not obs]
                clouds = [str(p) for p, obs in kinds.items() if obs]
                raise ValueError(f"{clouds[0]} has no rest mesh (observed frames) but {meshes[0]} has one: a dataset's "
                                 "subjects are all meshes or all observations (a store holds one kind)")
            self._cache[key] = any(kinds.values())
        return self._cache[key]

    def _sequence_refs(self, seq: dict) -> list[FrameRef]:
        files = self.meshes(seq["subject"], seq["name"])
        if not files:
            raise FileNotFoundError(f"{self.frame_folder(seq['subject'], seq['name'])}: no "
                                    f"{'/'.join(MESH_SUFFIXES)} meshes")
        return [FrameRef(seq["subject"], seq["name"], i, str(p)) for i, p in enumerate(files)]

    def list_frames(self) -> Listing:
        """Sequence by sequence: a sequence without meshes fails alone, naming its folder."""
        return self.sequence_listing(self._sequence_refs)

    def frame_refs(self) -> list[FrameRef]:
        return self.listed_refs()

    def _to_y_up(self, points: np.ndarray) -> np.ndarray:
        return self.scale * (np.asarray(points, dtype=np.float64) @ self.rotation.T)

    def subject(self, name: str) -> Subject:
        key = ("subject", name)
        if key not in self._cache:
            path = self.root / "subjects" / f"{name}.npz"
            j = self.skeleton.num_joints
            a = read_npz(path, {"rest_joints": (j, 3)})
            if "rest_vertices" not in a and "faces" not in a:  # observed frames: no fixed topology
                try:
                    subj = Subject(name, self._to_y_up(numbers(str(path), "rest_joints", a["rest_joints"])))
                except ValueError as e:
                    raise ValueError(f"{path}: {e}") from e
                self._cache[key] = subj
                return subj
            a = read_npz(path, {"rest_joints": (j, 3), "rest_vertices": (None, 3), "faces": (None, 3)})
            for entry in ("rest_joints", "rest_vertices", "skinning_weights"):
                if entry in a:
                    a[entry] = numbers(str(path), entry, a[entry])
            if not np.issubdtype(a["faces"].dtype, np.integer):
                raise ValueError(f"{path}: faces has dtype {a['faces'].dtype}, expected integers")
            w = a.get("skinning_weights")
            if w is not None and w.shape != (len(a["rest_vertices"]), j):
                raise ValueError(f"{path}: skinning_weights has shape {w.shape}, expected ({len(a['rest_vertices'])}, {j})")
            try:
                subj = Subject(name, self._to_y_up(a["rest_joints"]), a["faces"], self._to_y_up(a["rest_vertices"]), w)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from e
            wv, wf, _ = weld(subj.rest_vertices, subj.faces)
            require_one_component(len(wv), wf, str(path), what="rest mesh")  # geodesic labels need one shell
            self._cache[key] = subj
        return self._cache[key]

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        r = self.rotation
        for ref in refs:
            try:
                subj = self.subject(ref.subject)
                key = ("skeleton", ref.subject, ref.sequence)
                if key not in self._cache:
                    for old in [k for k in self._cache if k[0] == "skeleton"]:  # one sequence at a time
                        del self._cache[old]
                    self._cache[key] = self._skeleton_file(ref.subject, ref.sequence)
                data = self._cache[key]
                names = tuple(str(n) for n in data["names"])
                if names != self.skeleton.names or tuple(int(p) for p in data["parents"]) != self.skeleton.parents:
                    raise ValueError(f"{self.sequence_dir(ref.subject, ref.sequence)}/skeleton.npz: another skeleton "
                                     "than the dataset's first sequence (a store holds one skeleton)")
                if ref.index >= len(data["joint_transforms"]):
                    raise ValueError(f"{self.sequence_dir(ref.subject, ref.sequence)}/skeleton.npz: no joint "
                                     f"transforms for frame {ref.index} ({ref.source}): it has "
                                     f"{len(data['joint_transforms'])} frames")
                jt = np.array(data["joint_transforms"][ref.index], dtype=np.float64)
                problem = nonfinite("joint_transforms", jt)
                if problem:
                    raise ValueError(f"{self.sequence_dir(ref.subject, ref.sequence)}/skeleton.npz: frame "
                                     f"{ref.index}: {problem}")
                jt[:, :3, :3] = r @ jt[:, :3, :3] @ r.T
                jt[:, :3, 3] = self._to_y_up(jt[:, :3, 3])
                if subj.rest_vertices is None:  # an observation: a point cloud or a raw scan
                    points, faces, normals = read_observation(Path(ref.source))
                    frame = Frame(ref.subject, ref.sequence, ref.index, self._to_y_up(points), faces, jt,
                                  subj.rest_joints, normals=None if normals is None else normals @ r.T)
                else:
                    verts, faces = read_mesh(Path(ref.source))
                    if len(verts) != len(subj.rest_vertices) or not np.array_equal(faces, subj.faces):
                        raise ValueError(f"{ref.source}: faces differ from the rest mesh subjects/{ref.subject}.npz "
                                         f"({len(verts)} vertices and {len(faces)} faces against "
                                         f"{len(subj.rest_vertices)} and {len(subj.faces)}; another topology or "
                                         "another vertex order)")
                    frame = Frame(ref.subject, ref.sequence, ref.index, self._to_y_up(verts), subj.faces, jt,
                                  subj.rest_joints, subj.skinning_weights)
            except FRAME_ERRORS as e:  # named by the file it is about: the frame's own, or its skeleton.npz
                skeleton = f"{self.sequence_dir(ref.subject, ref.sequence)}/skeleton.npz"
                yield ref, e if skeleton in str(e) else frame_error(ref.source, e)
                continue
            yield ref, frame

    def check(self, read_files: bool = True) -> CheckReport:
        """Every missing skeleton, mesh folder and subject file, unreadable files, and sequences whose mesh count
        differs from their number of joint transforms."""
        report = CheckReport()
        for seq in self.meta["sequences"]:
            folder = self.sequence_dir(seq["subject"], seq["name"])
            files = self.meshes(seq["subject"], seq["name"])
            if not files:
                stl = sorted((folder / "meshes").glob("*.[sS][tT][lL]")) if (folder / "meshes").is_dir() else []
                report.missing.append(f"{folder / 'meshes'}: no {'/'.join(MESH_SUFFIXES)} meshes"
                                      + (f" ({len(stl)} .stl files: STL has no shared vertices, convert them to "
                                         ".ply with the rest mesh's vertex order)" if stl else ""))
            n = None
            if not (folder / "skeleton.npz").is_file():
                report.missing.append(str(folder / "skeleton.npz"))
            else:
                try:
                    n = len(self._skeleton_file(seq["subject"], seq["name"])["joint_transforms"])
                except (OSError, ValueError) as e:
                    report.corrupt.append(str(e))
            if files and n is not None and len(files) != n:
                report.counts.append(f"{folder}: {len(files)} meshes but {n} frames of joint transforms")
            if n is not None:
                report.corrupt += [f"{folder / 'skeleton.npz'}: frame {t}: {why}"
                                   for t, why in self.bad_frames(seq["subject"], seq["name"]).items()]
            read = read_mesh
            try:
                if self.subject(seq["subject"]).rest_vertices is None:
                    read = read_observation
            except (OSError, ValueError):
                pass  # the subject file's problem is reported below, once
            for p in files if read_files else []:
                try:
                    read(p)
                except ValueError as e:
                    report.corrupt.append(str(e))
        for name in dict.fromkeys(s["subject"] for s in self.meta["sequences"]):
            path = self.root / "subjects" / f"{name}.npz"
            if not path.is_file():
                report.missing.append(str(path))
                continue
            try:
                self.subject(name)
            except (OSError, ValueError) as e:
                report.corrupt.append(str(e))
        return report
