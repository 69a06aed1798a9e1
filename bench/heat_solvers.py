"""Per-frame geodesic labels (issue 16): a candidate heat method (on libigl's intrinsic Delaunay triangulation,
after an intrinsic mollification, all 22 joints as columns of one solve) against the pipeline's labels
(``vertex_distances``: potpourri3d's robust solver, one joint at a time), on real full-resolution Anny frames.

The candidate's two sparse factorisations per frame go through a backend: scipy's SuperLU (always there) and,
where installed, qdldl and cholespy (CHOLMOD); neither is a dependency of the toolkit. It did not pay on the idle
2-core machine: 1.13x with qdldl in the committed run, slower with the others; so the pipeline keeps potpourri3d's solver.

Writes bench/results/heat_solvers.json: milliseconds per frame, the time ratio against the robust solver in the
same run (interleaved frame by frame, so a change of the machine's load hits both), and the label agreement with
the robust labels on the vertices and on 25k surface samples. ``python bench/heat_solvers.py [--frames 8]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _results import write_result

from hipnet.pipeline.embedded.body import AnnyBody
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.stages.geodesics import proxy_vertices, sample_labels, vertex_distances, weld
from hipnet.pipeline.stages.surface import sample_surface

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
    """A sparse LDL^T factorisation (qdldl, a wheel; not a dependency of the toolkit) of a symmetric positive
    definite scipy matrix; ``.solve(b)`` for a vector ``b``."""
    import qdldl

    return qdldl.Solver(matrix.tocsc())


def intrinsic_distances(vertices: np.ndarray, faces: np.ndarray, sources: np.ndarray, factor=ldlt) -> np.ndarray:
    """Heat-method geodesic distance (J, V) from each source vertex to every vertex (one connected mesh).

    On the intrinsic Delaunay triangulation: heat ``(M + t L) U = delta_sources`` (t = mean edge length squared,
    M lumped mass, L the positive semi-definite cotan Laplacian), the unit field ``X = -grad u / |grad u|`` on
    each intrinsic triangle, then ``L phi = div X`` and each column shifted to 0 at its source. ``factor``: the
    sparse factorisation (``BACKENDS``)."""
    import igl

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


class _Columns:
    """``.solve(b)`` for a vector through a solver of (n, k) blocks."""

    def __init__(self, solve) -> None:
        self._solve = solve

    def solve(self, b: np.ndarray) -> np.ndarray:
        return self._solve(np.ascontiguousarray(b[:, None]))[:, 0]


def factor_splu(a: sp.spmatrix):
    from scipy.sparse.linalg import splu

    return splu(a.tocsc())


def factor_cholespy(a: sp.spmatrix):
    import cholespy

    low = sp.tril(a).tocsc()  # CHOLMOD reads the lower triangle (the whole matrix would be factored as another one)
    solver = cholespy.CholeskySolverD(low.shape[0], low.indptr.astype(np.int32), low.indices.astype(np.int32),
                                      low.data, cholespy.MatrixType.CSC)

    def solve(b: np.ndarray) -> np.ndarray:
        x = np.empty_like(b)
        solver.solve(b, x)
        return x

    return _Columns(solve)


BACKENDS = {"qdldl": ldlt, "splu": factor_splu, "cholespy": factor_cholespy}


def frames(n: int, tmp: Path):
    manifest = make_anny_manifest(n_realistic=2, n_heldout=0, extremes=(), sequences_per_subject=2,
                                  frames_per_sequence=max(2, n // 2), key_every=4, topology="full")
    generate_dataset(manifest, tmp / "raw", body=AnnyBody("full"))
    reader = AnnyReader(tmp / "raw", ("train", "test"))
    for _, frame in reader.load(reader.frame_refs()[:n]):
        yield reader.subject(frame.subject), frame


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=8, help="real Anny frames to time (full resolution)")
    args = p.parse_args()
    backends = {}
    for name, fn in BACKENDS.items():
        try:
            fn(sp.identity(3, format="csc"))
            backends[name] = fn
        except ImportError:
            print(f"{name}: not installed, skipped")
    robust_s, times = [], {k: [] for k in backends}
    agree = {k: {"vertices": [], "samples": [], "distance": []} for k in backends}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for subject, frame in frames(args.frames, Path(tmp)):
            wv, wf, inverse = weld(subject.rest_vertices, subject.faces)
            rep = np.empty(len(wv), dtype=np.int64)
            rep[inverse] = np.arange(len(inverse))
            proxies = proxy_vertices(wv, subject.rest_joints)
            v = np.asarray(frame.vertices, dtype=np.float64)[rep]
            _, _, face_index, bary = sample_surface(frame.vertices, subject.faces, 25_000, rng)
            t = time.perf_counter()
            d0 = vertex_distances(v, wf, proxies)
            robust_s.append(time.perf_counter() - t)
            labels0 = sample_labels(d0[:, inverse], subject.faces, face_index, bary)
            for name, factor in backends.items():
                t = time.perf_counter()
                d = intrinsic_distances(v, wf, proxies, factor=factor)
                times[name].append(time.perf_counter() - t)
                agree[name]["vertices"].append(float((d.argmin(0) == d0.argmin(0)).mean()))
                agree[name]["distance"].append(float(np.median(np.abs(d - d0)) / d0.mean()))
                agree[name]["samples"].append(
                    float((sample_labels(d[:, inverse], subject.faces, face_index, bary) == labels0).mean()))
    n = len(robust_s)
    robust_ms = 1000 * sum(robust_s) / n
    result = {"frames": n, "vertices": int(len(wv)), "robust_ms_per_frame": robust_ms, "candidates": {}}
    for name in backends:
        total = 1000 * sum(times[name]) / n
        result["candidates"][name] = {
            "ms_per_frame": total, "speedup_vs_robust": robust_ms / total,
            "label_agreement_vertices_min": min(agree[name]["vertices"]),
            "label_agreement_samples_min": min(agree[name]["samples"]),
            "label_agreement_samples_mean": float(np.mean(agree[name]["samples"])),
            "distance_median_abs_difference_over_mean_max": max(agree[name]["distance"])}
    result["note"] = ("robust = potpourri3d MeshHeatMethodDistanceSolver(use_robust=True), built per frame, one "
                      "compute_distance per joint (today's per-frame labels). Candidates: intrinsic Delaunay heat "
                      "method with all joints as one multi-column solve; frames interleaved with the robust solver.")
    write_result("heat_solvers", result)


if __name__ == "__main__":
    main()
