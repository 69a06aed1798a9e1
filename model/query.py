"""Querying a trained HIPNet's SDF on many points: the one place that does it (evaluation, meshing, applications).

Points go through the network in chunks under ``torch.no_grad``, so millions of grid or evaluation points never
build one huge activation tensor.
"""

from __future__ import annotations

import numpy as np
import torch

from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import SDF

CHUNK = 65_536  # query points per network call on a CPU; a GPU takes ~1M


def sdf_in_chunks(model: HIPNet, points: np.ndarray, joint_transforms: np.ndarray | torch.Tensor,
                  code: torch.Tensor | None = None, phi: torch.Tensor | None = None, chunk: int = CHUNK,
                  device: str = "cpu") -> np.ndarray:
    """SDF (N,) float32 of the network at ``points`` (N, 3), canonical frame, for one frame posed by
    ``joint_transforms`` (J, 4, 4). ``code``: the subject code (D,) (None in single-subject mode); ``phi``: a pose
    encoding (pose_dim,) to use instead of the transforms'. ``chunk`` points per forward pass."""
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    jt = torch.as_tensor(joint_transforms, dtype=torch.float32, device=device)[None]
    code = None if code is None else code.to(device)[None]
    phi = None if phi is None else phi.to(device)[None]
    out = np.empty(len(points), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(points), chunk):
            x = torch.as_tensor(points[s : s + chunk], dtype=torch.float32, device=device)[None]
            out[s : s + chunk] = model(x, jt, code=code, phi=phi).sdf[0].float().cpu().numpy()
    return out


def model_sdf(model: HIPNet, joint_transforms: np.ndarray, code: torch.Tensor | None, device: str = "cpu",
              phi: torch.Tensor | None = None, chunk: int = CHUNK) -> SDF:
    """``sdf_in_chunks`` for one frame and subject as a plain function of points (N, 3) -> (N,), the form the
    metrics and the mesher take."""

    def sdf(points: np.ndarray) -> np.ndarray:
        return sdf_in_chunks(model, points, joint_transforms, code, phi, chunk, device)

    return sdf
