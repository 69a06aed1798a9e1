"""Small files in the exact published layouts of the licence-gated datasets, with synthetic values.

Body models: a closed capsule-shaped mesh (rings of vertices between two poles: genus 0, one shell) with the real
key names, dtypes and shapes of the SMPL (6890 vertices, 24 joints), AMASS SMPL+H (6890, 52) and SMPL-X (55
joints; fewer vertices here, plus two separate eyeball shells as in the real model) files. Joint regressors are
convex combinations of one ring's vertices, so joints lie inside the body; skinning weights fall off with the
distance to the joints. Sequences: AMASS ``*_poses.npz`` / ``*_stageii.npz``, DFAUST registrations hdf5, a CAPE
release tree.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import trimesh

from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.readers.base import Reader, ReaderInfo, SequenceInfo

SMPL22_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
HAND = [0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]  # 15 finger joints, 0 = the wrist
PARENTS = {
    "smpl": SMPL22_PARENTS + [20, 21],
    "smplh": SMPL22_PARENTS + [20 if p == 0 else 21 + p for p in HAND] + [21 if p == 0 else 36 + p for p in HAND],
    "smplx": SMPL22_PARENTS + [15, 15, 15] + [20 if p == 0 else 24 + p for p in HAND]
    + [21 if p == 0 else 39 + p for p in HAND],
}
# (x, y) of the 22 body joints in a 1.7 m capsule facing +Z (SMPL's rest frame: Y up)
BODY_XY = [(0, 0.95), (0.06, 0.88), (-0.06, 0.88), (0, 1.05), (0.06, 0.5), (-0.06, 0.5), (0, 1.18), (0.05, 0.12),
           (-0.05, 0.12), (0, 1.3), (0.04, 0.08), (-0.04, 0.08), (0, 1.45), (0.04, 1.4), (-0.04, 1.4), (0, 1.55),
           (0.08, 1.38), (-0.08, 1.38), (0.08, 1.15), (-0.08, 1.15), (0.08, 0.95), (-0.08, 0.95)]
REAL_SIZES = {"smpl": (84, 82), "smplh": (84, 82), "smplx": (30, 32)}  # rings x columns (+2 poles)


def capsule(rings: int, cols: int, height: float = 1.7, rx: float = 0.2, rz: float = 0.13):
    """Closed genus-0 mesh: ``rings * cols + 2`` vertices, ``2 * V - 4`` faces. Returns (V, F, ring heights)."""
    t = (np.arange(rings) + 0.5) / rings
    y = t * height
    profile = np.sqrt(np.clip(1 - np.abs(2 * t - 1) ** 8, 0, None))
    phi = 2 * np.pi * np.arange(cols) / cols
    # bumps break the rotational symmetry, so each part's orientation can be read from its surface
    bumps = 1 + 0.12 * np.sin(3 * phi[None] + 9 * y[:, None]) + 0.08 * np.cos(5 * phi[None] - 13 * y[:, None])
    v = np.stack([(rx * profile)[:, None] * bumps * np.cos(phi), np.repeat(y[:, None], cols, 1),
                  (rz * profile)[:, None] * bumps * np.sin(phi)], axis=-1).reshape(-1, 3)
    v = np.concatenate([v, [[0, 0, 0], [0, height, 0]]])
    bottom, top = rings * cols, rings * cols + 1
    faces = []
    for r in range(rings - 1):
        for c in range(cols):
            a, b = r * cols + c, r * cols + (c + 1) % cols
            faces += [[a, a + cols, b], [b, a + cols, b + cols]]
    for c in range(cols):
        faces += [[bottom, c, (c + 1) % cols],
                  [top, (rings - 1) * cols + (c + 1) % cols, (rings - 1) * cols + c]]
    return v, np.array(faces), y


def _octahedron(centre, r):
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]) * r + centre
    f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    return v, f


def joint_targets(kind: str) -> np.ndarray:
    parents = PARENTS[kind]
    xy = list(BODY_XY)
    for j in range(22, len(parents)):
        px, py = xy[parents[j]]
        xy.append((px, py - 0.03))
    return np.array([[x, y, 0.0] for x, y in xy])


def body_model_arrays(kind: str, seed: int = 0, num_betas: int | None = None, rigid: bool = False) -> dict[str, np.ndarray]:
    """A synthetic body model with the real keys, dtypes and (for SMPL and SMPL+H) shapes. ``rigid``: each vertex
    follows only its nearest joint (one-hot skinning weights), so every part moves rigidly."""
    rng = np.random.default_rng(seed)
    rings, cols = REAL_SIZES[kind]
    v, f, ring_y = capsule(rings, cols)
    if kind == "smplx":  # separate eyeball shells, as in the real SMPL-X mesh
        for x in (0.03, -0.03):
            ev, ef = _octahedron(np.array([x, 1.6, 0.1]), 0.01)
            f = np.concatenate([f, ef + len(v)])
            v = np.concatenate([v, ev])
    parents = PARENTS[kind]
    n_j = len(parents)
    j_reg = np.zeros((n_j, len(v)))
    phi = 2 * np.pi * np.arange(cols) / cols
    for j, (x, y, _) in enumerate(joint_targets(kind)):
        r = int(np.argmin(np.abs(ring_y - y)))
        ring = v[r * cols:(r + 1) * cols]
        rx = 0.5 * np.abs(ring[:, 0]).max()
        a = min(1.0, 2 * abs(x) / rx)
        w = 1 + a * np.cos(phi - (0.0 if x >= 0 else np.pi))
        j_reg[j, r * cols:(r + 1) * cols] = w / w.sum()
    joints = j_reg @ v
    d = np.linalg.norm(v[:, None] - joints[None], axis=-1)
    w = np.exp(-((d / 0.08) ** 2))
    w[w < np.sort(w, axis=1)[:, -4:-3]] = 0
    if rigid:
        w = np.eye(n_j)[d.argmin(axis=1)]
    weights = w / w.sum(1, keepdims=True)
    nb = num_betas or {"smpl": 10, "smplh": 16, "smplx": 400}[kind]
    normal = v * np.array([1, 0, 1])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    k = np.arange(nb)
    pattern = np.cos(v[:, 1:2] * (1 + k) * 2 + np.arctan2(v[:, 2:3], v[:, 0:1]) * (k % 3))  # V x B
    shapedirs = 0.01 * normal[:, :, None] * pattern[:, None, :]
    posedirs = (rng.normal(size=(len(v), 3, 9 * (n_j - 1))) * 1e-4).astype(np.float32)
    kintree = np.array([parents, range(n_j)], dtype=np.int64)
    kintree[0, 0] = 4294967295  # the real files store the root's parent as uint32 -1
    return {
        "v_template": v, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": j_reg, "weights": weights,
        "kintree_table": kintree, "f": f.astype(np.uint32), "J": joints,
    }


def write_amass_body_models(root: Path, kinds=("smplh",), genders=("male", "female", "neutral")) -> Path:
    """AMASS layout ``<root>/<kind>/<gender>/model.npz``, with an object-dtype key as in the real files."""
    for kind in kinds:
        arrays = body_model_arrays(kind)
        for g in genders:
            out = root / kind / g
            out.mkdir(parents=True, exist_ok=True)
            np.savez(out / "model.npz", **arrays, bs_style=np.array("lbs"),
                     pose_training_info=np.array({"note": "pickled object"}, dtype=object))
    return root


class _FakeCh:
    """What chumpy's Ch pickles as: a class ``chumpy.ch.Ch`` whose state dict holds the array as ``x``."""

    def __init__(self, x) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self._dirty_vars = {"x"}
        self._itr = None
        self._make_dense = False
        self._make_sparse = False
        self._depends_on_deps = {}

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


def pickle_with_chumpy(build, protocol: int = 2) -> bytes:
    """Pickle ``build(Ch)`` where ``Ch`` pickles as ``chumpy.ch.Ch``: a stand-in ``chumpy.ch`` module is registered
    while pickling and removed again (chumpy itself is not installed)."""
    mod, pkg = types.ModuleType("chumpy.ch"), types.ModuleType("chumpy")
    _FakeCh.__module__, _FakeCh.__qualname__, _FakeCh.__name__ = "chumpy.ch", "Ch", "Ch"
    mod.Ch, pkg.ch = _FakeCh, mod
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
    try:
        return pickle.dumps(build(_FakeCh), protocol=protocol)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_dfaust_male_model(base: Path):
    """``base/models/basicModel_m_lbs_10_207_0_v1.0.0.pkl`` (a rigid synthetic SMPL v1.0 model, the file name
    DFAUST's male registrations are read with), loaded as a ``BodyModel``."""
    from hipnet.pipeline.sources.bodymodels import BodyModel

    path = base / "models" / "basicModel_m_lbs_10_207_0_v1.0.0.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(smpl_pkl_bytes(rigid=True)[0])
    return BodyModel.load(path)


def smpl_pkl_bytes(seed: int = 0, rigid: bool = False) -> tuple[bytes, dict[str, np.ndarray]]:
    """An SMPL v1.0-style pickle: chumpy arrays (``chumpy.ch.Ch``) and a scipy CSC ``J_regressor``."""
    import scipy.sparse

    a = body_model_arrays("smpl", seed, rigid=rigid)
    blob = pickle_with_chumpy(lambda ch: {
        "v_template": ch(a["v_template"]), "shapedirs": ch(a["shapedirs"]), "posedirs": a["posedirs"].astype(np.float64),
        "J_regressor": scipy.sparse.csc_matrix(a["J_regressor"]), "weights": ch(a["weights"]),
        "kintree_table": a["kintree_table"], "f": a["f"], "J": ch(a["J"]), "bs_style": "lbs", "bs_type": "lrotmin",
    })
    return blob, a


# ------------------------------------------------------------------------------------------------ sequences


def random_pose(rng, frames: int, width: int, scale: float = 0.1) -> np.ndarray:
    poses = rng.normal(scale=scale, size=(frames, width))
    poses[:, :3] = rng.normal(scale=0.2, size=(frames, 3)) + np.array([np.pi / 2, 0, 0])  # Z-up capture
    return poses


def write_amass_smplh(path: Path, rng, frames: int = 3, gender="female", betas=None) -> dict:
    """``<name>_poses.npz`` of the SMPL+H release (156-wide poses, ``mocap_framerate``)."""
    data = {
        "poses": random_pose(rng, frames, 156), "trans": rng.normal(size=(frames, 3)),
        "betas": rng.normal(size=16) if betas is None else np.asarray(betas), "gender": np.array(gender),
        "mocap_framerate": np.array(120.0), "dmpls": rng.normal(size=(frames, 8)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def write_amass_smplx(path: Path, rng, frames: int = 3, gender="male") -> dict:
    """``<name>_stageii.npz`` of the SMPL-X release (165-wide poses, ``mocap_frame_rate``)."""
    poses = random_pose(rng, frames, 165)
    data = {
        "poses": poses, "trans": rng.normal(size=(frames, 3)), "betas": rng.normal(size=16),
        "gender": np.array(gender), "surface_model_type": np.array("smplx"), "mocap_frame_rate": np.array(120.0),
        "root_orient": poses[:, :3], "pose_body": poses[:, 3:66], "pose_hand": poses[:, 75:],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def write_generic(root: Path, frames: int = 3, sequences=(("crawl", "train"), ("curl", "train")), seed: int = 4) -> Path:
    """A three-joint worm in the generic format (docs/generic_format.md), Y up, metres: a capsule bent a little
    about its middle joint in each frame, one ``.ply`` per frame."""
    import trimesh
    import yaml

    rng = np.random.default_rng(seed)
    v, f, _ = capsule(16, 12, height=1.2, rx=0.15, rz=0.12)
    rest_joints = np.array([[0, 0.2, 0], [0, 0.6, 0], [0, 1.0, 0]])
    w = np.exp(-((np.abs(v[:, 1:2] - rest_joints[None, :, 1]) / 0.15) ** 2))
    w /= w.sum(1, keepdims=True)
    (root / "subjects").mkdir(parents=True, exist_ok=True)
    np.savez(root / "subjects" / "worm.npz", rest_joints=rest_joints, rest_vertices=v, faces=f, skinning_weights=w)
    for name, _ in sequences:
        folder = root / "sequences" / "worm" / name
        (folder / "meshes").mkdir(parents=True, exist_ok=True)
        jt = np.tile(np.eye(4), (frames, 3, 1, 1))
        jt[:, :, :3, 3] = rest_joints + rng.normal(scale=0.01, size=(frames, 1, 3))
        np.savez(folder / "skeleton.npz", names=np.array(["base", "middle", "tip"]), parents=np.array([-1, 0, 1]),
                 joint_transforms=jt)
        for t in range(frames):
            trimesh.Trimesh(v + jt[t, 0, :3, 3] - rest_joints[0], f, process=False).export(
                folder / "meshes" / f"{t:04d}.ply")
    (root / "dataset.yaml").write_text(yaml.safe_dump({
        "dataset": "worms", "sequences": [{"subject": "worm", "name": n, "split": s} for n, s in sequences]}))
    return root


class BallsReader(Reader):
    """Two subjects, balls of radius 0.15 and 0.25 about the pelvis, ``frames`` frames each, on a two-joint skeleton
    (the second joint 0.2 m above the first): the tiny store the application and fault tests train on."""

    RADII = {"small": 0.15, "large": 0.25}
    dataset = name = "balls"
    skeleton = Skeleton(("pelvis", "top"), (-1, 0))

    def __init__(self, root="balls", splits=("train",), frames: int = 3, subdivisions: int = 4):
        super().__init__(root, splits)
        self.frames, self.subdivisions = frames, subdivisions
        self.all_sequences = [{"subject": s, "name": "still", "split": "train"} for s in self.RADII]
        self.jt = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
        self.jt[1, 1, 3] = 0.2

    @property
    def info(self):
        return ReaderInfo(self.dataset, self.name, str(self.root), None, tuple(self.RADII),
                          tuple(SequenceInfo(s, "still", "train", self.frames) for s in self.RADII))

    def frame_refs(self):
        return [FrameRef(s, "still", k, f"{self.name}/{s}") for s in self.RADII for k in range(self.frames)]

    def _mesh(self, name):
        m = trimesh.creation.icosphere(self.subdivisions, radius=self.RADII[name])
        return np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32)

    def subject(self, name):
        v, f = self._mesh(name)
        return Subject(name, self.jt[:, :3, 3], f, v)

    def load(self, refs):
        for r in refs:
            v, f = self._mesh(r.subject)
            yield r, Frame(r.subject, r.sequence, r.index, v, f, self.jt, self.jt[:, :3, 3])


def write_point_ply(path: Path, points: np.ndarray, normals: np.ndarray | None = None) -> Path:
    """An ASCII PLY point cloud (no faces), with ``nx ny nz`` vertex properties when ``normals`` are given."""
    props = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals is not None else [])
    rows = np.asarray(points, dtype=np.float64) if normals is None else np.hstack([points, normals])
    header = ["ply", "format ascii 1.0", f"element vertex {len(rows)}", *[f"property float {p}" for p in props],
              "end_header"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + "\n".join(" ".join(f"{x:.7g}" for x in r) for r in rows) + "\n")
    return path


def write_cape(base: Path, frames: int = 3) -> dict:
    """A CAPE release of one subject (00032) and one sequence of ``frames`` frames in the published layout, with
    SMPL body models and a manifest: ``{"root", "models", "manifest"}``."""
    import pickle

    import yaml

    from hipnet.pipeline.sources.bodymodels import BodyModel

    models = write_amass_body_models(base / "models", kinds=("smpl",), genders=("male",))
    model = BodyModel.load(models / "smpl" / "male" / "model.npz")
    root = base / "raw" / "cape_release"
    pose = np.random.default_rng(2).normal(scale=0.1, size=(frames, 72))
    posed = model.pose(np.zeros(10), pose)
    (root / "minimal_body_shape" / "00032").mkdir(parents=True)
    np.save(root / "minimal_body_shape" / "00032" / "00032_minimal.npy", model.rest_vertices(np.zeros(10)))
    for k in range(frames):
        path = root / "sequences" / "00032" / "shortlong_hips" / f"shortlong_hips.{k + 1:06d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, v_posed=posed.vertices[k], pose=pose[k], transl=np.zeros(3))
    (root / "misc").mkdir()
    (root / "misc" / "subj_genders.pkl").write_bytes(pickle.dumps({"00032": "male"}, protocol=2))
    m = base / "tiny_cape.yaml"
    m.write_text(yaml.safe_dump({"dataset": "tiny_cape", "reader": "cape", "subjects": [{"name": "00032"}],
                                 "sequences": [{"subject": "00032", "name": "shortlong_hips", "split": "train"}]}))
    return {"root": base / "raw", "models": models, "manifest": m}


def write_dfaust(base: Path, frames: int = 4) -> dict:
    """The pieces of a DFAUST registrations dataset: the male SMPL model, a manifest of subject 50002's sequence
    ``hips``, and that sequence's ``frames`` posed vertices (T, V, 3) with the model's faces (write them with
    ``write_registrations``): ``{"models", "manifest", "verts", "faces"}``."""
    import yaml

    model = write_dfaust_male_model(base)
    pose = np.zeros((frames, 72))
    pose[:, 3:66] = np.random.default_rng(5).normal(scale=0.2, size=(frames, 63))
    m = base / "tiny_dfaust.yaml"
    m.write_text(yaml.safe_dump({"dataset": "tiny_dfaust", "reader": "dfaust", "subjects": [{"name": "50002",
                                 "gender": "male"}], "sequences": [{"subject": "50002", "name": "hips",
                                                                    "split": "train"}]}))
    return {"models": base / "models", "manifest": m, "verts": model.pose(np.zeros(10), pose).vertices,
            "faces": model.faces}


def write_registrations(raw: Path, verts: np.ndarray, faces: np.ndarray) -> Path:
    """``raw/registrations_m.hdf5`` as DFAUST publishes it: ``50002_hips`` (V, 3, T) and ``faces``."""
    import h5py

    raw.mkdir(parents=True, exist_ok=True)
    with h5py.File(raw / "registrations_m.hdf5", "w") as f:
        f["50002_hips"] = verts.transpose(1, 2, 0)
        f["faces"] = faces
    return raw
