"""Occupancy of query points: inside where the generalised winding number is > 0.5.

Winding numbers are robust to the self-intersections skinned bodies have in deep flexion: where two parts overlap
(a hand through the torso, the calf pressed into the thigh) the winding number is 2, still inside. On a closed mesh
the winding number of a point is an integer and equals the signed count of surface crossings along any ray from it
(+1 where the ray leaves through a face whose normal points along it, -1 where it enters). ``occupancy`` counts
them with one ray per point (open3d's Embree scene, ``list_intersections``), about 5x cheaper than libigl's
``fast_winding_number``, and exact:

- every ray starts ``eps`` (64 float32 steps at the scene's scale) behind its point and crossings closer than
  ``eps`` to the point, crossings near an edge or vertex of the hit face (barycentric < 1e-6) and crossings of
  faces almost parallel to the ray are "doubtful": the float32 scene cannot decide them;
- a point with a doubtful crossing (about 1 in 10,000) gets its winding number from a nearby point ``p'`` whose
  ray has none, plus the integer jump between the two computed in float64 from the solid angles of the faces near
  the point (the far faces change by far less than 1/2 over so short a step); if no such ``p'`` is found, the
  solid angles of all faces (the definition).

Ray parity, the even-odd rule, answers ``w mod 2``: it is wrong exactly where parts overlap (w = 2, inside, where
parity says outside). The ``disagreements`` count is therefore the number of points inside overlapping parts: a
measure of self-overlap, not of error. A mesh that is not closed (an edge without its opposite) has no integer
winding number; it goes to ``fast_winding_number`` and an open3d ray-parity answer, whose disagreement count is
then large, which ``hipnet-data validate`` flags.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hipnet.pipeline.stages.surface import face_cross

METHODS = ("crossings", "fast-winding-number")
DIRECTION = np.array([0.5383, 0.6101, 0.5813]) / np.linalg.norm([0.5383, 0.6101, 0.5813])  # off every axis
# Offsets tried (in units of delta) for the stand-in point p' of a point with a doubtful crossing.
OFFSETS = np.array([[0.8, -0.5, 0.33], [-0.3, 0.9, -0.3], [0.25, 0.15, -0.95], [-0.6, -0.6, 0.5]])
OFFSETS = OFFSETS / np.linalg.norm(OFFSETS, axis=1, keepdims=True)
BARY_EPS = 1e-6  # a crossing this close to an edge of its face (barycentric units) is doubtful
GRAZING_EPS = 1e-6  # |cos| between the ray and the face normal below which a crossing is doubtful
NEAR = 64  # faces reaching within NEAR * delta of a point enter its float64 jump (the rest change < 1/100)


class Occupancy(NamedTuple):
    inside: np.ndarray  # (N,) bool, winding number > 0.5
    disagreements: int  # points where ray parity (even-odd) says otherwise: on a closed mesh, points where parts overlap


def is_closed(faces: np.ndarray, n_vertices: int) -> bool:
    """Whether every directed edge (a, b) of ``faces`` (F, 3) is matched by an opposite edge (b, a)."""
    f = np.asarray(faces, dtype=np.int64)
    a, b = f.ravel(), f[:, [1, 2, 0]].ravel()
    return bool(np.array_equal(np.sort(a * n_vertices + b), np.sort(b * n_vertices + a)))


def solid_angle_winding(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) generalised winding number, the definition: sum of the faces' signed solid angles / 4 pi (float64)."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    return np.array([_solid_angles(tri, p).sum() for p in np.asarray(points, dtype=np.float64)]) / (4 * np.pi)


def _solid_angles(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(K,) signed solid angle of each triangle (K, 3, 3) seen from ``p`` (Van Oosterom and Strackee)."""
    a, b, c = tri[:, 0] - p, tri[:, 1] - p, tri[:, 2] - p
    la, lb, lc = (np.sqrt(np.einsum("ij,ij->i", x, x)) for x in (a, b, c))
    det = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la
           + np.einsum("ij,ij->i", c, a) * lb)
    return 2 * np.arctan2(det, den)


class _Crossings:
    """One Embree scene of a closed mesh and the float64 data to sign and check its crossings."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, scale: float) -> None:
        import open3d as o3d

        self.o3d = o3d
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)),
                                 o3d.core.Tensor(faces.astype(np.uint32)))
        fn = face_cross(vertices, faces)
        cos = fn @ DIRECTION / np.linalg.norm(fn, axis=1)
        self.sign = np.sign(cos)
        self.grazing = ~(np.abs(cos) >= GRAZING_EPS)  # NaN (degenerate face) included
        self.eps = 64 * float(np.spacing(np.float32(scale)))

    def count(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) signed crossing count ahead of each point and (N,) bool whether any of its crossings is doubtful."""
        n = len(points)
        if n == 0:  # open3d crashes on an empty ray tensor
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
        rays = np.empty((n, 6), dtype=np.float32)
        rays[:, :3] = points - self.eps * DIRECTION
        rays[:, 3:] = DIRECTION
        hits = self.scene.list_intersections(self.o3d.core.Tensor(rays))
        ray, face = hits["ray_ids"].numpy(), hits["primitive_ids"].numpy()
        t, uv = hits["t_hit"].numpy(), hits["primitive_uvs"].numpy()
        ahead = t > self.eps
        w = np.rint(np.bincount(ray[ahead], self.sign[face[ahead]], minlength=n)).astype(np.int64)
        bary_min = np.minimum(np.minimum(uv[:, 0], uv[:, 1]), 1 - uv[:, 0] - uv[:, 1])
        doubtful_hit = (t < 2 * self.eps) | (bary_min < BARY_EPS) | self.grazing[face]
        doubtful = np.zeros(n, dtype=bool)
        doubtful[ray[doubtful_hit]] = True
        return w, doubtful


def winding_numbers(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) int64 winding number of each point (N, 3) in a closed mesh (V, 3), (F, 3) (see the module docstring).

    Raises ValueError if the mesh is not closed (its winding numbers are not integers)."""
    if not is_closed(faces, len(vertices)):
        raise ValueError("winding_numbers: the mesh is not closed (an edge without its opposite)")
    return _closed_winding_numbers(vertices, faces, points)


def _closed_winding_numbers(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    lo, hi = np.minimum(v.min(0), p.min(0)), np.maximum(v.max(0), p.max(0))
    crossings = _Crossings(v, f, max(1.0, float(np.abs(lo).max()), float(np.abs(hi).max())))
    w, doubtful = crossings.count(p)
    idx = np.flatnonzero(doubtful)
    if len(idx):
        w[idx] = _resolve(crossings, v, f, p[idx], delta=2e-4 * float(np.linalg.norm(hi - lo)))
    return w


def _resolve(crossings: _Crossings, v: np.ndarray, f: np.ndarray, p: np.ndarray, delta: float) -> np.ndarray:
    """Winding numbers of points with a doubtful crossing: w(p') of a stand-in p' = p + delta * offset whose ray has
    no doubtful crossing, plus the float64 jump w(p) - w(p') from the solid angles of the faces near p."""
    tri = v[f]
    centroid = tri.mean(axis=1)
    radius = np.sqrt(np.max(np.sum((tri - centroid[:, None]) ** 2, axis=2), axis=1))  # of each face's bounding ball
    stand_in = (p[:, None, :] + delta * OFFSETS[None]).reshape(-1, 3)
    w_stand_in, doubtful = crossings.count(stand_in)
    w_stand_in, doubtful = w_stand_in.reshape(len(p), -1), doubtful.reshape(len(p), -1)
    out = np.empty(len(p), dtype=np.int64)
    for i, q in enumerate(p):
        near = tri[np.sqrt(np.einsum("ij,ij->i", centroid - q, centroid - q)) < NEAR * delta + radius]
        for k in np.flatnonzero(~doubtful[i]):
            jump = (_solid_angles(near, q).sum() - _solid_angles(near, q + delta * OFFSETS[k]).sum()) / (4 * np.pi)
            if abs(jump - np.rint(jump)) < 0.1:
                out[i] = w_stand_in[i, k] + int(np.rint(jump))
                break
        else:  # no usable stand-in: the definition, over every face
            out[i] = int(np.rint(_solid_angles(tri, q).sum() / (4 * np.pi)))
    return out


def fast_winding_occupancy(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> Occupancy:
    """libigl's ``fast_winding_number`` (> 0.5) with an open3d ray-parity cross-check: for meshes that are not closed,
    and the previous implementation that tests and the benchmark compare against."""
    import igl
    import open3d as o3d

    w = igl.fast_winding_number(
        np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), np.asarray(points, dtype=np.float64)
    )
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)), o3d.core.Tensor(np.asarray(faces, dtype=np.uint32))
    )
    parity = scene.compute_occupancy(o3d.core.Tensor(np.asarray(points, dtype=np.float32))).numpy() > 0.5
    inside = w > 0.5
    return Occupancy(inside, int(np.count_nonzero(inside != parity)))


def occupancy(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, method: str = "crossings") -> Occupancy:
    """Occupancy of ``points`` (N, 3) in a mesh (V, 3), (F, 3); call it on the stored (quantised) coordinates.

    ``method="crossings"`` (the default) counts signed ray crossings on a closed mesh and falls back to
    ``"fast-winding-number"`` (libigl plus open3d ray parity) on a mesh that is not closed."""
    if method not in METHODS:
        raise ValueError(f"occupancy method must be one of {METHODS}, got {method!r}")
    if method == "fast-winding-number" or not is_closed(faces, len(vertices)):
        return fast_winding_occupancy(vertices, faces, points)
    w = _closed_winding_numbers(vertices, faces, points)
    inside = w >= 1
    return Occupancy(inside, int(np.count_nonzero(inside != (w % 2 == 1))))
