"""Pictures without a GPU or a window: flat-shaded meshes drawn with matplotlib (painter's algorithm)."""

from __future__ import annotations

import numpy as np


def heading_free_view(vertices: np.ndarray, root_rotation: np.ndarray) -> np.ndarray:
    """Rotate ``vertices`` (V, 3) about +Y so a body whose root has rotation ``root_rotation`` faces +Z."""
    fwd = root_rotation[:, 2]
    yaw = np.arctan2(fwd[0], fwd[2])
    c, s = np.cos(-yaw), np.sin(-yaw)
    ry = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return vertices @ ry.T


def draw_mesh(ax, vertices: np.ndarray, faces: np.ndarray, color=(0.72, 0.78, 0.9), light=(0.3, 0.5, 1.0)) -> None:
    """Draw a mesh seen from +Z (orthographic, Y up) on a matplotlib axis, Lambert-shaded, back faces culled."""
    tri = vertices[faces]  # F x 3 x 3
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    front = n[:, 2] > 0
    order = np.argsort(tri[front, :, 2].mean(axis=1))  # far to near
    f = faces[front][order]
    light = np.asarray(light, dtype=np.float64) / np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(n[front][order] @ light, 0.0, 1.0)
    rgb = np.clip(np.asarray(color)[None, :] * shade[:, None], 0, 1)
    ax.tripcolor(vertices[:, 0], vertices[:, 1], f, facecolors=np.arange(len(f)), cmap=_listed(rgb), shading="flat")
    ax.set_aspect("equal")
    ax.axis("off")


def _listed(rgb):
    from matplotlib.colors import ListedColormap

    return ListedColormap(rgb)


def mesh_grid_png(path, rows: list[list[tuple[np.ndarray, np.ndarray]]], row_labels=None, col_labels=None, title=None):
    """A grid picture: ``rows[r][c] = (vertices, faces)``, every panel on the same scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    hx = max(np.abs(v[:, 0] - v[:, 0].mean()).max() for r in rows for v, _ in r) * 1.05
    hy = max(np.abs(v[:, 1] - v[:, 1].mean()).max() for r in rows for v, _ in r) * 1.05
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols * hx / hy, 2.2 * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(row):
                continue
            v, f = row[c]
            draw_mesh(ax, v, f)
            cx, cy = v[:, 0].mean(), v[:, 1].mean()
            ax.set_xlim(cx - hx, cx + hx)
            ax.set_ylim(cy - hy, cy + hy)
            if col_labels and r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if row_labels and c == 0:
                ax.text(-0.05, 0.5, row_labels[r], transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
