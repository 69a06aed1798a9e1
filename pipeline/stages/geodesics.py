"""Geodesic joint labels (seed 000 section 3.3, figure 3): each surface sample gets the joint whose proxy surface
vertex is geodesically nearest, with heat-method distances on the mesh's intrinsic Delaunay triangulation.

``vertex_distances`` is the heat method of Crane et al. on the intrinsic Delaunay triangulation (libigl's edge
flips, after an intrinsic mollification of near-degenerate triangles as in Sharp and Crane 2020), with every
source as one column of one multi-column solve and two sparse LDL^T factorisations (qdldl) per mesh. It replaces
potpourri3d's robust solver (``vertex_distances_robust``, kept for the tests and bench/heat_solvers.py that compare
against it), which builds the same kind of triangulation but solves one source at a time; the plain cotan
Laplacian is not an option on skinned bodies (thousands of negative edge weights, labels far off).

The heat solver returns silent garbage on disconnected meshes, so meshes are welded and checked for a single
connected component first (``check_single_shell``) and rejected with a clear message otherwise.
"""

from __future__ import annotations

import numpy as np

from hipnet.pipeline.components import count_components


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


MOLLIFY = 1e-6  # intrinsic mollification: every triangle inequality holds by this fraction of the mean edge length


def _intrinsic_layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each triangle laid out in its plane from its edge lengths (F, 3; column k opposite corner k): corner 0 at
    the origin, corner 1 on +x, corner 2 above. Returns the edges opposite each corner turned by 90 degrees, as x
    and y components (F, 3) each, and the areas (F,). The gradient of a linear function with corner values u is
    sum_k u_k * turned_k / (2 area); the cotan stiffness of corners i, j is turned_i . turned_j / (4 area)."""
    a, b, c = lengths.T
    x = (b * b + c * c - a * a) / (2 * c)
    y = np.sqrt(np.maximum(b * b - x * x, 0.0))
    zero = np.zeros_like(c)
    return np.stack([-y, y, zero], 1), np.stack([x - c, -x, c], 1), 0.5 * c * y


def ldlt(matrix) -> object:
    """A sparse LDL^T factorisation (qdldl) of a symmetric positive definite scipy matrix; ``.solve(b)`` for a
    vector ``b``."""
    import qdldl

    return qdldl.Solver(matrix.tocsc())


def vertex_distances(vertices: np.ndarray, faces: np.ndarray, sources: np.ndarray, factor=ldlt) -> np.ndarray:
    """Heat-method geodesic distance (J, V) from each source vertex to every vertex (one connected mesh).

    On the intrinsic Delaunay triangulation: heat ``(M + t L) U = delta_sources`` (t = mean edge length squared,
    M lumped mass, L the positive semi-definite cotan Laplacian), the unit field ``X = -grad u / |grad u|`` on
    each intrinsic triangle, then ``L phi = div X`` and each column shifted to 0 at its source. ``factor``: the
    sparse factorisation (bench/heat_solvers.py times others)."""
    import igl
    import scipy.sparse as sp

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    src = np.asarray(sources, dtype=np.int64)
    lengths = igl.edge_lengths(v, f)
    slack = lengths.sum(1, keepdims=True) - 2 * lengths  # l_i + l_j - l_k for every corner k
    lengths = lengths + max(0.0, MOLLIFY * float(lengths.mean()) - float(slack.min()))
    lengths, f = igl.intrinsic_delaunay_triangulation(lengths, f)[:2]
    tx, ty, area = _intrinsic_layout(lengths)
    n = len(v)
    pairs = [(i, j) for i in range(3) for j in range(3)]
    stiffness = np.concatenate([(tx[:, i] * tx[:, j] + ty[:, i] * ty[:, j]) / (4 * area) for i, j in pairs])
    rows, cols = (np.concatenate([f[:, p[k]] for p in pairs]) for k in (0, 1))
    lap = sp.csc_matrix((stiffness, (rows, cols)), shape=(n, n))
    mass = np.bincount(f.ravel(), np.repeat(area / 3, 3), minlength=n)
    delta = np.zeros((n, len(src)))
    delta[src, np.arange(len(src))] = 1.0
    heat = factor(lap * float(lengths.mean()) ** 2 + sp.diags(mass))
    u = np.stack([heat.solve(delta[:, k]) for k in range(len(src))], 1)[f]  # (F, 3, J) corner values
    gx, gy = np.einsum("fij,fi->fj", u, tx), np.einsum("fij,fi->fj", u, ty)  # 2 area grad u
    norm = np.sqrt(gx * gx + gy * gy) + 1e-300
    corners = sp.csr_matrix((np.ones(f.size), (f.T.ravel(), np.arange(f.size))), shape=(n, f.size))
    div = corners @ np.concatenate([-0.5 * (tx[:, [k]] * gx + ty[:, [k]] * gy) / norm for k in range(3)])
    poisson = factor(lap + sp.diags(1e-8 * mass))
    phi = np.stack([poisson.solve(div[:, k]) for k in range(len(src))])
    phi -= phi[np.arange(len(src)), src][:, None]
    if not np.isfinite(phi).all():
        raise ValueError("heat-method distances are not finite (a degenerate or disconnected mesh)")
    return phi


def vertex_distances_robust(vertices: np.ndarray, faces: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Heat-method geodesic distance (J, V) from potpourri3d's robust solver, one source at a time: the labels
    before issue 16, kept as the reference the tests and bench/heat_solvers.py compare ``vertex_distances`` to."""
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
