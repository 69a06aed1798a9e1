"""Deterministic selection rules that manifests write down: which sequences go to which split, which frames are used.

Pure functions of (names, seed, a name-derived key): the same release on disk always gives the same split, on any
machine, in any process (seeds come from ``crc32`` of names, never Python's salted ``hash``). A sequence's split
depends on its own name only, so a missing or extra file changes nothing but its own sequence.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np


def named_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))


def round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def name_draw(seed: int, key: str, name: str) -> float:
    """The uniform number in [0, 1) that decides the split of ``name`` (a pure function of seed, key and name)."""
    return float(named_rng(seed, f"{key}/{name}").random())


def split_names(names: Iterable[str], rule: dict, key: str) -> dict[str, str]:
    """Assign each name to 'train' or 'test', each on its own.

    ``rule``: ``{"seed": s, "train_fraction": f}``. A name is 'train' when ``name_draw(s, key, name) < f``, so its
    split never depends on which other names are present: a file missing from a download, or an extra one, leaves
    every other sequence where it was. The price: the number of training names is not exactly ``f * n`` but
    binomial around it (about ``f * n +- sqrt(f (1 - f) n)``), and a small group can fall all on one side.
    """
    if "train_count" in rule:
        raise ValueError(f"{key}: split rule {rule}: train_count is no longer supported (an exact count would "
                         "reshuffle every sequence when one file is missing); write train_fraction: K / N")
    if "train_fraction" not in rule:
        raise ValueError(f"{key}: split rule {rule} lacks train_fraction")
    fraction, seed = float(rule["train_fraction"]), int(rule.get("seed", 0))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{key}: train_fraction {fraction} is not in [0, 1]")
    return {n: "train" if name_draw(seed, key, n) < fraction else "test" for n in sorted(names)}


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
