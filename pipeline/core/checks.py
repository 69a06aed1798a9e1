"""Checks at the boundary (docs/architecture.md section 3): what the stages assume of every array a reader returns and of
every array a stage returns. Errors are one-line ValueErrors naming where, the array and what is wrong."""

from __future__ import annotations

import numpy as np


def numbers(where: str, name: str, a: np.ndarray) -> np.ndarray:
    """``a`` as float64, refusing strings, objects and complex numbers (a wrong dtype in a source file)."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{where}: {name} has dtype {a.dtype}, expected real numbers")
    return a.astype(np.float64)


def nonfinite(name: str, a: np.ndarray) -> str | None:
    """``"poses has 2 NaN values (of 66)"`` when ``a`` holds NaN or inf, else None."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return None
    n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    if not (n_nan or n_inf):
        return None
    kinds = " and ".join(f"{n} {k}" for n, k in ((n_nan, "NaN"), (n_inf, "inf")) if n)
    return f"{name} has {kinds} values (of {a.size})"


def require_finite(where: str, **arrays: np.ndarray | None) -> None:
    """Raise ValueError naming ``where`` and the first array with NaN or inf values."""
    for name, a in arrays.items():
        problem = None if a is None else nonfinite(name, a)
        if problem:
            raise ValueError(f"{where}: {problem}")


def bad_rows(*arrays: np.ndarray) -> np.ndarray:
    """Indices along the first axis where any of ``arrays`` holds NaN or inf (sorted, unique)."""
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        bad |= ~np.isfinite(np.asarray(a, dtype=np.float64).reshape(len(a), -1)).all(axis=1)
    return np.flatnonzero(bad)


def rows_text(rows: np.ndarray, limit: int = 8) -> str:
    """``"frames 3, 7 and 2 more"``."""
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ("frame " if len(rows) == 1 else "frames ") + shown + more
