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
    ``frames_per_store`` frames of every store. A joint that labels no point gets the empty box at its origin."""
    lo = np.full((num_joints, 3), np.inf)
    hi = np.full((num_joints, 3), -np.inf)
    for store in stores:
        frames = spread_frames(store.n_frames, frames_per_store)
        points = store.read("surface/points", frames).astype(np.float64)  # F, S, 3
        labels = store.read("surface/labels", frames).astype(np.int64)  # F, S
        transforms = store.read("pose/joint_transforms", frames).astype(np.float64)  # F, J, 4, 4
        own = np.take_along_axis(transforms, labels[:, :, None, None], axis=1)  # F, S, 4, 4: the label's joint
        rot, trans = own[..., :3, :3], own[..., :3, 3]
        local = np.einsum("fsji,fsj->fsi", rot, points - trans).reshape(-1, 3)  # R^T (x - t)
        flat = labels.reshape(-1)
        np.minimum.at(lo, flat, local)
        np.maximum.at(hi, flat, local)
    empty = ~np.isfinite(lo).all(1)
    lo[empty], hi[empty] = 0.0, 0.0
    return torch.from_numpy(np.stack([lo, hi], axis=1)).float()
