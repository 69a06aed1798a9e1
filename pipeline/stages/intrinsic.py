"""Intrinsic Delaunay triangulations by edge flips, vectorised in rounds.

The heat method needs a Laplacian with non-negative cotan weights; a skinned body mesh has thousands of obtuse
slivers (negative weights), so the Laplacian is built on the intrinsic Delaunay triangulation: the same surface
metric (the mesh's edge lengths), re-triangulated by flipping every edge whose opposite angles sum past pi
(Fisher et al. 2006; Sharp, Soliman & Crane 2019).

Flips run in rounds: each round flips, at once, the non-Delaunay edges that violate most among those sharing a
triangle with them (no two share a triangle, so the round is the same as flipping them one by one), and the next
round checks only the edges whose angles a flip changed. On 12k-vertex Anny poses (about 3,300 flips each) this
takes a sixth to a fifth of the time of libigl's ``intrinsic_delaunay_triangulation`` for the same triangulation
(``bench/heat_solvers.py``).

Half-edge ``h = 3 f + k`` is the side of face ``f`` opposite its corner ``k`` (from corner k+1 to corner k+2, the
column order of ``igl.edge_lengths``); ``twin[h]`` is the opposite half-edge (-1 on a boundary) and ``eid[h]``
the undirected edge's id, an index into the per-edge length array. Flipped edges get new ids, after all others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NON_DELAUNAY = 1e-10  # an edge flips when its two opposite cotangents sum below -NON_DELAUNAY (ties never flip)


class NonManifoldError(ValueError):
    """The mesh is not an oriented 2-manifold (an edge with more than two faces, or two faces that disagree)."""


def halfedge_twins(faces: np.ndarray) -> np.ndarray:
    """(3F,) twin of each half-edge, -1 on a boundary. Raises NonManifoldError where the mesh is not manifold."""
    f = np.asarray(faces, dtype=np.int64)
    n = int(f.max()) + 1
    tail, head = f[:, [1, 2, 0]].ravel(), f[:, [2, 0, 1]].ravel()  # half-edge 3f+k: corner k+1 -> corner k+2
    key = tail * n + head
    order = np.argsort(key, kind="stable")
    if (np.diff(key[order]) == 0).any():
        raise NonManifoldError("an edge is used twice in the same direction (non-manifold or flipped faces)")
    twin_key = head * n + tail
    pos = np.searchsorted(key[order], twin_key)
    pos = np.minimum(pos, len(key) - 1)
    found = key[order][pos] == twin_key
    return np.where(found, order[pos], -1)


def _cotangent(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Cotangent of the angle opposite side ``a`` of triangles with sides a, b, c (Heron's area)."""
    s = 0.5 * (a + b + c)
    area = np.sqrt(np.maximum(s * (s - a) * (s - b) * (s - c), 1e-300))
    return (b * b + c * c - a * a) / (4 * area)


def corner_cotangents(lengths: np.ndarray) -> np.ndarray:
    """(F, 3) cotangent of the angle at each corner of triangles with side lengths (F, 3) (column k opposite k)."""
    a, b, c = lengths.T
    return np.stack([_cotangent(a, b, c), _cotangent(b, c, a), _cotangent(c, a, b)], 1)


def _diagonal(a, b, c, d, e):
    """New diagonal |i m| of the quad i, j, m, l (sides a=|ij|, b=|li|, c=|jm|, d=|ml|, diagonal e=|jl|) laid out
    flat, and whether the quad is convex at j and l (the flip is valid)."""
    cos1 = (a * a + e * e - b * b) / (2 * a * e)  # angle at j in triangle i j l
    cos2 = (e * e + c * c - d * d) / (2 * e * c)  # angle at j in triangle l j m
    cos3 = (b * b + e * e - a * a) / (2 * b * e)  # angle at l in triangle i j l
    cos4 = (e * e + d * d - c * c) / (2 * e * d)  # angle at l in triangle l j m
    theta_j = np.arccos(np.clip(cos1, -1, 1)) + np.arccos(np.clip(cos2, -1, 1))
    theta_l = np.arccos(np.clip(cos3, -1, 1)) + np.arccos(np.clip(cos4, -1, 1))
    new = np.sqrt(np.maximum(a * a + c * c - 2 * a * c * np.cos(theta_j), 0.0))
    return new, (theta_j < np.pi) & (theta_l < np.pi) & (new > 0)


def _names_its_edge(twin: np.ndarray) -> np.ndarray:
    """Mask of the half-edges that name their undirected edge (one per edge)."""
    return (twin < 0) | (np.arange(len(twin)) < twin)


@dataclass
class Triangulation:
    """A mutable intrinsic triangulation: faces (F, 3), twin and eid per half-edge (3F,), edge count."""

    faces: np.ndarray
    twin: np.ndarray
    eid: np.ndarray
    n_edges: int

    @classmethod
    def of_mesh(cls, faces: np.ndarray) -> Triangulation:
        f = np.array(faces, dtype=np.int64)
        twin = halfedge_twins(f)
        first = _names_its_edge(twin)
        eid = np.empty(len(twin), dtype=np.int64)
        eid[first] = np.arange(int(first.sum()))
        eid[~first] = eid[twin[~first]]
        return cls(f, twin, eid, int(first.sum()))

    def copy(self) -> Triangulation:
        return Triangulation(self.faces.copy(), self.twin.copy(), self.eid.copy(), self.n_edges)

    def edge_halfedges(self) -> np.ndarray:
        """One half-edge of each current edge: the lower-numbered of a twin pair, every boundary half-edge."""
        return np.flatnonzero(_names_its_edge(self.twin))

    def halfedge_ends(self, h: np.ndarray) -> np.ndarray:
        """(len(h), 2) tail and head vertex of the half-edges ``h``."""
        f, k = h // 3, h % 3
        return np.stack([self.faces[f, (k + 1) % 3], self.faces[f, (k + 2) % 3]], 1)

    def edge_vertices(self) -> np.ndarray:
        """(E, 2) end vertices of each current edge id."""
        out = np.zeros((self.n_edges, 2), dtype=np.int64)
        out[self.eid] = np.stack([self.faces[:, [1, 2, 0]].ravel(), self.faces[:, [2, 0, 1]].ravel()], 1)
        return out

    def face_lengths(self, ell: np.ndarray) -> np.ndarray:
        return ell[self.eid].reshape(-1, 3)

    def cotangent(self, h: np.ndarray, ell: np.ndarray) -> np.ndarray:
        """Cotangent of the angle opposite each half-edge of ``h``, in its face."""
        f, k = h // 3, h % 3
        return _cotangent(*(ell[self.eid[3 * f + (k + i) % 3]] for i in range(3)))

    def non_delaunay(self, ell: np.ndarray, tol: float = NON_DELAUNAY,
                     among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Half-edges (one per edge) of the interior edges whose opposite angles sum past pi, and by how much
        (minus the sum of the two cotangents); all edges, or the edges of the half-edges ``among``."""
        if among is None:
            h = np.flatnonzero(self.twin > np.arange(len(self.twin)))
        else:
            inner = among[self.twin[among] >= 0]
            h = np.unique(np.minimum(inner, self.twin[inner]))
        excess = -(self.cotangent(h, ell) + self.cotangent(self.twin[h], ell))
        bad = excess > tol
        return h[bad], excess[bad]

    def independent(self, h: np.ndarray, priority: np.ndarray) -> np.ndarray:
        """The half-edges of ``h`` whose priority is the highest among those of ``h`` touching either face."""
        rank = np.empty(len(h), dtype=np.int64)
        rank[np.argsort(priority, kind="stable")] = np.arange(len(h))  # unique priorities
        f1, f2 = h // 3, self.twin[h] // 3
        best = np.full(len(self.faces), -1, dtype=np.int64)
        np.maximum.at(best, f1, rank)
        np.maximum.at(best, f2, rank)
        return h[(rank == best[f1]) & (rank == best[f2])]

    def quads(self, h: np.ndarray) -> np.ndarray:
        """(5, K) half-edges i->j, l->i, j->m, m->l, j->l of the quads around the interior half-edges ``h``."""
        t = self.twin[h]
        f1, k1, f2, k2 = h // 3, h % 3, t // 3, t % 3
        return np.stack([3 * f1 + (k1 + 2) % 3, 3 * f1 + (k1 + 1) % 3, 3 * f2 + (k2 + 1) % 3,
                         3 * f2 + (k2 + 2) % 3, h])

    def apply(self, h: np.ndarray, quad: np.ndarray, new_len: np.ndarray, ell: np.ndarray) -> np.ndarray:
        """Flip the interior half-edges ``h`` (no two sharing a face; ``quad`` from ``quads``) to new diagonals of
        lengths ``new_len``; returns the lengths of all edge ids, the new ones appended."""
        t = self.twin[h]
        f1, k1, f2, k2 = h // 3, h % 3, t // 3, t % 3
        vi, vj = self.faces[f1, k1], self.faces[f1, (k1 + 1) % 3]
        vl, vm = self.faces[f1, (k1 + 2) % 3], self.faces[f2, k2]
        # 1. the four outer half-edges move to their slots in the new faces (i, j, m) and (m, l, i)
        old = np.concatenate([quad[0], quad[2], quad[1], quad[3]])
        moved = np.concatenate([3 * f1 + 2, 3 * f1, 3 * f2, 3 * f2 + 2])
        remap = np.arange(len(self.twin))
        remap[old] = moved
        old_twin, old_eid = self.twin[old], self.eid[old]
        self.faces[f1] = np.stack([vi, vj, vm], 1)
        self.faces[f2] = np.stack([vm, vl, vi], 1)
        self.eid[moved] = old_eid
        outer = old_twin >= 0
        self.twin[moved] = np.where(outer, remap[np.maximum(old_twin, 0)], -1)
        self.twin[remap[old_twin[outer]]] = moved[outer]
        # 2. the new diagonal i-m, twinned across the two faces
        d1, d2 = 3 * f1 + 1, 3 * f2 + 1
        self.twin[d1], self.twin[d2] = d2, d1
        self.eid[d1] = self.eid[d2] = self.n_edges + np.arange(len(h))
        self.n_edges += len(h)
        return np.concatenate([ell, new_len])

    def make_delaunay(self, ell: np.ndarray, tol: float = NON_DELAUNAY, max_rounds: int = 10_000) -> np.ndarray:
        """Flip until no interior edge's opposite cotangents sum below ``-tol``; returns the lengths of all edge
        ids."""
        among = None  # first every edge, then those a flip can have changed: the rest of the bad ones, and the
        for _ in range(max_rounds):  # sides of the faces just flipped (no other face's angles changed)
            bad, excess = self.non_delaunay(ell, tol, among)
            if len(bad) == 0:
                return ell
            h = self.independent(bad, excess)
            faces = np.concatenate([h // 3, self.twin[h] // 3])
            among = np.concatenate([bad, (3 * faces[:, None] + np.arange(3)).ravel()])
            quad = self.quads(h)
            new_len, valid = _diagonal(*ell[self.eid[quad]])
            if not valid.all():  # cannot happen for Delaunay flips of a valid metric
                raise ValueError("an intrinsic edge flip folded its quad (edge lengths violate the triangle "
                                 "inequality)")
            ell = self.apply(h, quad, new_len, ell)
        raise RuntimeError(f"intrinsic Delaunay flips did not finish in {max_rounds} rounds")
