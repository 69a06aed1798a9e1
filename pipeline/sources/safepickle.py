"""Reading body-model ``.pkl`` files (SMPL v1.0, SMPL+H, CAPE's misc pickles) without chumpy and without trusting them.

A pickle can call any importable function while it loads, so ``pickle.load`` on a downloaded file runs whatever the
file asks for. ``SafeUnpickler`` resolves only the few globals these files need:

- ``chumpy.ch.Ch`` (a plain chumpy array: its pickled state holds the value as ``x``) becomes a numpy array;
- ``scipy.sparse`` CSC/CSR/COO matrices (SMPL's ``J_regressor``) become dense numpy arrays;
- numpy arrays, dtypes and scalars, the builtin ``set``/``frozenset``/``object`` that Python 2 pickles refer to, and
  ``_codecs.encode`` (bytes in Python 3 protocol 0/1 pickles; a pure str-to-bytes conversion).

Every other global (``os.system``, ``builtins.eval``, a chumpy expression class, ...) is refused with
``pickle.UnpicklingError`` naming it; nothing from the file is imported or executed.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np


class _Captured:
    """Stand-in for a pickled object that is never constructed: it only records the state the pickle gives it
    (pickles create objects with ``cls.__new__`` and then ``__setstate__``, without calling ``__init__``)."""

    state = None

    def __setstate__(self, state) -> None:
        self.state = state


class _ChumpyArray(_Captured):
    pass


class _SparseMatrix(_Captured):
    fmt = ""


def _sparse_class(fmt: str) -> type:
    return type(f"_{fmt}_matrix", (_SparseMatrix,), {"fmt": fmt})


_SPARSE = {fmt: _sparse_class(fmt) for fmt in ("csc", "csr", "coo")}
_STAND_INS = (_ChumpyArray, *_SPARSE.values())


class _Reconstructor:
    """``copyreg._reconstructor`` (protocol 0/1 pickles) limited to our stand-ins on ``object``.

    An object, not a module function, so a pickle cannot give it state: BUILD on it (``__setstate__``) is refused,
    and with no ``__dict__`` there is nothing to set attributes in, so one file cannot change how the next loads.
    """

    __slots__ = ()

    def __call__(self, cls, base, state):
        if base is not object or cls not in _STAND_INS:
            raise pickle.UnpicklingError(f"refused: copyreg._reconstructor({cls!r}, {base!r})")
        return cls.__new__(cls)

    def __setstate__(self, state) -> None:
        raise pickle.UnpicklingError("refused: the pickle sets state on copyreg._reconstructor")


_reconstructor = _Reconstructor()


_NUMPY = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
}
_BUILTINS = {"set": set, "frozenset": frozenset, "object": object}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals listed in the module docstring."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY:
            return _NUMPY[module, name]
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if (module, name) == ("_codecs", "encode"):  # how Python 3 protocol 0/1 pickles spell bytes
            return codecs.encode
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _reconstructor
        if module == "chumpy.ch" and name == "Ch":
            return _ChumpyArray
        if module.startswith("scipy.sparse") and name.endswith("_matrix") and name[:3] in _SPARSE:
            return _SPARSE[name[:3]]
        raise pickle.UnpicklingError(f"refused to load global {module}.{name} (only arrays are allowed)")


def _dense(obj: _SparseMatrix) -> np.ndarray:
    import scipy.sparse

    s = obj.state if isinstance(obj.state, dict) else {}
    shape = s.get("_shape", s.get("shape"))
    try:
        if obj.fmt == "coo":
            row, col = s.get("row", s.get("coords", (None, None))[0]), s.get("col", s.get("coords", (None, None))[1])
            m = scipy.sparse.coo_matrix((s["data"], (row, col)), shape=shape)
        else:
            cls = scipy.sparse.csc_matrix if obj.fmt == "csc" else scipy.sparse.csr_matrix
            m = cls((s["data"], s["indices"], s["indptr"]), shape=shape)
    except (KeyError, TypeError, ValueError) as e:
        raise pickle.UnpicklingError(f"scipy.sparse {obj.fmt} matrix with unexpected state ({e})") from e
    return np.asarray(m.toarray())


def to_numpy(obj):
    """Replace stand-ins (recursively, in dicts/lists/tuples) by numpy arrays."""
    if isinstance(obj, _ChumpyArray):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "x" not in state:
            raise pickle.UnpicklingError("a chumpy object without a stored value 'x' (an expression, not an array)")
        return np.asarray(to_numpy(state["x"]))
    if isinstance(obj, _SparseMatrix):
        return _dense(obj)
    if isinstance(obj, dict):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


def load_pickle(path: Path):
    """Load a (Python 2 or 3) pickle with ``SafeUnpickler``; chumpy/sparse values come back as numpy arrays.

    Raises ValueError naming the file when it cannot be read or asks for a global that is not allowed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="latin1").load()
        return to_numpy(obj)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: cannot read as a safe pickle ({e})") from e
    except (MemoryError, RecursionError) as e:  # a huge array header, or nesting deeper than Python's stack
        raise ValueError(f"{path}: cannot read as a safe pickle ({type(e).__name__}: the file asks for more memory "
                         "or deeper nesting than a body-model pickle has; damaged or not a model file?)") from e

