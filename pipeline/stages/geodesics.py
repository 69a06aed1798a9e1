"""Geodesic joint labels (seed 000 section 3.3, figure 3): each surface sample gets the joint whose proxy surface
vertex is geodesically nearest, with heat-method distances: potpourri3d's robust solver here (``vertex_distances``:
rest poses, non-manifold meshes, and the reference), ``stages.heat.PoseHeat`` for the posed frames of a subject.

The heat solver returns silent garbage on disconnected meshes, so meshes are welded and checked for a single
connected component first (``check_single_shell``) and rejected with a clear message otherwise.
"""

from __future__ import annotations

import numpy as np

from hipnet.pipeline.core.components import count_components


def weld(vertices: np.ndarray, faces: np.ndarray, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge vertices closer than ``tol`` (by rounding). Returns (vertices, faces, old-to-new index map)."""
    key = np.round(np.asarray(vertices, dtype=np.float64) / tol).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    return np.asarray(vertices)[first], inverse[np.asarray(faces)], inverse


def require_one_component(n_vertices: int, faces: np.ndarray, where: str, what: str = "mesh") -> None:
    """Raise ValueError naming ``where`` unless the (welded) mesh is one connected component."""
    n = count_components(n_vertices, faces)
    if n != 1:
        raise ValueError(
            f"{where}: {what} has {n} connected components; geodesic labels need a single connected shell "
            "(remove eyes/teeth/tongue or other separate parts first)"
        )


def check_single_shell(vertices: np.ndarray, faces: np.ndarray, where: str = "mesh") -> None:
    """Raise ValueError naming ``where`` unless the welded mesh is one connected component."""
    v, f, _ = weld(vertices, faces)
    require_one_component(len(v), f, where)


def proxy_vertices(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(J,) index of the vertex nearest to each joint position (J, 3)."""
    d = np.linalg.norm(np.asarray(vertices)[None, :, :] - np.asarray(joints)[:, None, :], axis=2)
    return np.argmin(d, axis=1)


def vertex_distances(vertices: np.ndarray, faces: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Heat-method geodesic distance (J, V) from each source vertex to every vertex."""
    import potpourri3d as pp3d

    solver = pp3d.MeshHeatMethodDistanceSolver(
        np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), use_robust=True
    )
    return np.stack([solver.compute_distance(int(s)) for s in sources])


def sample_labels(distances: np.ndarray, faces: np.ndarray, face_index: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Interpolate per-vertex distances (J, V) to samples by barycentrics and take the nearest joint: (S,) uint8.

    Only samples on faces whose corners disagree need all J interpolated distances: if one joint is the nearest at
    all three corners, by a margin far above rounding (1e-9 of the largest distance), it is the nearest at every
    convex combination of them, so those samples take the corners' label (the same answer, a fraction of the work).
    """
    d = np.asarray(distances, dtype=np.float64)
    bary = np.asarray(bary, dtype=np.float64)
    corner = np.take(np.asarray(faces), face_index, axis=0)  # S x 3
    # 1. per vertex: the nearest joint and its margin over the second nearest
    nearest = np.argmin(d, axis=0)  # V
    cols = np.arange(d.shape[1])
    others = d.copy()
    others[nearest, cols] = np.inf
    margin = others.min(axis=0) - d[nearest, cols]
    # 2. samples whose three corners agree by a safe margin take that label; the rest interpolate all J distances
    c0, c1, c2 = corner.T
    l0, l1, l2 = np.take(nearest, c0), np.take(nearest, c1), np.take(nearest, c2)
    tol = 1e-9 * max(float(d.max()), -float(d.min()), 1.0)
    sure = (l0 == l1) & (l1 == l2)
    for k, c in enumerate((c0, c1, c2)):  # columns, not row reductions: min over axis 1 of (S, 3) is slow
        sure &= (np.take(margin, c) > tol) & (bary[:, k] >= 0)
    out = l0.astype(np.uint8)
    rest = np.flatnonzero(~sure)
    out[rest] = np.argmin(np.einsum("jsk,sk->sj", d[:, corner[rest]], bary[rest]), axis=1)
    return out
