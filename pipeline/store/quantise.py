"""The 16-bit codes of a quantised store (``pipeline.store.schema``: section ``quantised``, ``DECODED_FROM``).

- Points: each coordinate as uint16 over the frame's box, ``x = lo + q (hi - lo) / 65535``; ``lo`` and ``hi`` are
  float32 bounds of the frame's points (rounded outward), stored as ``surface/box``. Error per axis at most half a
  code step, ``(hi - lo) / 131070``, plus float32 rounding of the decoded value (``point_error_bound``).
- Normals: the octahedral map (the unit sphere onto the L1 ball, the lower half folded over the diagonals, onto
  [-1, 1]^2), each coordinate as uint16 rounded to the nearest of 65536 codes. Error at most
  ``schema.NORMAL_ERROR_BOUND_RAD`` (about 0.0037 degrees; float16 normals are off by up to about 0.03).

Within each chunk of ``schema.QUANTISED_CHUNK_POINTS`` samples the rows are sorted by x code (``chunk_order``).

Pure functions, arrays in and out; encoding works in float64, decoding in float32 (what the loader wants).
"""

from __future__ import annotations

import numpy as np

from hipnet.pipeline.store.schema import QUANTISED_CHUNK_POINTS, QUANTISED_LEVELS

_F32_ULP_AT_1 = float(np.finfo(np.float32).eps)


def point_box(points: np.ndarray) -> np.ndarray:
    """(2, 3) float32 lower and upper corner holding every row of ``points`` (S, 3): the float32 min and max,
    moved outward by one float32 step where rounding put them inside."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(axis=0).astype(np.float32), p.max(axis=0).astype(np.float32)
    lo = np.where(lo > p.min(axis=0), np.nextafter(lo, np.float32(-np.inf)), lo)
    hi = np.where(hi < p.max(axis=0), np.nextafter(hi, np.float32(np.inf)), hi)
    return np.stack([lo, hi]).astype(np.float32)


def _step(box: np.ndarray) -> np.ndarray:
    """Code step per axis (..., 3) of boxes (..., 2, 3), float32 (a flat axis gets step 0)."""
    box = np.asarray(box, dtype=np.float32)
    return (box[..., 1, :] - box[..., 0, :]) / np.float32(QUANTISED_LEVELS)


def encode_points(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(S, 3) uint16 codes of ``points`` (S, 3) over ``box`` (2, 3), each the nearest code to the point."""
    box = np.asarray(box, dtype=np.float64)
    extent = box[1] - box[0]
    scale = np.divide(QUANTISED_LEVELS, extent, out=np.zeros(3), where=extent > 0)
    q = np.rint((np.asarray(points, dtype=np.float64) - box[0]) * scale)
    return np.clip(q, 0, QUANTISED_LEVELS).astype(np.uint16)


def chunk_order(codes: np.ndarray, chunk: int = QUANTISED_CHUNK_POINTS) -> np.ndarray:
    """(S,) permutation putting the rows of ``codes`` (S, 3) in x-code order within each run of ``chunk`` rows
    (stable), leaving every row in its chunk: the stored order of a quantised store."""
    x = np.asarray(codes)[:, 0].astype(np.int64)
    chunk_of = np.arange(len(x)) // chunk
    return np.lexsort((x, chunk_of))


def decode_points(codes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """float32 points (..., S, 3) of ``codes`` (..., S, 3) over boxes (..., 2, 3)."""
    box = np.asarray(box, dtype=np.float32)
    return box[..., :1, :] + np.asarray(codes, dtype=np.float32) * _step(box)[..., None, :]


def point_error_bound(box: np.ndarray) -> np.ndarray:
    """Largest distance (m) between a point and its decoded code, per box (..., 2, 3): half a code step per axis,
    combined, plus three float32 rounding steps of the largest coordinate per axis."""
    box = np.asarray(box, dtype=np.float64)
    half = 0.5 * np.abs(box[..., 1, :] - box[..., 0, :]) / QUANTISED_LEVELS
    rounding = 3 * _F32_ULP_AT_1 * np.abs(box).max(axis=-2)
    return np.linalg.norm(half + rounding, axis=-1)


def _sign(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0, -1.0).astype(x.dtype)


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """(S, 2) uint16 octahedral codes of unit vectors ``normals`` (S, 3)."""
    n = np.asarray(normals, dtype=np.float64)
    v = n / np.maximum(np.abs(n).sum(axis=1, keepdims=True), 1e-300)  # onto the L1 ball
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    low = z < 0  # fold the lower half over the diagonals
    fx = np.where(low, (1 - np.abs(y)) * _sign(x), x)
    fy = np.where(low, (1 - np.abs(x)) * _sign(y), y)
    q = np.rint((np.stack([fx, fy], axis=1) + 1) * (0.5 * QUANTISED_LEVELS))
    return np.clip(q, 0, QUANTISED_LEVELS).astype(np.uint16)


def decode_normals(codes: np.ndarray) -> np.ndarray:
    """float32 unit vectors (..., 3) of octahedral codes (..., 2)."""
    f = np.asarray(codes, dtype=np.float32) * np.float32(2 / QUANTISED_LEVELS) - np.float32(1)
    x, y = f[..., 0], f[..., 1]
    z = 1 - np.abs(x) - np.abs(y)
    t = np.maximum(-z, 0)  # unfold the lower half
    v = np.stack([x - _sign(x) * t, y - _sign(y) * t, z], axis=-1)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)
