"""Deterministic selection rules that manifests write down: which sequences go to which split, which frames are used.

Pure functions of (sorted names, seed, a name-derived key): the same release on disk always gives the same split,
on any machine, in any process (seeds come from ``crc32`` of names, never Python's salted ``hash``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def named_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))


def round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def split_names(names: Sequence[str], rule: dict, key: str) -> dict[str, str]:
    """Assign each name to 'train' or 'test'.

    ``rule``: ``{"seed": s, "train_fraction": f}`` (round half up of ``f * n`` go to train, at least one each when
    ``n >= 2``) or ``{"seed": s, "train_count": k}``. The names are sorted, then permuted by a generator seeded
    with ``(s, crc32(key))``; the first ones of the permutation are the training names.
    """
    names = sorted(names)
    n = len(names)
    if "train_count" in rule:
        n_train = int(rule["train_count"])
        if n_train > n:
            raise ValueError(f"{key}: {n_train} training sequences asked for, only {n} found")
    else:
        n_train = round_half_up(float(rule["train_fraction"]) * n)
        if n >= 2:
            n_train = min(max(n_train, 1), n - 1)
    order = named_rng(rule.get("seed", 0), key).permutation(n)
    train = {names[i] for i in order[:n_train]}
    return {name: "train" if name in train else "test" for name in names}


def select_frames(n_frames: int, rule: dict | None, key: str) -> np.ndarray:
    """Positions (sorted, int64) of the frames a sequence of ``n_frames`` contributes.

    ``rule``: None (every frame), ``{"every": k}`` (frames 0, k, 2k, ...) or ``{"fraction": f, "seed": s}``
    (``max(1, round half up of f * n)`` frames drawn without replacement by a generator seeded with
    ``(s, crc32(key))``, then sorted).
    """
    if not rule:
        return np.arange(n_frames)
    if "every" in rule:
        return np.arange(0, n_frames, int(rule["every"]))
    if "fraction" in rule:
        k = min(n_frames, max(1, round_half_up(float(rule["fraction"]) * n_frames)))
        return np.sort(named_rng(rule.get("seed", 0), key).choice(n_frames, size=k, replace=False))
    raise ValueError(f"{key}: unknown frame rule {rule}; use every: K or fraction: F with seed: S")
