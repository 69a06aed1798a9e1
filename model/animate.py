"""What ``hipnet-animate`` shows, as meshes: a motion retargeted onto a subject, in-betweens of two keyframes, and
a blend of two subjects (seed 000, section 5.1). Keyframes and blends are carried onto the subject's own bone
lengths when its rest joints are known: a code on another subject's skeleton can pinch thin parts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hipnet.model.apps import interpolate_phi, interpolate_rotations, posed_mesh, retarget
from hipnet.model.config import FIT
from hipnet.model.data import read_finite
from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import Mesh
from hipnet.pipeline.stages.canonical import to_world
from hipnet.pipeline.store.reading import Store

Progress = Callable[[int], None] | None


def _tick(progress: Progress) -> None:
    if progress is not None:
        progress(1)


def retarget_motion(model: HIPNet, store: Store, frames: Sequence[int], code: torch.Tensor,
                    rest: np.ndarray | None, resolution: int = FIT.resolution, device: str = "cpu",
                    progress: Progress = None) -> tuple[list[Mesh], list[Mesh]]:
    """(canonical, source-frame) meshes of ``code`` in each of ``frames``' poses, carried onto ``rest`` (J, 3)
    bone lengths (None: the motion's own)."""
    parents = model.skeleton.parents
    canonical, source = [], []
    for i in frames:
        jt = read_finite(store, "pose/joint_transforms", i)
        mesh = posed_mesh(model, retarget(jt, parents, rest) if rest is not None else jt, code, resolution,
                          device=device)
        world = read_finite(store, "pose/world_from_canonical", i)
        canonical.append(mesh)
        source.append(Mesh(to_world(mesh.vertices, world).astype("float32"), mesh.faces))
        _tick(progress)
    return canonical, source


@dataclass
class Inbetweens:
    learnt: list[Mesh]  # phi lerped in the learnt pose-encoding space
    rotations: list[Mesh]  # each joint's rotation relative to its parent slerped


def interpolate_keyframes(model: HIPNet, jt_a: np.ndarray, jt_b: np.ndarray, code: torch.Tensor,
                          rest: np.ndarray | None, t: np.ndarray, resolution: int = FIT.resolution, device: str = "cpu",
                          progress: Progress = None) -> Inbetweens:
    """In-betweens of two keyframes (J, 4, 4) at ``t`` (0 and 1: the keyframes), both ways. With ``local_frames``
    models the joint frames of the learnt row come from the rotation path."""
    parents = model.skeleton.parents
    if rest is not None:
        jt_a, jt_b = retarget(jt_a, parents, rest), retarget(jt_b, parents, rest)
    naive = interpolate_rotations(jt_a, jt_b, parents, t)
    phis = interpolate_phi(model, jt_a, jt_b, t)
    out = Inbetweens([], [])
    for k in range(len(t)):
        out.learnt.append(posed_mesh(model, naive[k], code, resolution, phi=phis[k], device=device))
        out.rotations.append(posed_mesh(model, naive[k], code, resolution, device=device))
        _tick(progress)
    return out


def blend_subjects(model: HIPNet, jt: np.ndarray, codes: tuple[torch.Tensor, torch.Tensor],
                   rests: tuple[np.ndarray | None, np.ndarray | None], t: np.ndarray, resolution: int = FIT.resolution,
                   device: str = "cpu", progress: Progress = None) -> list[Mesh]:
    """Meshes of the codes lerped at ``t`` in pose ``jt``, bone lengths lerped with them when both are known."""
    parents, (a, b) = model.skeleton.parents, codes
    meshes = []
    for w in t:
        pose = jt
        if all(r is not None for r in rests):
            pose = retarget(jt, parents, (1 - w) * rests[0] + w * rests[1])
        meshes.append(posed_mesh(model, pose, (1 - w) * a + w * b, resolution, device=device))
        _tick(progress)
    return meshes
