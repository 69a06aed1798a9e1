"""Evaluation points (seed 000 section 4.2): uniform in the tight bounding box stretched by 10% along its
diagonal, and near-surface points (surface samples + isotropic N(0, sigma), sigma 0.03 m; SNARF uses 0.01)."""

from __future__ import annotations

import numpy as np

from hipnet.pipeline.stages.surface import SurfaceSamples


def stretched_bbox(vertices: np.ndarray, stretch: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the tight bounding box scaled about its centre by ``1 + stretch`` (its diagonal grows 10%)."""
    lo, hi = np.min(vertices, axis=0), np.max(vertices, axis=0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * (1 + stretch)
    return centre - half, centre + half


def uniform_points(vertices: np.ndarray, n: int, rng: np.random.Generator, stretch: float = 0.1) -> np.ndarray:
    lo, hi = stretched_bbox(np.asarray(vertices, dtype=np.float64), stretch)
    return rng.uniform(lo, hi, size=(n, 3))


def near_points(samples: SurfaceSamples, n: int, rng: np.random.Generator, sigma: float = 0.03):
    """``n`` surface samples (drawn from ``samples``) displaced by N(0, sigma^2 I); returns (points, sample index)."""
    idx = rng.integers(0, len(samples.points), size=n)
    return samples.points[idx] + rng.normal(0.0, sigma, size=(n, 3)), idx
