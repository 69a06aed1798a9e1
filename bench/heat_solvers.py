"""Per-frame geodesic labels (issue 16): today's robust heat solver against the heat method on libigl's intrinsic
Delaunay triangulation with all 22 sources as one multi-column solve, on real full-resolution Anny frames.

The candidate: intrinsic Delaunay edge flips (``igl.intrinsic_delaunay_triangulation``), the cotan Laplacian and
lumped mass of the flipped triangulation, ``(M + t L) U = delta`` for every joint's proxy at once, the unit field
``-grad u / |grad u|`` per intrinsic face (each face laid out in the plane from its edge lengths), its integrated
divergence, and ``L phi = div X``. Each sparse factorisation goes through a backend: scipy's SuperLU (always
there) and, where installed, cholespy (CHOLMOD, BSD wheel) and qdldl (wheel). None is a dependency of the
toolkit: this script measures whether one would pay.

Writes bench/results/heat_solvers.json: per-stage milliseconds per frame, the time ratio against the robust
solver in the same run (interleaved frame by frame, so load changes hit both), and the label agreement with the
robust labels on the vertices and on 25k surface samples. ``python bench/heat_solvers.py [--frames 8]``.
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


def _lower(a: sp.spmatrix) -> sp.csc_matrix:
    return sp.tril(a).tocsc()


def factor_splu(a: sp.spmatrix):
    from scipy.sparse.linalg import splu

    lu = splu(a.tocsc())
    return lu.solve


def factor_cholespy(a: sp.spmatrix):
    import cholespy

    low = _lower(a)  # CHOLMOD reads the lower triangle (the whole matrix would be factored as another one)
    solver = cholespy.CholeskySolverD(low.shape[0], low.indptr.astype(np.int32), low.indices.astype(np.int32),
                                      low.data, cholespy.MatrixType.CSC)

    def solve(b: np.ndarray) -> np.ndarray:
        x = np.empty_like(b)
        solver.solve(np.ascontiguousarray(b), x)
        return x

    return solve


def factor_qdldl(a: sp.spmatrix):
    import qdldl

    solver = qdldl.Solver(a.tocsc())
    return lambda b: np.stack([solver.solve(b[:, k]) for k in range(b.shape[1])], 1)


BACKENDS = {"splu": factor_splu, "cholespy": factor_cholespy, "qdldl": factor_qdldl}


def intrinsic_heat(vertices: np.ndarray, faces: np.ndarray, sources: np.ndarray, factor, times: dict) -> np.ndarray:
    """Heat-method distances (J, V) from each source on the intrinsic Delaunay triangulation; stage times (s) are
    added to ``times``."""
    import igl

    t0 = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal t0
        t = time.perf_counter()
        times[name] = times.get(name, 0.0) + t - t0
        t0 = t

    lengths, f = igl.intrinsic_delaunay_triangulation(igl.edge_lengths(vertices, faces), faces)[:2]
    tick("intrinsic_delaunay")
    # face layout: corner 0 at the origin, corner 1 on +x, corner 2 above; lengths[:, k] is the edge opposite k
    a, b, c = lengths.T
    x = (b * b + c * c - a * a) / (2 * c)
    y = np.sqrt(np.maximum(b * b - x * x, 0.0))
    area = 0.5 * c * y
    px, py = np.stack([-y, y, np.zeros_like(c)], 1), np.stack([x - c, -x, c], 1)  # opposite edges turned 90 deg
    n = len(vertices)
    pairs = [(i, j) for i in range(3) for j in range(3)]
    stiffness = np.concatenate([(px[:, i] * px[:, j] + py[:, i] * py[:, j]) / (4 * area) for i, j in pairs])
    rows = np.concatenate([f[:, i] for i, _ in pairs])
    cols = np.concatenate([f[:, j] for _, j in pairs])
    lap = sp.csc_matrix((stiffness, (rows, cols)), shape=(n, n))  # positive semi-definite cotan Laplacian
    mass = np.bincount(f.ravel(), np.repeat(area / 3, 3), minlength=n)
    t = float(lengths.mean()) ** 2
    delta = np.zeros((n, len(sources)))
    delta[sources, np.arange(len(sources))] = 1.0
    tick("operators")
    heat = factor((lap * t + sp.diags(mass)).tocsc())
    tick("factor_heat")
    u = heat(delta)
    tick("solve_heat")
    uf = u[f]  # (F, 3, J)
    gx, gy = np.einsum("fij,fi->fj", uf, px), np.einsum("fij,fi->fj", uf, py)
    norm = np.sqrt(gx * gx + gy * gy) + 1e-300
    corner_sum = sp.csr_matrix((np.ones(3 * len(f)), (f.T.ravel(), np.arange(3 * len(f)))), shape=(n, 3 * len(f)))
    div = corner_sum @ np.concatenate([-0.5 * (px[:, [i]] * gx + py[:, [i]] * gy) / norm for i in range(3)])
    tick("divergence")
    poisson = factor((lap + sp.diags(1e-8 * mass)).tocsc())
    tick("factor_poisson")
    phi = poisson(np.ascontiguousarray(div))
    tick("solve_poisson")
    return (phi - phi[sources, np.arange(len(sources))]).T


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
    robust_s, times = [], {k: {} for k in backends}
    agree = {k: {"vertices": [], "samples": []} for k in backends}
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
                d = intrinsic_heat(v, wf, proxies, factor, times[name])
                agree[name]["vertices"].append(float((d.argmin(0) == d0.argmin(0)).mean()))
                agree[name]["samples"].append(
                    float((sample_labels(d[:, inverse], subject.faces, face_index, bary) == labels0).mean()))
    n = len(robust_s)
    robust_ms = 1000 * sum(robust_s) / n
    result = {"frames": n, "vertices": int(len(wv)), "robust_ms_per_frame": robust_ms, "candidates": {}}
    for name in backends:
        stages = {k: 1000 * v / n for k, v in times[name].items()}
        total = sum(stages.values())
        result["candidates"][name] = {
            "ms_per_frame": total, "stage_ms_per_frame": stages, "speedup_vs_robust": robust_ms / total,
            "label_agreement_vertices_min": min(agree[name]["vertices"]),
            "label_agreement_samples_min": min(agree[name]["samples"]),
            "label_agreement_samples_mean": float(np.mean(agree[name]["samples"]))}
    result["note"] = ("robust = potpourri3d MeshHeatMethodDistanceSolver(use_robust=True), built per frame, one "
                      "compute_distance per joint (today's per-frame labels). Candidates: intrinsic Delaunay heat "
                      "method with all joints as one multi-column solve; frames interleaved with the robust solver.")
    write_result("heat_solvers", result)


if __name__ == "__main__":
    main()
