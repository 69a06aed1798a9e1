"""Per-frame geodesic labels (issue 16): ``vertex_distances`` (the heat method on libigl's intrinsic Delaunay
triangulation, all 22 joints as columns of one solve) against potpourri3d's robust solver, the labels before it
(``vertex_distances_robust``, one joint at a time), on real full-resolution Anny frames.

The two sparse factorisations per frame go through a backend: qdldl (the pipeline's, a dependency), scipy's
SuperLU and, where installed, cholespy (CHOLMOD; not a dependency). Writes bench/results/heat_solvers.json:
milliseconds per frame, the time ratio against the robust solver in the same run (interleaved frame by frame, so
a change of the machine's load hits both), and the label agreement with the robust labels on the vertices and on
25k surface samples. ``python bench/heat_solvers.py [--frames 8]``.
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
from hipnet.pipeline.stages.geodesics import (
    ldlt,
    proxy_vertices,
    sample_labels,
    vertex_distances,
    vertex_distances_robust,
    weld,
)
from hipnet.pipeline.stages.surface import sample_surface


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
            d0 = vertex_distances_robust(v, wf, proxies)
            robust_s.append(time.perf_counter() - t)
            labels0 = sample_labels(d0[:, inverse], subject.faces, face_index, bary)
            for name, factor in backends.items():
                t = time.perf_counter()
                d = vertex_distances(v, wf, proxies, factor=factor)
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
