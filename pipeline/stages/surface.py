"""Area-weighted surface sampling with oriented normals; face index and barycentrics are kept so labels and
normals can be carried to the samples.

The arithmetic (and so every output bit) is that of the straightforward version: face areas from one cross
product per face, inverse-CDF face choice, barycentrics folded into the triangle, vertex normals as per-vertex
sums of the faces' area-weighted normals, added in face order. What is faster: the face cross products are
computed once (for the areas and the vertex normals), the uniforms are located in the CDF in sorted order (a
cache-friendly search instead of 25k random binary searches), the three coordinate sums of the vertex normals are
one ``bincount``, and rows are gathered with ``np.take`` (several times faster than fancy indexing of 2-D arrays).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SurfaceSamples(NamedTuple):
    points: np.ndarray  # (S, 3) float64
    normals: np.ndarray  # (S, 3) float64, unit, outward: interpolated area-weighted vertex normals
    face_index: np.ndarray  # (S,) int64
    barycentrics: np.ndarray  # (S, 3) float64, rows sum to 1


def face_cross(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) cross product (v1 - v0) x (v2 - v0) per face: its length is twice the face's area."""
    v0, v1, v2 = (np.take(vertices, faces[:, k], axis=0) for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    return np.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1],
                     e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                     e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], axis=1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-20)


def _vertex_normal_sums(fn: np.ndarray, faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(V, 3) sum of the adjacent faces' ``fn`` per vertex, added in face order (as three per-axis bincounts)."""
    bins = (3 * np.asarray(faces, dtype=np.int64).reshape(-1, 3, 1) + np.arange(3)).ravel()  # F*3 corners x 3 axes
    weights = np.repeat(fn, 3, axis=0).ravel()  # each face's normal once per corner
    return np.bincount(bins, weights, minlength=3 * n_vertices).reshape(n_vertices, 3)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (V, 3), unit length; outward for consistently wound closed meshes."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    return _unit_rows(_vertex_normal_sums(face_cross(v, f), f, len(v)))


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> SurfaceSamples:
    """``n`` points uniform over the surface area of a triangle mesh (V, 3), (F, 3).

    Draws ``rng.random(n)`` three times (face, then the two barycentric uniforms), in that order.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = face_cross(v, f)  # F x 3, length = 2 * area
    cdf = np.cumsum(0.5 * np.linalg.norm(fn, axis=1))
    # 1. face of each sample: inverse CDF, searched with sorted needles and scattered back
    r = rng.random(n) * cdf[-1]
    order = np.argsort(r)
    face = np.empty(n, dtype=np.int64)
    face[order] = np.searchsorted(cdf, r[order], side="right")
    np.minimum(face, len(f) - 1, out=face)
    # 2. uniform barycentrics (fold the unit square's upper triangle back)
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    bary = np.stack([1 - u - w, u, w], axis=1)
    # 3. points and interpolated vertex normals: S x 3 corners
    c0, c1, c2 = np.take(f, face, axis=0).T
    b0, b1, b2 = bary[:, :1], bary[:, 1:2], bary[:, 2:]
    points = b0 * np.take(v, c0, axis=0) + b1 * np.take(v, c1, axis=0) + b2 * np.take(v, c2, axis=0)
    vn = _unit_rows(_vertex_normal_sums(fn, f, len(v)))
    normals = _unit_rows(b0 * np.take(vn, c0, axis=0) + b1 * np.take(vn, c1, axis=0) + b2 * np.take(vn, c2, axis=0))
    return SurfaceSamples(points, normals, face, bary)


def sample_surface_reference(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> SurfaceSamples:
    """The straightforward sampler (the implementation before the faster one above): the reference that
    ``sample_surface`` must match bit for bit from the same generator (tests/test_stages_fast.py) and that
    bench/preprocess.py times it against."""
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
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    idx = f.ravel()
    vn = np.stack([np.bincount(idx, np.repeat(fn[:, c], 3), minlength=len(v)) for c in range(3)], axis=1)
    vn = vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)
    normals = bary[:, :1] * vn[corners[:, 0]] + bary[:, 1:2] * vn[corners[:, 1]] + bary[:, 2:] * vn[corners[:, 2]]
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)
    return SurfaceSamples(points, normals, face, bary)
