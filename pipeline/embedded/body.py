"""The Anny body model reduced to what the toolkit needs: a closed mesh skinned to the 22 SMPL joints.

Anny (PyPI ``anny``) ships its assets and runs offline. Its default rig has 104 bones; we drive only the 22 bones
listed in ``ANNY_TO_SMPL22`` and keep every other bone rigid with its nearest driven ancestor. Under linear blend
skinning that is exactly the same as summing each bone's skinning weight into that ancestor, so the posed mesh is
a function of the 22 joint transforms alone, in the SMPL convention (``pipeline.core.kinematics``).

Coordinates: Anny is Z up, facing -Y; we convert to Y up, facing +Z with ``x' = (x, z, -y)``.

The full-resolution topology ``anny-noeyes-notongue`` is one genus-0 shell, but with an open mouth pocket and two
eye sockets. We remove the faces of the internal cavities (listed by the package in
``data/template_mesh_internal_cavities.pth``) and cap each of the three holes with a fan around a new vertex at
the centroid of its rim (position and skinning weights are the rim's mean), giving a solid, watertight head.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.skeleton import SMPL22

# SMPL joint -> Anny bone whose head is that joint (FORMATS.md, Anny section).
ANNY_TO_SMPL22 = {
    "pelvis": "root", "L_hip": "upperleg01.L", "R_hip": "upperleg01.R", "spine1": "spine04",
    "L_knee": "lowerleg01.L", "R_knee": "lowerleg01.R", "spine2": "spine02", "L_ankle": "foot.L",
    "R_ankle": "foot.R", "spine3": "spine01", "L_foot": "toe3-1.L", "R_foot": "toe3-1.R", "neck": "neck01",
    "L_collar": "clavicle.L", "R_collar": "clavicle.R", "head": "head", "L_shoulder": "upperarm01.L",
    "R_shoulder": "upperarm01.R", "L_elbow": "lowerarm01.L", "R_elbow": "lowerarm01.R", "L_wrist": "wrist.L",
    "R_wrist": "wrist.R",
}

# Named topologies: full resolution (closed head) and low-poly single-shell retopologies for fast tests. The
# low-poly meshes lose volume under deep flexion (a knee joint can end up just outside a 615-vertex leg), so
# datasets meant for training use "full".
TOPOLOGIES = {
    "full": "anny-noeyes-notongue",
    "lowpoly": "notoes_collapse5pc",
    "lowpoly10": "notoes_collapse10pc",
    "lowpoly3": "notoes_collapse3pc",
}

PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")

# Anny (Z up, facing -Y) -> toolkit (Y up, facing +Z): x' = (x, z, -y).
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def cache_dir() -> Path:
    """Where Anny's one-off model build (about 65 s, 0.8 GB per topology) is cached.

    ``ANNY_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/hipnet/anny`` (default ``~/.cache/hipnet/anny``).
    """
    if os.environ.get("ANNY_CACHE_DIR"):
        return Path(os.environ["ANNY_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hipnet" / "anny"


def induced_parents(bone_labels: list[str], bone_parents: list[int], mapping: dict[str, str]) -> list[int]:
    """Parent of each mapped joint = the nearest mapped ancestor of its bone (in SMPL22 joint indices)."""
    joint_of_bone = {mapping[name]: j for j, name in enumerate(SMPL22.names)}
    out = []
    for name in SMPL22.names:
        b = bone_parents[bone_labels.index(mapping[name])]
        while b >= 0 and bone_labels[b] not in joint_of_bone:
            b = bone_parents[b]
        out.append(-1 if b < 0 else joint_of_bone[bone_labels[b]])
    return out


def bone_to_joint(bone_labels: list[str], bone_parents: list[int], mapping: dict[str, str]) -> np.ndarray:
    """(B,) index of the SMPL joint each bone moves with: itself if driven, else its nearest driven ancestor."""
    joint_of_bone = {mapping[name]: j for j, name in enumerate(SMPL22.names)}
    out = np.empty(len(bone_labels), dtype=np.int64)
    for b, label in enumerate(bone_labels):
        a = b
        while bone_labels[a] not in joint_of_bone:
            a = bone_parents[a]
            if a < 0:
                raise ValueError(f"Anny bone {label!r} has no driven ancestor; the root must be driven")
        out[b] = joint_of_bone[bone_labels[a]]
    return out


def close_cavities(
    faces: np.ndarray, cavity_vertex_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Remove faces lying entirely in a cavity and cap the resulting holes.

    Args:
        faces: (F, 3) triangle indices into V vertices.
        cavity_vertex_mask: (V,) True for vertices of internal cavities.

    Returns:
        keep: (K,) indices of the original vertices that remain, in order.
        new_faces: (F', 3) faces indexing ``K + n_loops`` vertices: the kept vertices, then one cap centre per
            hole, in the order of ``loops``.
        loops: per hole, the kept-vertex indices (into ``keep``) of its rim, whose mean is the cap centre.
    """
    faces = np.asarray(faces, dtype=np.int64)
    body = faces[~cavity_vertex_mask[faces].all(axis=1)]
    keep = np.unique(body)
    remap = np.full(len(cavity_vertex_mask), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    body = remap[body]
    # Directed half-edges whose twin is missing are on a hole's rim.
    half = np.concatenate([body[:, [0, 1]], body[:, [1, 2]], body[:, [2, 0]]])
    twin = {(int(a), int(b)) for a, b in half}
    rim = [(int(a), int(b)) for a, b in half if (int(b), int(a)) not in twin]
    nxt = dict(rim)
    if len(nxt) != len(rim):
        raise ValueError("cavity rims are not simple loops (a vertex starts two rim edges)")
    loops: list[np.ndarray] = []
    seen: set[int] = set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        v = nxt[start]
        while v != start:
            loop.append(v)
            seen.add(v)
            v = nxt[v]
        loops.append(np.array(loop, dtype=np.int64))
    caps = []
    for i, loop in enumerate(loops):
        centre = len(keep) + i
        # A rim edge a->b of an existing face is closed by the cap face b->a->centre (consistent winding).
        caps.append(np.stack([np.roll(loop, -1), loop, np.full(len(loop), centre)], axis=1))
    new_faces = np.concatenate([body, *caps]) if caps else body
    return keep, new_faces.astype(np.int32), loops


@dataclass(frozen=True)
class RestShape:
    """A subject in the rest pose (Y up, metres)."""

    vertices: np.ndarray  # (V, 3) float64
    joints: np.ndarray  # (22, 3) float64


class AnnyBody:
    """Anny with one topology, reduced to a closed mesh and the 22 SMPL joints.

    Building the underlying Anny model the first time takes about a minute and is cached (``cache_dir()``).
    """

    def __init__(self, topology: str = "full") -> None:
        if topology not in TOPOLOGIES:
            raise ValueError(f"unknown Anny topology {topology!r}; choose one of {sorted(TOPOLOGIES)}")
        import anny
        import anny.paths
        import torch

        anny.paths.set_anny_cache_path(cache_dir())
        self.topology = topology
        model = anny.Anny(rig="anny", topology=TOPOLOGIES[topology])
        self._model = model
        self._torch = torch
        labels = list(model.bone_labels)
        parents = [int(p) for p in model.bone_parents]
        missing = [b for b in ANNY_TO_SMPL22.values() if b not in labels]
        if missing:
            raise ValueError(f"Anny rig lacks the bones {missing} needed for the SMPL joints")
        self.bone_labels = labels
        self.bone_parents = parents
        self.joint_bones = np.array([labels.index(ANNY_TO_SMPL22[n]) for n in SMPL22.names])
        self.parents = induced_parents(labels, parents, ANNY_TO_SMPL22)

        # Skinning weights of the 104 bones summed onto the 22 joints.
        n_vertices = model.template_vertices.shape[0]
        idx = model.vertex_bone_indices.cpu().numpy().astype(np.int64)
        w = model.vertex_bone_weights.cpu().numpy().astype(np.float64)
        joint = bone_to_joint(labels, parents, ANNY_TO_SMPL22)[idx]
        weights = np.zeros((n_vertices, SMPL22.num_joints))
        np.add.at(weights, (np.repeat(np.arange(n_vertices), idx.shape[1]), joint.ravel()), w.ravel())
        weights /= weights.sum(axis=1, keepdims=True)

        faces = model.faces.cpu().numpy().astype(np.int64)
        if topology == "full":
            cavity = torch.load(
                anny.paths.get_anny_root_dir() / "data" / "template_mesh_internal_cavities.pth", weights_only=True
            )
            base_index = model.base_mesh_vertex_indices.cpu().numpy()
            mask = np.isin(base_index, np.asarray(cavity["vertex_indices"]))
            keep, faces, loops = close_cavities(faces, mask)
        else:
            keep, loops = np.arange(n_vertices), []
        self._keep = keep
        self._loops = loops
        self.faces = faces.astype(np.int32)
        self.skinning_weights = self._extend(weights)

    def _extend(self, per_vertex: np.ndarray) -> np.ndarray:
        """Kept rows, then one row per cap: the mean of its rim's rows."""
        kept = per_vertex[self._keep]
        caps = [kept[loop].mean(axis=0) for loop in self._loops]
        return np.concatenate([kept, np.stack(caps)]) if caps else kept

    @property
    def num_vertices(self) -> int:
        return len(self.skinning_weights)

    def rest_shape(self, phenotypes: dict[str, float]) -> RestShape:
        """Rest-pose vertices and joints of a subject with the given phenotypes (each in [0, 1])."""
        unknown = set(phenotypes) - set(PHENOTYPES)
        if unknown:
            raise ValueError(f"unknown phenotypes {sorted(unknown)}; Anny has {PHENOTYPES}")
        torch = self._torch
        with torch.no_grad():
            out = self._model(
                phenotype_kwargs={k: torch.tensor([float(v)], dtype=torch.float64) for k, v in phenotypes.items()}
            )
        vertices = out["rest_vertices"][0].cpu().numpy().astype(np.float64) @ Z_UP_TO_Y_UP.T
        heads = out["rest_bone_heads"][0].cpu().numpy().astype(np.float64) @ Z_UP_TO_Y_UP.T
        return RestShape(vertices=self._extend(vertices), joints=heads[self.joint_bones])
