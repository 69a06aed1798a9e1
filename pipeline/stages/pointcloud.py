"""Observed frames: point clouds and raw scans without a fixed topology (seed 000 section 3.3; normals as PINA, seed
004). Pure functions, arrays in and out, the generator passed in.

- **Samples** are drawn from what was observed: area-weighted on a scan's faces (normals from its winding), or
  observed points themselves (their own normals where the input has them, else PCA normals).
- **PCA normals**: the eigenvector of the smallest eigenvalue of each point's ``K_NORMALS``-neighbourhood covariance;
  its ``variation`` lambda_min / (lambda_0 + lambda_1 + lambda_2) is 0 on a clean surface and 1/3 for isotropic
  noise. Oriented outward by the skeleton: away from the nearest bone segment (joint to parent), which is radial on
  a limb; a point whose normal is almost tangent to that direction (``AMBIGUOUS_COS``) follows the confident normals
  around it instead.
- **Labels**: heat-method geodesics on the cloud (potpourri3d ``PointCloudHeatSolver``) from one proxy per joint,
  the observed point nearest the joint (per frame: there is no fixed topology to track). The heat solver returns
  a constant on a piece that no heat reaches, so the cloud is split into pieces (connected components of its
  ``K_PIECES``-nearest-neighbour graph) and solved per piece, each from the proxies inside it. Pieces too small to
  solve (``fragment_size``) cannot hold a proxy; they and pieces without a proxy take the label of the nearest
  labelled point.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hipnet.pipeline.stages.surface import sample_surface

K_NORMALS = 16  # neighbours of a PCA normal
K_PIECES = 10  # neighbours linking points into pieces
HEAT_POINTS = 4000  # at most this many observed points carry the heat solve (labels reach the rest by nearest point)
AMBIGUOUS_COS = 0.25  # |cos(normal, outward direction)| below this: the skeleton cannot tell the side
FRAGMENT_POINTS = 32  # pieces smaller than this (or than 0.5% of the cloud) hold no proxy

# observed/normal_source codes (schema)
SOURCE_GIVEN, SOURCE_MESH, SOURCE_PCA = 0, 1, 2
SOURCE_NAMES = {SOURCE_GIVEN: "given with the frame (file or depth image)", SOURCE_MESH: "scan mesh winding",
                SOURCE_PCA: "PCA, oriented outward"}


class PcaNormals(NamedTuple):
    normals: np.ndarray  # (N, 3) unit, sign arbitrary
    variation: np.ndarray  # (N,) lambda_min / sum(lambda) of the neighbourhood, in [0, 1/3]


class CloudLabels(NamedTuple):
    labels: np.ndarray  # (N,) uint8, index of the geodesically nearest joint
    proxies: np.ndarray  # (J,) index of each joint's proxy point
    proxy_distance: np.ndarray  # (J,) distance from each joint to its proxy


class Observation(NamedTuple):
    """One observed frame's training samples and what was measured of them."""

    points: np.ndarray  # (S, 3)
    normals: np.ndarray  # (S, 3) unit, outward
    labels: np.ndarray  # (S,) uint8
    proxy_distance: np.ndarray  # (J,) distance from each joint to the nearest observed point (its proxy)
    quality: np.ndarray  # (3,) median variation, ambiguous fraction, inward fraction (``normal_quality``)
    source: int  # SOURCE_*
    count: int  # points observed (distinct), before sampling


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-20)


def pca_normals(points: np.ndarray, k: int = K_NORMALS) -> PcaNormals:
    """Unoriented normals of a cloud (N, 3) from the covariance of each point's ``k`` nearest neighbours."""
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    k = min(k, len(p))
    _, idx = cKDTree(p).query(p, k=k)
    nb = p[idx.reshape(len(p), k)]  # N x k x 3
    c = nb - nb.mean(axis=1, keepdims=True)
    w, v = np.linalg.eigh(np.einsum("nki,nkj->nij", c, c) / k)  # ascending eigenvalues
    variation = w[:, 0] / np.maximum(w.sum(axis=1), 1e-30)
    return PcaNormals(_unit_rows(v[:, :, 0]), np.clip(variation, 0.0, None))


def bone_outward(points: np.ndarray, joints: np.ndarray, parents) -> np.ndarray:
    """(N, 3) unit direction from the nearest bone segment (each joint to its parent; the root alone when the
    skeleton has one joint) to each point: outward on a body made of limbs around its bones."""
    p = np.asarray(points, dtype=np.float64)
    j = np.asarray(joints, dtype=np.float64)
    pairs = [(int(par), c) for c, par in enumerate(parents) if par >= 0] or [(0, 0)]
    a = j[[s for s, _ in pairs]]
    b = j[[e for _, e in pairs]]
    ab = b - a  # B x 3
    t = np.einsum("nbi,bi->nb", p[:, None, :] - a[None], ab) / np.maximum((ab * ab).sum(axis=1), 1e-30)
    q = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]  # N x B x 3: nearest point of each bone
    d = np.linalg.norm(p[:, None, :] - q, axis=2)
    nearest = np.argmin(d, axis=1)
    return _unit_rows(p - q[np.arange(len(p)), nearest])


def orient_outward(points: np.ndarray, normals: np.ndarray, joints: np.ndarray, parents,
                   k: int = K_NORMALS) -> np.ndarray:
    """Flip unoriented normals (N, 3) to point away from the nearest bone; where that is ambiguous (almost tangent),
    follow the confident neighbours' normals (weighted by their confidence)."""
    from scipy.spatial import cKDTree

    out = bone_outward(points, joints, parents)
    cos = np.einsum("ni,ni->n", normals, out)
    n = normals * np.where(cos < 0, -1.0, 1.0)[:, None]
    ambiguous = np.flatnonzero(np.abs(cos) < AMBIGUOUS_COS)
    if len(ambiguous) and len(points) > 1:
        confidence = np.abs(cos)
        _, idx = cKDTree(points).query(points[ambiguous], k=min(k, len(points)))
        idx = idx.reshape(len(ambiguous), -1)
        votes = np.einsum("aki,ai,ak->a", n[idx], n[ambiguous], confidence[idx])
        n[ambiguous[votes < 0]] *= -1
    return n


def normal_quality(points: np.ndarray, normals: np.ndarray, variation: np.ndarray, joints: np.ndarray,
                   parents) -> np.ndarray:
    """(3,) how far a frame's normals can be trusted: the median PCA variation of the points' neighbourhoods (noise
    and thickness; 0 on a clean surface), the fraction whose side the skeleton cannot tell (|cos| to the outward
    direction below ``AMBIGUOUS_COS``) and the fraction pointing towards their nearest bone (cos below
    -``AMBIGUOUS_COS``: for given or scan normals a check of the input; for PCA normals those the neighbours
    turned)."""
    cos = np.einsum("ni,ni->n", normals, bone_outward(points, joints, parents))
    return np.array([float(np.median(variation)), float(np.mean(np.abs(cos) < AMBIGUOUS_COS)),
                     float(np.mean(cos < -AMBIGUOUS_COS))])


def pieces(points: np.ndarray, k: int = K_PIECES) -> np.ndarray:
    """(N,) piece of each point: connected components of the symmetric ``k``-nearest-neighbour graph, numbered by
    size (0 the largest)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(points)
    k = min(k + 1, n)
    _, idx = cKDTree(points).query(points, k=k)
    idx = idx.reshape(n, k)
    graph = coo_matrix((np.ones(idx.size, dtype=np.int8), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    rank = np.empty_like(sizes)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    return rank[comp]


def fragment_size(n: int) -> int:
    """Pieces with fewer points than this hold no proxy (too small for the heat solver to be meaningful)."""
    return max(FRAGMENT_POINTS, int(0.005 * n))


HEAT_MIN_POINTS = 32  # potpourri3d's cloud solver builds a 30-neighbour graph: smaller pieces need k + 1 > N


def heat_distances(points: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Heat-method geodesic distance (len(sources), N) on one connected cloud (potpourri3d). A piece too small for
    the solver's neighbour graph (fewer than ``HEAT_MIN_POINTS``: sparse or tiny observations) gets Euclidean
    distances, which a piece that small hardly differs from."""
    import potpourri3d as pp3d

    if len(points) < HEAT_MIN_POINTS:
        return np.linalg.norm(points[None, :, :] - points[np.asarray(sources)][:, None, :], axis=-1)

    solver = pp3d.PointCloudHeatSolver(np.ascontiguousarray(points, dtype=np.float64))
    return np.stack([solver.compute_distance(int(s)) for s in sources])


def cloud_labels(points: np.ndarray, joints: np.ndarray) -> CloudLabels:
    """Joint label of each point of a cloud (N, 3) of distinct points: the joint whose proxy (the point nearest the
    joint, outside fragments) is geodesically nearest, solved piece by piece (module docstring)."""
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    joints = np.asarray(joints, dtype=np.float64)
    piece = pieces(p)
    sizes = np.bincount(piece)
    candidates = np.flatnonzero(sizes[piece] >= fragment_size(len(p)))
    if not len(candidates):
        candidates = np.flatnonzero(piece == 0)
    dist, nearest = cKDTree(p[candidates]).query(joints)
    proxies = candidates[nearest]
    d = np.full((len(joints), len(p)), np.inf)
    for pc in np.unique(piece[proxies]):
        members = np.flatnonzero(piece == pc)
        js = np.flatnonzero(piece[proxies] == pc)
        local = np.searchsorted(members, proxies[js])
        d[np.ix_(js, members)] = heat_distances(p[members], local)
    d[~np.isfinite(d)] = np.inf
    reached = np.isfinite(d).any(axis=0)
    labels = np.zeros(len(p), dtype=np.uint8)
    labels[reached] = np.argmin(d[:, reached], axis=0)
    rest = np.flatnonzero(~reached)
    if len(rest):
        got = np.flatnonzero(reached)
        _, nb = cKDTree(p[got]).query(p[rest])
        labels[rest] = labels[got[nb]]
    return CloudLabels(labels, proxies, dist)


def _distinct(points: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row, in order."""
    _, first = np.unique(np.asarray(points), axis=0, return_index=True)
    return np.sort(first)


def observe_frame(points: np.ndarray, faces: np.ndarray, normals: np.ndarray | None, joints: np.ndarray, parents,
                  n: int, rng: np.random.Generator, heat_points: int = HEAT_POINTS) -> Observation:
    """Training samples of one observed frame (canonical frame).

    Args:
        points: (V, 3) observed points, or a raw scan's vertices when ``faces`` (F, 3) is not empty.
        normals: (V, 3) the input's normals (a cloud's only), or None. Rows of (almost) zero length are estimated.
        joints: (J, 3) posed joint positions; parents: (J,) the skeleton.
        n: samples to draw; heat_points: the most points the heat solve runs on.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    # 1. samples from what was observed (a scan's surface, or the cloud's own points) and the cloud they come from
    if len(faces):
        s = sample_surface(p, faces, n, rng)
        samples, sample_normals, source = s.points, s.normals, SOURCE_MESH
        cloud = samples[_distinct(samples)]
        pca = pca_normals(cloud)
    else:
        keep = _distinct(p)
        cloud = p[keep]
        m = len(cloud)
        idx = rng.permutation(m)[:n] if m >= n else np.concatenate([rng.permutation(m), rng.integers(0, m, n - m)])
        samples = cloud[idx]
        pca = pca_normals(cloud)
        cloud_normals = orient_outward(cloud, pca.normals, joints, parents)
        source = SOURCE_PCA
        if normals is not None:
            given = np.asarray(normals, dtype=np.float64)[keep]
            ok = np.linalg.norm(given, axis=1) > 0.5
            cloud_normals[ok] = _unit_rows(given[ok])
            source = SOURCE_GIVEN if ok.all() else SOURCE_PCA
        sample_normals = cloud_normals[idx]
    # 2. labels on (at most heat_points of) the cloud, carried to the samples by nearest point
    heat = np.sort(rng.permutation(len(cloud))[:heat_points]) if len(cloud) > heat_points else np.arange(len(cloud))
    lab = cloud_labels(cloud[heat], joints)
    _, nb = cKDTree(cloud[heat]).query(samples)
    _, sample_of = cKDTree(cloud).query(samples)
    quality = normal_quality(samples, sample_normals, pca.variation[sample_of], joints, parents)
    return Observation(samples, sample_normals, lab.labels[nb], lab.proxy_distance, quality, source, len(cloud))
