"""Mesh extraction from an SDF: coarse-to-fine marching cubes over a box.

The grid has ``resolution + 1`` nodes per axis. Starting from a coarse grid (``start + 1`` nodes), each level
doubles the resolution and evaluates the SDF only at nodes of cells that may hold the surface: cells where some
corner's ``|sdf|`` is below ``margin`` times the cell diagonal (an SDF changes by at most the distance moved, so a
cell farther than its diagonal from the surface cannot contain it). Other nodes take the trilinear upsampling of the
coarser level: right sign, inexact magnitude, never a zero crossing. Every cell the final marching cubes touches has
exact corner values, so the mesh equals the one a dense evaluation gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from hipnet.model.config import EVAL
from hipnet.pipeline.core.components import largest_submesh

SDF = Callable[[np.ndarray], np.ndarray]  # (N, 3) float32 -> (N,) float; chunking is its own business (model/query.py)


class Mesh(NamedTuple):
    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32


class Grid(NamedTuple):
    values: np.ndarray  # (R+1, R+1, R+1) float32
    evaluated: int  # SDF queries spent


def _nodes(lo: np.ndarray, hi: np.ndarray, n: int) -> list[np.ndarray]:
    return [np.linspace(lo[k], hi[k], n + 1, dtype=np.float64) for k in range(3)]


def _query(sdf: SDF, points: np.ndarray) -> np.ndarray:
    return np.asarray(sdf(points.astype(np.float32)), dtype=np.float32)


def dense_grid(sdf: SDF, lo, hi, resolution: int) -> Grid:
    axes = _nodes(np.asarray(lo, float), np.asarray(hi, float), resolution)
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return Grid(_query(sdf, pts).reshape((resolution + 1,) * 3), len(pts))


def _upsample(values: np.ndarray) -> np.ndarray:
    """Trilinear 2x upsampling of a node grid (n+1)^3 -> (2n+1)^3."""
    v = values
    for axis in range(3):
        n = v.shape[axis] - 1
        shape = list(v.shape)
        shape[axis] = 2 * n + 1
        out = np.empty(shape, dtype=v.dtype)
        even = [slice(None)] * 3
        even[axis] = slice(0, None, 2)
        out[tuple(even)] = v
        odd = [slice(None)] * 3
        odd[axis] = slice(1, None, 2)
        a = [slice(None)] * 3
        a[axis] = slice(0, -1)
        b = [slice(None)] * 3
        b[axis] = slice(1, None)
        out[tuple(odd)] = 0.5 * (v[tuple(a)] + v[tuple(b)])
        v = out
    return v


def _near_cells(values: np.ndarray, threshold: float) -> np.ndarray:
    """(n, n, n) bool: cells with a corner |sdf| below ``threshold`` or a sign change."""
    a = np.abs(values)
    m = np.minimum.reduce([a[i : i + a.shape[0] - 1, j : j + a.shape[1] - 1, k : k + a.shape[2] - 1]
                           for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    s = values > 0
    corners = [s[i : i + s.shape[0] - 1, j : j + s.shape[1] - 1, k : k + s.shape[2] - 1]
               for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    change = np.logical_or.reduce(corners) & ~np.logical_and.reduce(corners)
    return (m < threshold) | change


def coarse_to_fine_grid(sdf: SDF, lo, hi, resolution: int = EVAL.resolution, start: int = 32, margin: float = 1.5) -> Grid:
    """Node values at ``resolution`` per axis, evaluating the SDF only near the surface (``resolution`` must be
    ``start`` times a power of two)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    if resolution % start or (resolution // start) & (resolution // start - 1):
        raise ValueError(f"resolution {resolution} must be start ({start}) times a power of two")
    grid = dense_grid(sdf, lo, hi, start)
    values, spent, n = grid.values, grid.evaluated, start
    while n < resolution:
        cell = (hi - lo) / n
        near = _near_cells(values, margin * float(np.linalg.norm(cell)))
        n *= 2
        values = _upsample(values)
        # nodes of the fine cells inside near coarse cells: fine node index range [2c, 2c+2] per axis
        need = np.zeros(values.shape, dtype=bool)
        ci = np.argwhere(near)
        for d in np.ndindex(3, 3, 3):
            idx = 2 * ci + np.asarray(d)
            need[idx[:, 0], idx[:, 1], idx[:, 2]] = True
        where = np.argwhere(need)
        axes = _nodes(lo, hi, n)
        pts = np.stack([axes[k][where[:, k]] for k in range(3)], axis=1)
        values[need] = _query(sdf, pts)
        spent += len(pts)
    return Grid(values, spent)


def marching_cubes(grid: np.ndarray, lo, hi) -> Mesh:
    """Zero level set of a node grid over the box [lo, hi]; empty mesh when the surface is not crossed."""
    from skimage.measure import marching_cubes as mc

    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    if not (grid.min() < 0 < grid.max()):
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))
    spacing = (hi - lo) / (np.asarray(grid.shape) - 1)
    v, f, _, _ = mc(grid, level=0.0, spacing=tuple(spacing))  # faces wound outward (towards positive values)
    return Mesh((v + lo).astype(np.float32), f.astype(np.int32))


def largest_component(mesh: Mesh) -> Mesh:
    return Mesh(*largest_submesh(mesh.vertices, mesh.faces))


def extract_mesh(sdf: SDF, lo, hi, resolution: int = EVAL.resolution, start: int = 32,
                 keep_largest: bool = True) -> tuple[Mesh, int]:
    """Coarse-to-fine marching cubes; returns (mesh, SDF queries spent)."""
    start = min(start, resolution)
    grid = coarse_to_fine_grid(sdf, lo, hi, resolution, start)
    mesh = marching_cubes(grid.values, lo, hi)
    return (largest_component(mesh) if keep_largest else mesh), grid.evaluated


def save_mesh(path, mesh: Mesh) -> None:
    """PLY or OBJ by the file's suffix."""
    import trimesh

    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(str(path))
