"""SMPL-family body models (SMPL, SMPL+H, SMPL-X) from files the user supplies, posed through ``smplx.lbs``.

The model files are licence-gated, so nothing here ships or downloads them: ``--body-models DIR`` points at the
user's copies. ``.npz`` files are read without pickle (only the keys we need, so object arrays elsewhere in a file
do no harm); SMPL v1.0 ``.pkl`` files are read with ``pipeline.sources.safepickle`` (no chumpy, no code execution);
``hipnet-data convert-body-model`` writes a clean ``.npz`` once.

Posing (``BodyModel.pose``) is smplx's own math: the steps of ``smplx.lbs.lbs`` (blend shapes, joint regression,
pose correctives, ``batch_rigid_transform``, skinning) with the kinematic chain run once, its transforms both
skinning the vertices and returned in the convention of docs/architecture.md section 3: ``[G_j | J_j]`` with G_j the global
rotation relative to the rest orientation and J_j the posed joint.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.components import keep_vertices, largest_component
from hipnet.pipeline.core.io import write_npz

# What the number of pose-corrective blend shapes says about the model: posedirs.shape[-1] // 9 + 1 joints.
KINDS = {24: "smpl", 52: "smplh", 55: "smplx"}
GENDERS = ("male", "female", "neutral")
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
# Y up from Z up (AMASS): x' = (x, z, -y).
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


AMASS_MODEL_HINT = ("AMASS motions need the body models from the AMASS download, with 16 shape coefficients: "
                    "smplh/<gender>/model.npz (SMPL+H) or smplx/<gender>/model.npz (SMPL-X) under --body-models")


def smplx_identity_count(n_shapedirs: int) -> tuple[int, str]:
    """How many of an SMPL-X file's ``n_shapedirs`` blend shapes are identity (the rest are expression), and why.

    The files do not say: v1.1 and the AMASS models hold 300 identity + 100 expression components, v1.0 holds
    10 + 10. So 400 or more is read as 300 identity, anything else as 10."""
    if n_shapedirs >= 400:
        return 300, (f"its {n_shapedirs} blend shapes were read as 300 identity + {n_shapedirs - 300} expression, "
                     "the SMPL-X v1.1 / AMASS layout")
    return min(n_shapedirs, 10), (f"its {n_shapedirs} blend shapes were read as {min(n_shapedirs, 10)} identity + "
                                  f"{max(n_shapedirs - 10, 0)} expression, the SMPL-X v1.0 layout (10 + 10), since "
                                  "fewer than 400 means it is not the v1.1 / AMASS layout (300 + 100)")


def read_model_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a body-model file (``.npz`` without pickle, or ``.pkl`` through the safe unpickler)."""
    path = Path(path)
    if path.suffix == ".pkl":
        from hipnet.pipeline.sources.safepickle import load_pickle

        data = load_pickle(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
        out = {k: v for k, v in data.items() if k in REQUIRED_KEYS}
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in REQUIRED_KEYS if k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{path}: cannot read as a body-model npz ({type(e).__name__}: {e})") from e
    missing = [k for k in REQUIRED_KEYS if k not in out]
    if missing:
        raise ValueError(f"{path}: not a SMPL-family model file, missing keys {missing}")
    return {k: np.asarray(v) for k, v in out.items()}


def convert_body_model(src: Path, dst: Path) -> dict[str, tuple]:
    """Write the arrays a body model needs from ``src`` (``.pkl`` or ``.npz``) to a clean ``.npz``. Returns shapes."""
    arrays = read_model_arrays(src)
    BodyModel.from_arrays(arrays, where=str(src))  # refuse to write something we could not use
    write_npz(dst, arrays, compress=False)  # large float arrays barely compress; zlib would take seconds
    return {k: v.shape for k, v in arrays.items()}


def merge_weights(weights: np.ndarray, parents: np.ndarray, n_keep: int) -> np.ndarray:
    """Skinning weights (V, J) folded onto the first ``n_keep`` joints: each dropped joint (fingers, jaw, eyes, SMPL's
    hands) gives its weight to its nearest kept ancestor. Returns (V, n_keep)."""
    out = np.array(weights[:, :n_keep], dtype=np.float64)
    for j in range(n_keep, weights.shape[1]):
        a = j
        while a >= n_keep:
            a = int(parents[a])
        out[:, a] += weights[:, j]
    return out


def rigid_transforms(pose: np.ndarray, rest_joints: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Joint transforms ``[G_j | J_j]`` (N, J, 4, 4) from axis-angle ``pose`` (N, 3J) and ``rest_joints`` (J, 3)
    with ``smplx.lbs.batch_rigid_transform`` (no translation added)."""
    import torch
    from smplx.lbs import batch_rigid_transform, batch_rodrigues

    pose = torch.from_numpy(np.asarray(pose, dtype=np.float64))
    n, n_j = pose.shape[0], len(parents)
    rest = torch.from_numpy(np.asarray(rest_joints, dtype=np.float64))[None].expand(n, -1, -1)
    with torch.no_grad():
        rot = batch_rodrigues(pose.reshape(-1, 3)).view(n, n_j, 3, 3)
        # A_j = [G_j | J_j - G_j J_rest_j]: its rotation block is G_j; the posed joints are J_j
        posed, a = batch_rigid_transform(rot, rest, torch.from_numpy(np.asarray(parents)), dtype=torch.float64)
    out = np.zeros((n, n_j, 4, 4))
    out[..., :3, :3] = a[..., :3, :3].numpy()
    out[..., :3, 3] = posed.numpy()
    out[..., 3, 3] = 1.0
    return out


@dataclass(frozen=True)
class Posed:
    vertices: np.ndarray  # (B, V, 3) float64
    joint_transforms: np.ndarray  # (B, J, 4, 4) float64, [G_j | J_j]
    rest_joints: np.ndarray  # (J, 3) float64, for the given betas


@dataclass(frozen=True)
class BodyModel:
    """A SMPL-family model as numpy arrays (shapes as in the model files; V vertices, J joints).

    Only the largest connected component of the mesh is kept (a no-op for SMPL and SMPL+H, drops SMPL-X's
    eyeballs), so every frame is one shell that the geodesic stage accepts.
    """

    kind: str  # smpl | smplh | smplx
    v_template: np.ndarray  # (V, 3)
    shapedirs: np.ndarray  # (V, 3, B) identity (and for SMPL-X expression) blend shapes
    num_shape: int  # how many of the shapedirs are identity blend shapes
    posedirs: np.ndarray  # (9 * (J - 1), V * 3): the file's (V, 3, P) array laid out as smplx.lbs takes it
    J_regressor: np.ndarray  # (J, V)
    weights: np.ndarray  # (V, J)
    parents: np.ndarray  # (J,) int, parents[0] = -1
    faces: np.ndarray  # (F, 3) int32, into the kept vertices
    keep: np.ndarray  # (V,) bool: vertices of the kept component
    source: str = "body model"  # the file (or description) it was read from, named in errors
    shape_note: str = ""  # how num_shape was read from shapedirs (SMPL-X files do not say), named in errors

    @classmethod
    def load(cls, path: Path) -> BodyModel:
        return cls.from_arrays(read_model_arrays(path), where=str(path))

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], where: str) -> BodyModel:
        v = a["v_template"]
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"{where}: v_template has shape {v.shape}, expected (V, 3)")
        n_v = len(v)
        n_joints = a["posedirs"].shape[-1] // 9 + 1
        if n_joints not in KINDS:
            raise ValueError(f"{where}: posedirs has {a['posedirs'].shape[-1]} columns; expected 9 * (J - 1) "
                             f"for J in {sorted(KINDS)} (SMPL, SMPL+H, SMPL-X)")
        kind = KINDS[n_joints]
        shapes = {"shapedirs": (n_v, 3, None), "posedirs": (n_v, 3, 9 * (n_joints - 1)),
                  "J_regressor": (n_joints, n_v), "weights": (n_v, n_joints), "kintree_table": (2, n_joints),
                  "f": (None, 3)}
        for key, shape in shapes.items():
            got = a[key].shape
            if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got, strict=True)):
                raise ValueError(f"{where}: {key} has shape {got}, expected {shape} for a {kind} model")
        num_shape, note = smplx_identity_count(a["shapedirs"].shape[-1]) if kind == "smplx" else (
            a["shapedirs"].shape[-1], "")
        parents = a["kintree_table"][0].astype(np.int64)
        parents[0] = -1
        if np.any(parents[1:] >= np.arange(1, n_joints)) or np.any(parents[1:] < 0):
            raise ValueError(f"{where}: kintree_table does not list parents before children")
        faces = a["f"].astype(np.int64)
        keep = largest_component(n_v, faces)
        return cls(kind, v.astype(np.float64), a["shapedirs"].astype(np.float64), num_shape,
                   np.ascontiguousarray(a["posedirs"].reshape(-1, a["posedirs"].shape[-1]).T, dtype=np.float64),
                   np.asarray(a["J_regressor"], dtype=np.float64),
                   a["weights"].astype(np.float64), parents, keep_vertices(keep, faces), keep,
                   where, note)

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    def shaped(self, betas: np.ndarray) -> np.ndarray:
        """Rest-pose vertices (V, 3) for identity coefficients ``betas`` (B,), all of them (no silent cut to 10)."""
        import torch
        from smplx.lbs import blend_shapes

        b = self._betas(betas)
        offsets = blend_shapes(b, torch.from_numpy(self.shapedirs[..., : b.shape[1]]))  # 1 x V x 3
        return self.v_template + offsets[0].numpy()

    def _betas(self, betas: np.ndarray):
        import torch

        betas = np.asarray(betas, dtype=np.float64).reshape(-1)
        if len(betas) > self.num_shape:
            note = f" ({self.shape_note})" if self.shape_note else ""
            raise ValueError(f"{self.source}: {len(betas)} shape coefficients given but this {self.kind} model has "
                             f"{self.num_shape}{note}. {AMASS_MODEL_HINT}")
        return torch.from_numpy(betas)[None]

    def pose(self, betas: np.ndarray, pose: np.ndarray, transl: np.ndarray | None = None) -> Posed:
        """Pose the model.

        Args:
            betas: (B,) identity coefficients, shared by the batch.
            pose: (N, 3 * K) axis-angle of the first K joints in model order (root first); joints after K stay in
                their rest orientation (HIPNet's 22 body joints: no finger, jaw or eye rotations).
            transl: optional (N, 3) added to vertices and joints.

        Returns:
            ``Posed`` with vertices (N, V_kept, 3) and joint transforms (N, J, 4, 4) for all J model joints.
        """
        import torch
        from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints

        pose = np.asarray(pose, dtype=np.float64)
        if pose.ndim != 2 or pose.shape[1] % 3 or pose.shape[1] // 3 > self.num_joints:
            raise ValueError(f"{self.source}: pose must have shape (N, 3K) with K <= {self.num_joints} joints of this "
                             f"{self.kind} model, got {pose.shape}. {AMASS_MODEL_HINT}")
        n, k, n_j = len(pose), pose.shape[1] // 3, self.num_joints
        full = np.zeros((n, n_j * 3))
        full[:, : 3 * k] = pose
        b = self._betas(betas)
        shapedirs = torch.from_numpy(self.shapedirs[..., : b.shape[1]])
        with torch.no_grad():
            # the steps of smplx.lbs.lbs, with the kinematic chain run once and its transforms kept
            v_shaped = torch.from_numpy(self.v_template) + blend_shapes(b, shapedirs)  # 1 x V x 3, shared by the batch
            rest = vertices2joints(torch.from_numpy(self.J_regressor), v_shaped)  # 1 x J x 3
            rot = batch_rodrigues(torch.from_numpy(full).reshape(-1, 3)).view(n, n_j, 3, 3)  # N x J x 3 x 3
            pose_feature = (rot[:, 1:] - torch.eye(3, dtype=torch.float64)).view(n, -1)  # N x 9(J-1)
            v_posed = v_shaped + (pose_feature @ torch.from_numpy(self.posedirs)).view(n, -1, 3)  # N x V x 3
            # A_j = [G_j | J_j - G_j J_rest_j]; posed = J_j
            posed, a = batch_rigid_transform(rot, rest.expand(n, -1, -1), torch.from_numpy(self.parents),
                                             dtype=torch.float64)
            skin = (torch.from_numpy(self.weights) @ a.view(n, n_j, 16)).view(n, -1, 4, 4)  # N x V x 4 x 4
            v_homo = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], dim=2)  # N x V x 4
            verts = torch.matmul(skin, v_homo[..., None])[:, :, :3, 0]
        jt = np.zeros((n, n_j, 4, 4))
        jt[..., :3, :3] = a[..., :3, :3].numpy()
        jt[..., :3, 3] = posed.numpy()
        jt[..., 3, 3] = 1.0
        v = verts.numpy()[:, self.keep]
        rest = rest[0].numpy()
        if transl is not None:
            t = np.asarray(transl, dtype=np.float64).reshape(n, 1, 3)
            v = v + t
            jt[..., :3, 3] += t
        return Posed(v, jt, rest)

    def rest_vertices(self, betas: np.ndarray) -> np.ndarray:
        """Rest-pose vertices of the kept component (V_kept, 3)."""
        return self.shaped(betas)[self.keep]


# ------------------------------------------------------------------------------------------------ finding files


def _candidates(kind: str, gender: str) -> list[str]:
    g, gu = gender, gender.upper()
    short = {"male": "m", "female": "f", "neutral": "neutral"}[gender]
    names = [f"{kind}/{g}/model.npz", f"{kind}/{kind.upper()}_{gu}.npz", f"{kind}/{kind.upper()}_{gu}.pkl",
             f"{kind.upper()}_{gu}.npz", f"{kind.upper()}_{gu}.pkl", f"{kind}/{g}.npz", f"{g}/model.npz"]
    if kind == "smpl":
        for version in ("1.0.0", "1.1.0"):
            for stem in ("basicModel", "basicmodel"):
                names += [f"smpl/{stem}_{short}_lbs_10_207_0_v{version}.pkl", f"{stem}_{short}_lbs_10_207_0_v{version}.pkl"]
    return names


def find_body_model(root: Path, kind: str, gender: str) -> Path:
    """The file of a ``kind`` (smpl, smplh, smplx) model of ``gender`` under the user's body-model folder.

    Layouts searched (first match wins): AMASS ``smplh/male/model.npz``; smplx-package ``smplh/SMPLH_MALE.npz`` or
    ``.pkl``; the same names at the top level; the official SMPL ``basicModel_m_lbs_10_207_0_v1.0.0.pkl`` (also
    v1.1.0, lower-case ``basicmodel``); an ``.npz`` written by ``hipnet-data convert-body-model`` under any of these
    names.
    """
    if kind not in KINDS.values():
        raise ValueError(f"unknown body model kind {kind!r}; one of {sorted(KINDS.values())}")
    if gender not in GENDERS:
        raise ValueError(f"unknown gender {gender!r}; one of {GENDERS}")
    if root is None:
        raise ValueError(f"this dataset needs {kind.upper()} body-model files: pass --body-models DIR")
    root = Path(root)
    names = _candidates(kind, gender)
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: no {gender} {kind.upper()} model file; looked for {', '.join(names[:6])}, ...")


class ModelCache:
    """Body models loaded on first use, per (kind, gender). Readers keep theirs in their per-process cache
    (``pipeline.readers.base``), so a worker process loads each model file once for all its shard tasks."""

    def __init__(self, root: Path | None) -> None:
        self.root = None if root is None else Path(root)
        self._models: dict[tuple[str, str], BodyModel] = {}

    def get(self, kind: str, gender: str) -> BodyModel:
        if (kind, gender) not in self._models:
            path = find_body_model(self.root, kind, gender)
            model = BodyModel.load(path)
            if model.kind != kind:
                raise ValueError(f"{path}: holds a {model.kind} model, expected {kind}")
            self._models[kind, gender] = model
        return self._models[kind, gender]
