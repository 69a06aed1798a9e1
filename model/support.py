"""Part supports for part-local evaluation (``ModelConfig.part_support``): where each sub-network's part lies.

A part's support is the axis-aligned box, in its joint's frame, of the surface points labelled with that joint
(the geodesic labels of the training stores), over frames spread through every store: so it holds every training
body and pose, and the soft tissue that moves with a joint. The training labels are used rather than one rest
shape because a body's part in its joint's frame changes with the pose (a thigh folds into the hip when sitting)
and with the body. The model grows each box by ``support_margin`` before deciding where a sub-network runs, for
the off-surface points and bodies a little beyond the training ones; outside that, the distance to the box is a
lower bound of the distance to the part, the value the part takes there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hipnet.pipeline.store.reading import Store

#: Frames read per store to bound the parts: spread evenly, so every subject and sequence of a store contributes.
SUPPORT_FRAMES = 96


def spread_frames(n_frames: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``n_frames`` (all of them when there are fewer)."""
    return np.unique(np.linspace(0, n_frames - 1, min(count, n_frames)).round().astype(np.int64))


def part_boxes(stores: Sequence[Store], num_joints: int, frames_per_store: int = SUPPORT_FRAMES) -> torch.Tensor:
    """(J, 2, 3) float32: each joint's box (lo, hi) in its own frame over the labelled surface points of
    ``frames_per_store`` frames of every store. A joint that labels no point gets the zero box at its origin."""
    lo = np.full((num_joints, 3), np.inf)
    hi = np.full((num_joints, 3), -np.inf)
    for store in stores:
        frames = spread_frames(store.n_frames, frames_per_store)
        points = store.read("surface/points", frames)  # F, S, 3
        labels = store.read("surface/labels", frames).astype(np.int64)  # F, S
        transforms = store.read("pose/joint_transforms", frames).astype(np.float64)  # F, J, 4, 4
        for x, label, t in zip(points, labels, transforms, strict=True):  # a frame at a time: S x 4 x 4 per point
            own = t[label]  # S, 4, 4: each point's joint
            local = np.einsum("sji,sj->si", own[:, :3, :3], x - own[:, :3, 3])  # R^T (x - t)
            np.minimum.at(lo, label, local)
            np.maximum.at(hi, label, local)
    empty = ~np.isfinite(lo).all(1)
    lo[empty], hi[empty] = 0.0, 0.0
    return torch.from_numpy(np.stack([lo, hi], axis=1)).float()
