"""What a trained HIPNet is for (seed 000, section 5.1 and figures 1, 5, 6): fitting a subject to a point cloud,
sampling new subjects, retargeting motion, interpolating poses and blending subjects.

Everything works in the canonical frame of the stores (pelvis at the origin, heading removed, the body facing +Z).

- ``fit_code``: test-time optimisation of a subject code for observed surface points with the network frozen,
  from the mean of the training codes, minimising mean |F(x)| over the points (the paper: 100 iterations, lr 1e-3).
- ``front_visible``: the points a camera in front of the body sees (normal facing the camera, first ray hit),
  simulating a depth sensor.
- ``CodeGaussian``: a multivariate Gaussian with full covariance fitted to the subject codes (GLO); with fewer
  subjects than code dimensions the sample covariance is singular, so a small multiple of the identity is added
  (``shrinkage`` x mean variance), which keeps it full rank and positive definite.
- ``retarget``: a motion's joint rotations on another subject's bone lengths.
- ``interpolate_rotations``: the naive baseline between two keyframes: slerp of each joint's rotation relative to
  its parent, bone vectors carried along, root position lerped. ``interpolate_phi``: the same keyframes in the
  learnt pose-encoding space (phi lerped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hipnet.model.config import FIT
from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import Mesh, extract_mesh
from hipnet.model.query import model_sdf
from hipnet.pipeline.core.kinematics import forward_kinematics, matrix_to_quaternion, quaternion_to_matrix, slerp

# ---------------------------------------------------------------------------------------------------- codes


def code_table(model: HIPNet) -> torch.Tensor:
    """The trained subject codes (S, D); an error in single-subject mode (nothing to fit or sample)."""
    if model.codes is None:
        raise ValueError("this checkpoint was trained on one subject: it has no subject codes to fit, sample or blend")
    return model.codes.weight.detach()


def subject_code(model: HIPNet, subjects: Sequence[str], name: str) -> torch.Tensor:
    if name not in subjects:
        raise ValueError(f"subject {name!r} is not in the checkpoint; it has {', '.join(subjects)}")
    return code_table(model)[list(subjects).index(name)]


@dataclass
class Fit:
    code: torch.Tensor  # (D,)
    losses: list[float]  # mean |F| over the points before each iteration, then after the last


def surface_loss(model: HIPNet, points: torch.Tensor, joint_transforms: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """mean |F(x)| over observed surface points (P, 3) for one frame."""
    sdf = model(points[None], joint_transforms[None], code=code[None]).sdf
    return sdf.abs().mean()


def fit_code(model: HIPNet, points: np.ndarray, joint_transforms: np.ndarray, iters: int = FIT.iters, lr: float = FIT.lr,
             init: torch.Tensor | None = None, device: str = "cpu") -> Fit:
    """Optimise a subject code so the frozen network's surface passes through ``points`` (P, 3), canonical frame,
    posed by ``joint_transforms`` (J, 4, 4). Starts from ``init`` (default: the mean training code)."""
    start = code_table(model).mean(0) if init is None else init
    if len(points) == 0:  # nothing observed: the starting code (the paper's "0 points" column)
        return Fit(start.detach().clone().to(device), [])
    code = start.detach().clone().to(device).requires_grad_(True)
    x = torch.as_tensor(points, dtype=torch.float32, device=device)
    jt = torch.as_tensor(joint_transforms, dtype=torch.float32, device=device)
    opt = torch.optim.Adam([code], lr=lr)
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    losses = []
    try:
        for _ in range(iters):
            loss = surface_loss(model, x, jt, code)
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            losses.append(surface_loss(model, x, jt, code).item())
    finally:
        for p, g in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(g)
    return Fit(code.detach(), losses)


# ---------------------------------------------------------------------------------------------------- visibility


def front_camera(vertices: np.ndarray, distance: float = 3.0) -> np.ndarray:
    """A camera ``distance`` metres in front of the body (canonical frame: the body faces +Z), at its bbox centre."""
    lo, hi = vertices.min(0), vertices.max(0)
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2] + distance])


def front_visible(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, normals: np.ndarray,
                  camera: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
    """Mask (P,) of surface ``points`` a pinhole at ``camera`` sees: the normal faces the camera and the first
    surface the ray from the camera meets is the point itself (within ``tolerance`` metres)."""
    import open3d as o3d

    to_camera = camera[None, :] - points
    distance = np.linalg.norm(to_camera, axis=1)
    facing = np.einsum("pi,pi->p", normals, to_camera) > 0
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(faces, dtype=np.uint32)))
    direction = -to_camera / distance[:, None]
    rays = np.concatenate([np.repeat(camera[None], len(points), 0), direction], axis=1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    return facing & (hit >= distance - tolerance)


# ---------------------------------------------------------------------------------------------------- new subjects


@dataclass
class CodeGaussian:
    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D), full, positive definite

    @classmethod
    def fit(cls, codes: np.ndarray, shrinkage: float = 0.05) -> CodeGaussian:
        codes = np.asarray(codes, dtype=np.float64)
        if len(codes) < 2:
            raise ValueError(f"a Gaussian needs at least 2 subject codes, the checkpoint has {len(codes)}")
        mean = codes.mean(0)
        cov = np.cov(codes, rowvar=False)
        ridge = shrinkage * max(np.trace(cov) / len(cov), 1e-12)
        return cls(mean, cov + ridge * np.eye(len(cov)))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """(n, D) codes drawn from N(mean, cov)."""
        chol = np.linalg.cholesky(self.cov)
        return self.mean + np.random.default_rng(seed).standard_normal((n, len(self.mean))) @ chol.T


# ---------------------------------------------------------------------------------------------------- poses


def interpolate_rotations(jt_a: np.ndarray, jt_b: np.ndarray, parents: Sequence[int], t: np.ndarray) -> np.ndarray:
    """Joint transforms (T, J, 4, 4) between keyframes (J, 4, 4): each joint's rotation relative to its parent
    slerped, each bone vector (in its parent's frame) lerped, the root position lerped. t = 0 and 1 give the
    keyframes."""
    t = np.asarray(t, dtype=np.float64)

    def local(jt):
        g, pos = jt[:, :3, :3].astype(np.float64), jt[:, :3, 3].astype(np.float64)
        rot, bone = g.copy(), np.zeros_like(pos)
        for j, p in enumerate(parents):
            if p >= 0:
                rot[j] = g[p].T @ g[j]
                bone[j] = g[p].T @ (pos[j] - pos[p])
        return rot, bone, pos[0]

    (ra, ba, pa), (rb, bb, pb) = local(jt_a), local(jt_b)
    rot = quaternion_to_matrix(slerp(matrix_to_quaternion(ra), matrix_to_quaternion(rb), t))  # T, J, 3, 3
    bone = (1 - t)[:, None, None] * ba + t[:, None, None] * bb
    root = (1 - t)[:, None] * pa + t[:, None] * pb
    out = np.zeros((len(t), len(parents), 4, 4))
    out[..., 3, 3] = 1.0
    for j, p in enumerate(parents):
        if p < 0:
            out[:, j, :3, :3], out[:, j, :3, 3] = rot[:, j], root
        else:
            g_p = out[:, p, :3, :3]
            out[:, j, :3, :3] = g_p @ rot[:, j]
            out[:, j, :3, 3] = out[:, p, :3, 3] + np.einsum("tab,tb->ta", g_p, bone[:, j])
    return out


def retarget(joint_transforms: np.ndarray, parents: Sequence[int], rest_joints: np.ndarray) -> np.ndarray:
    """A pose (J, 4, 4) carried onto another skeleton of the same tree: each joint's rotation relative to its
    parent kept, bones the lengths of ``rest_joints`` (J, 3), the root where it was. With the pose's own rest joints
    it returns the pose."""
    g = joint_transforms[:, :3, :3].astype(np.float64)
    local = g.copy()
    for j, p in enumerate(parents):
        if p >= 0:
            local[j] = g[p].T @ g[j]
    root = joint_transforms[0, :3, 3].astype(np.float64)
    return forward_kinematics(local, rest_joints, parents, translation=root - rest_joints[0]).astype(np.float32)


def interpolate_phi(model: HIPNet, jt_a: np.ndarray, jt_b: np.ndarray, t: np.ndarray) -> torch.Tensor:
    """Pose encodings (T, pose_dim) on the straight line between the keyframes' encodings."""
    with torch.no_grad():
        pa, pb = model.encode_pose(torch.as_tensor(np.stack([jt_a, jt_b]), dtype=torch.float32))
    w = torch.as_tensor(np.asarray(t), dtype=torch.float32)[:, None]
    return (1 - w) * pa + w * pb


# ---------------------------------------------------------------------------------------------------- meshes


def pose_bounds(joint_transforms: np.ndarray, margin: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A box around a posed body: its joints grown by ``margin`` metres (head, hands and feet reach past them)."""
    pos = np.asarray(joint_transforms)[:, :3, 3]
    return pos.min(0) - margin, pos.max(0) + margin


def posed_mesh(model: HIPNet, joint_transforms: np.ndarray, code: torch.Tensor | None, resolution: int = FIT.resolution,
               phi: torch.Tensor | None = None, device: str = "cpu") -> Mesh:
    """The zero level set for one pose and subject code (coarse-to-fine marching cubes, largest component)."""
    lo, hi = pose_bounds(joint_transforms)
    mesh, _ = extract_mesh(model_sdf(model, joint_transforms, code, device, phi=phi), lo, hi, resolution,
                           start=min(32, resolution))
    return mesh
