"""Heat-method geodesic distances for many poses of one mesh (Crane et al. 2013, on the intrinsic Delaunay
triangulation): the per-frame labels of seed 000 section 3.3 at a fraction of the cost of a solver built per frame.

Per pose (``PoseHeat.distances``):

1. the mesh's edge lengths, mollified (every triangle inequality holds by a margin; Sharp & Crane 2020);
2. the pose's intrinsic Delaunay triangulation (``intrinsic.Triangulation.make_delaunay``);
3. heat ``(M + t L) U = delta`` for all J sources (t = mean edge length squared, M lumped mass, L the cotan
   Laplacian), the unit field ``X = -grad u / |grad u|`` per intrinsic triangle, then ``(L + 1e-8 M) phi =
   div X``, each column shifted to 0 at its source. Both matrices share one sparsity pattern: one sparse LDL^T
   (qdldl: ordering, elimination tree, numeric factor) serves the heat step, a numeric refactorisation the Poisson
   step.

Against potpourri3d's robust solver built per frame (``geodesics.vertex_distances``, the reference), the labels
agree on 99.9% of samples of full-resolution Anny poses (``bench/heat_solvers.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import qdldl
import scipy.sparse as sp

from hipnet.pipeline.stages.intrinsic import Triangulation, corner_cotangents

MOLLIFY = 1e-6  # every triangle inequality holds by this fraction of the mean edge length
POISSON_SHIFT = 1e-8  # (L + shift M): L alone is singular


def mollified_lengths(vertices: np.ndarray, ends: np.ndarray, tri: Triangulation) -> np.ndarray:
    """(E,) length of each edge (``ends`` (E, 2) vertex ids), all raised by the same amount so that each triangle's
    sides beat the triangle inequality by ``MOLLIFY`` times the mean length."""
    ell = np.linalg.norm(vertices[ends[:, 0]] - vertices[ends[:, 1]], axis=1)
    sides = ell[tri.eid].reshape(-1, 3)
    slack = sides.sum(1, keepdims=True) - 2 * sides  # l_i + l_j - l_k >= 0, per corner k
    return ell + max(0.0, MOLLIFY * float(ell.mean()) - float(slack.min()))


def intrinsic_layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each triangle laid out in its plane from its side lengths (F, 3), column k opposite corner k: the sides
    opposite each corner turned by 90 degrees, x and y components (F, 3) each, and the areas (F,). The gradient of a
    linear function with corner values u is ``sum_k u_k turned_k / (2 area)``."""
    a, b, c = lengths.T
    x = (b * b + c * c - a * a) / (2 * c)  # corner 0 at the origin, corner 1 on +x, corner 2 at (x, y)
    y = np.sqrt(np.maximum(b * b - x * x, 0.0))
    zero = np.zeros_like(c)
    return np.stack([-y, y, zero], 1), np.stack([x - c, -x, c], 1), 0.5 * c * y


class _Lap:
    """Adds the seconds since the previous call to ``times[name]`` (nothing when ``times`` is None)."""

    def __init__(self, times: dict[str, float] | None) -> None:
        self.times, self.last = times, time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.times is not None:
            now = time.perf_counter()
            self.times[name] = self.times.get(name, 0.0) + now - self.last
            self.last = now


@dataclass
class HeatStats:
    """What the poses needed: how many, and their intrinsic Delaunay flips in all."""

    poses: int = 0
    flips: int = 0


class PoseHeat:
    """Heat-method distances (J, V) from fixed source vertices on poses of one oriented manifold mesh.

    ``faces`` (F, 3) into ``n_vertices`` (welded) vertices; ``sources`` (J,) vertex ids. Raises
    ``intrinsic.NonManifoldError`` for a mesh that is not an oriented manifold."""

    def __init__(self, faces: np.ndarray, n_vertices: int, sources: np.ndarray) -> None:
        self.mesh = Triangulation.of_mesh(faces)
        self.n = n_vertices
        self.ends = self.mesh.edge_vertices()
        self.sources = np.asarray(sources, dtype=np.int64)
        self.stats = HeatStats()

    def triangulate(self, vertices: np.ndarray) -> tuple[Triangulation, np.ndarray]:
        """The intrinsic Delaunay triangulation of a pose and the lengths of its edge ids (steps 1 and 2)."""
        tri = self.mesh.copy()
        ell = tri.make_delaunay(mollified_lengths(vertices, self.ends, self.mesh))
        self.stats.flips += tri.n_edges - self.mesh.n_edges
        return tri, ell

    def _matrices(self, tri: Triangulation, lengths: np.ndarray,
                  area: np.ndarray) -> tuple[sp.csc_matrix, sp.csc_matrix]:
        """Upper triangles of the heat matrix ``M + t L`` and the Poisson matrix ``L + shift M`` on ``tri`` with
        face side lengths (F, 3) and areas (F,): one sparsity pattern, so one symbolic factorisation serves both."""
        n = self.n
        cot = corner_cotangents(lengths)
        weight = np.bincount(tri.eid, 0.5 * cot.ravel(), minlength=tri.n_edges)  # cotan weight per edge id
        h = tri.edge_halfedges()
        u, v = tri.halfedge_ends(h).T
        w = np.where(u == v, 0.0, weight[tri.eid[h]])  # a loop edge (possible intrinsically) adds nothing to L
        diag = np.bincount(u, w, minlength=n) + np.bincount(v, w, minlength=n)
        mass = np.bincount(tri.faces.ravel(), np.repeat(area / 3, 3), minlength=n)
        lo, hi = np.minimum(u, v), np.maximum(u, v)
        # upper-triangular CSC: entries sorted by (column, row); parallel edges (also possible) add up
        keys, slot = np.unique(np.concatenate([np.arange(n) * (n + 1), hi * n + lo]), return_inverse=True)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // n, minlength=n))])
        t = float(lengths.mean()) ** 2
        return tuple(sp.csc_matrix((np.bincount(slot, np.concatenate([scale * diag + on_diag, -scale * w]),
                                                minlength=len(keys)), keys % n, indptr), shape=(n, n))
                     for scale, on_diag in ((t, mass), (1.0, POISSON_SHIFT * mass)))

    def distances(self, vertices: np.ndarray, times: dict[str, float] | None = None) -> np.ndarray:
        """(J, V) geodesic distance from each source to every vertex of the pose ``vertices`` (V, 3). ``times``:
        seconds per step are added to it (bench/heat_solvers.py's profile)."""
        lap = _Lap(times)
        v = np.asarray(vertices, dtype=np.float64)
        tri, ell = self.triangulate(v)
        self.stats.poses += 1
        lap("intrinsic_delaunay")
        lengths = tri.face_lengths(ell)
        tx, ty, area = intrinsic_layout(lengths)
        heat, poisson = self._matrices(tri, lengths, area)
        lap("matrices")
        solver = qdldl.Solver(heat, upper=True)
        lap("ordering_symbolic_numeric_factor")
        f, j = tri.faces, len(self.sources)
        n_f = len(f)
        # (2F, V): rows 2 area d/dx and d/dy of the linear function with vertex values u, per triangle
        grad = sp.csr_matrix((np.concatenate([tx.ravel(), ty.ravel()]), np.concatenate([f.ravel(), f.ravel()]),
                              np.arange(0, 6 * n_f + 1, 3)), shape=(2 * n_f, self.n))
        lap("matrices")
        delta = np.zeros(self.n)
        u = np.empty((self.n, j))
        for k, s in enumerate(self.sources):
            delta[s] = 1.0
            u[:, k] = solver.solve(delta)
            delta[s] = 0.0
        lap("heat_solves")
        g = grad @ u  # (2F, J)
        g /= np.sqrt(g[:n_f] ** 2 + g[n_f:] ** 2 + 1e-300)[np.r_[:n_f, :n_f]]  # X = grad u / |grad u|
        div = -0.5 * (grad.T @ g)  # (V, J): div of -X, by the cotan formula in the turned-edge form
        lap("gradient_divergence")
        solver.update(poisson, upper=True)  # same pattern: numeric factorisation only
        lap("numeric_refactor")
        phi = np.stack([solver.solve(div[:, k]) for k in range(j)])
        phi -= phi[np.arange(j), self.sources][:, None]
        lap("poisson_solves")
        if not np.isfinite(phi).all():
            raise ValueError("heat-method distances are not finite (a degenerate or disconnected mesh)")
        return phi
