"""What a store of observed frames (point clouds, raw scans, depth images) says about its observations: the sanity
check of the per-frame proxies (frames where a joint has no observed surface near it) and the quality of the
normals, read from the store's ``observed/*`` arrays so a resumed run reports every frame, not only the ones it
computed. ``preprocess`` prints these lines; they are notes, not failures (a single depth view legitimately misses
surface: the store is still usable, and the notes say where its labels are doubtful)."""

from __future__ import annotations

import numpy as np

from hipnet.pipeline.stages.pointcloud import SOURCE_NAMES
from hipnet.pipeline.store.schema import ATTR
from hipnet.pipeline.store.zarrstore import done_mask, frame_ids

PROXY_LIMIT = 0.2  # m: a joint farther than this from every observed point has "no nearby surface"
SHOWN = 10


def observation_notes(group, max_proxy_distance: float = PROXY_LIMIT, shown: int = SHOWN) -> list[str]:
    """One line per (frame, joint) whose proxy is farther than ``max_proxy_distance`` from the joint (the first
    ``shown``, then a count), and one line on the normals: how they were obtained and their quality."""
    if "observed" not in group.attrs[ATTR.sections]:
        return []
    done = done_mask(group)
    if not done.any():
        return []
    ids = frame_ids(group)
    names = group.attrs[ATTR.skeleton]["names"]
    dist = np.asarray(group["observed/proxy_distance"][:])
    notes = []
    far = np.argwhere((dist > max_proxy_distance) & done[:, None])
    for f, j in far[:shown]:
        s, q, i = ids[f]
        notes.append(f"{s}/{q}/{i}: joint {names[j]} has no observed surface within {max_proxy_distance} m (nearest "
                     f"point {dist[f, j]:.3f} m); its proxy, and the labels around it, are doubtful")
    if len(far) > shown:
        frames = len(np.unique(far[:, 0]))
        notes.append(f"... and {len(far) - shown} more such joints ({frames} frames in all)")
    quality = np.asarray(group["observed/normal_quality"][:])[done]
    source = np.asarray(group["observed/normal_source"][:])[done]
    counts = ", ".join(f"{int((source == k).sum())} {name}" for k, name in SOURCE_NAMES.items() if (source == k).any())
    worst = int(np.argmax(quality[:, 2]))
    s, q, i = ids[int(np.flatnonzero(done)[worst])]
    notes.append(f"normals of {int(done.sum())} frames: {counts}; median neighbourhood variation "
                 f"{np.median(quality[:, 0]):.4f} (0 on a clean surface), {np.mean(quality[:, 1]):.2%} of normals "
                 f"the skeleton cannot orient, {np.mean(quality[:, 2]):.2%} pointing towards their nearest bone "
                 f"(most: {quality[worst, 2]:.2%} in {s}/{q}/{i})")
    return notes
