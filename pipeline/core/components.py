"""Connected components of a triangle mesh: the one routine behind the geodesic stage's single-shell check, the
body models' eyeball removal and the evaluation meshes' largest-part cleanup.

Two vertices are connected when a face uses both (so parts touching at one vertex are one component). Vertices that
no face uses belong to no component.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Components(NamedTuple):
    count: int  # components among the vertices faces use
    labels: np.ndarray  # (V,) int64 component of each vertex, 0..count-1 by first vertex; -1 where no face uses it


def connected_components(n_vertices: int, faces: np.ndarray) -> Components:
    """Face-connected components of a mesh with ``n_vertices`` vertices and ``faces`` (F, 3)."""
    import scipy.sparse
    import scipy.sparse.csgraph

    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    labels = np.full(n_vertices, -1, dtype=np.int64)
    if not len(f):
        return Components(0, labels)
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    graph = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))
    _, raw = scipy.sparse.csgraph.connected_components(graph, directed=False)
    used = np.zeros(n_vertices, dtype=bool)
    used[f.ravel()] = True
    ids, first, inverse = np.unique(raw[used], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # number components by their first vertex
    labels[used] = order[inverse.ravel()]
    return Components(len(ids), labels)


def count_components(n_vertices: int, faces: np.ndarray) -> int:
    return connected_components(n_vertices, faces).count


def largest_component(n_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Bool mask (V,) of the vertices of the component with the most vertices (all False for a mesh without faces)."""
    c = connected_components(n_vertices, faces)
    if c.count == 0:
        return np.zeros(n_vertices, dtype=bool)
    return c.labels == np.bincount(c.labels[c.labels >= 0]).argmax()


def keep_vertices(keep: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The faces (F', 3) int32 whose corners are all kept, renumbered into the kept vertices."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    new_index = np.cumsum(keep) - 1
    return new_index[f[keep[f].all(axis=1)]].astype(np.int32)


def largest_submesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of the largest component alone; the mesh itself when it has one component (or no faces)."""
    if not len(faces):
        return vertices, faces
    keep = largest_component(len(vertices), faces)
    if keep.all():
        return vertices, faces
    return np.asarray(vertices)[keep], keep_vertices(keep, faces)
