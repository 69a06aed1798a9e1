"""Occupancy of query points by generalised winding number, cross-checked by open3d ray parity.

Winding numbers are robust to the self-intersections skinned bodies have in deep flexion; ray parity is a fast,
independent answer. The number of points where the two disagree is recorded per frame.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Occupancy(NamedTuple):
    inside: np.ndarray  # (N,) bool, winding number > 0.5
    disagreements: int  # points where ray parity says otherwise


def winding_occupancy(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    import igl

    w = igl.fast_winding_number(
        np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), np.asarray(points, dtype=np.float64)
    )
    return w > 0.5


def ray_parity_occupancy(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)), o3d.core.Tensor(np.asarray(faces, dtype=np.uint32))
    )
    occ = scene.compute_occupancy(o3d.core.Tensor(np.asarray(points, dtype=np.float32)))
    return occ.numpy() > 0.5


def occupancy(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> Occupancy:
    """Occupancy of ``points`` (N, 3) in a closed mesh; call it on the stored (quantised) coordinates."""
    inside = winding_occupancy(vertices, faces, points)
    parity = ray_parity_occupancy(vertices, faces, points)
    return Occupancy(inside, int(np.count_nonzero(inside != parity)))
