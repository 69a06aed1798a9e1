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
    width = max(2.2 * n_cols * hx / hy, 0.08 * len(title or ""), 1.6 * n_cols)  # room for the title and labels
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, 2.2 * n_rows), squeeze=False)
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


def label_colors(n: int) -> np.ndarray:
    """``n`` distinct RGB colours for joint labels (tab20 then tab20b), neighbours in the skeleton contrast."""
    import matplotlib

    base = np.concatenate([matplotlib.colormaps["tab20"].colors, matplotlib.colormaps["tab20b"].colors])
    return np.asarray(base[:n] if n <= len(base) else base[np.arange(n) % len(base)])


def labelled_points_png(path, points: np.ndarray, labels: np.ndarray, joint_names: list[str],
                        joints: np.ndarray | None = None, title: str | None = None) -> None:
    """Front and back views of surface points coloured by joint label, like figure 3 of the HIPNet paper.

    Points are drawn far to near (painter's order) so the visible surface shows; ``joints`` (J, 3) are marked.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = label_colors(len(joint_names))
    fig, axes = plt.subplots(1, 2, figsize=(8, 6.5))
    for ax, sign, name in zip(axes, (1, -1), ("front", "back"), strict=True):
        x, depth = sign * points[:, 0], sign * points[:, 2]
        order = np.argsort(depth)
        ax.scatter(x[order], points[order, 1], c=colors[labels[order]], s=0.6, linewidths=0)
        if joints is not None:
            ax.scatter(sign * joints[:, 0], joints[:, 1], c="k", s=8, marker="x", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.axis("off")
    used = sorted(set(int(k) for k in np.unique(labels)))
    handles = [plt.Line2D([], [], ls="", marker="o", ms=5, color=colors[k], label=joint_names[k]) for k in used]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
