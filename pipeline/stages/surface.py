"""Area-weighted surface sampling with oriented normals; face index and barycentrics are kept so labels and
normals can be carried to the samples."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SurfaceSamples(NamedTuple):
    points: np.ndarray  # (S, 3) float64
    normals: np.ndarray  # (S, 3) float64, unit, outward: interpolated area-weighted vertex normals
    face_index: np.ndarray  # (S,) int64
    barycentrics: np.ndarray  # (S, 3) float64, rows sum to 1


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (V, 3), unit length; outward for consistently wound closed meshes."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    idx = np.asarray(faces).ravel()
    vn = np.stack([np.bincount(idx, np.repeat(fn[:, c], 3), minlength=len(vertices)) for c in range(3)], axis=1)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> SurfaceSamples:
    """``n`` points uniform over the surface area of a triangle mesh (V, 3), (F, 3)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    cdf = np.cumsum(area)
    face = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(f) - 1)
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    bary = np.stack([1 - u - w, u, w], axis=1)
    corners = f[face]
    points = bary[:, :1] * v[corners[:, 0]] + bary[:, 1:2] * v[corners[:, 1]] + bary[:, 2:] * v[corners[:, 2]]
    vn = vertex_normals(v, f)
    normals = bary[:, :1] * vn[corners[:, 0]] + bary[:, 1:2] * vn[corners[:, 1]] + bary[:, 2:] * vn[corners[:, 2]]
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)
    return SurfaceSamples(points, normals, face, bary)
