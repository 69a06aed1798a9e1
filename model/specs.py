"""Poses and motions named in stores, as the application commands take them.

- ``STORE:I``: frame I of the store; ``STORE:SUBJECT/SEQUENCE/INDEX``: the frame with that key (one pose);
- ``STORE:SUBJECT/SEQUENCE``: that sequence's frames in time order (a motion).

Every function takes ``open_store`` (a path -> ``Store`` function; ``hipnet.model.compat.StoreOpener`` checks each
store against the checkpoint) so what is opened, and how it is checked, is the caller's choice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from hipnet.model.data import DataError, nonfinite_text, read_finite
from hipnet.pipeline.core.location import as_path
from hipnet.pipeline.store.reading import Store

Opener = Callable[[Path], Store]
# what hipnet-fit, -sample and -animate read from a store (those of the store's sections), checked on opening
APP_ARRAYS = ("frame/subject", "frame/sequence", "frame/index", "pose/joint_transforms", "pose/world_from_canonical",
              "subject/rest_joints", "eval/uniform_points", "eval/uniform_occupancy", "eval/near_points",
              "eval/near_occupancy", "eval/near_labels", "mesh/vertices", "mesh/faces", "snarf/uniform_points",
              "snarf/uniform_occupancy", "snarf/near_points", "snarf/near_occupancy")


def split_spec(spec: str) -> tuple[Path, str]:
    """(store path, what) of ``STORE:WHAT`` (the last colon splits, so a path may hold colons)."""
    if ":" not in spec:
        raise ValueError(f"{spec!r}: expected STORE:FRAME or STORE:SUBJECT/SEQUENCE[/INDEX]")
    path, _, what = spec.rpartition(":")
    return as_path(path), what


def frame_of(spec: str, open_store: Opener = Store.open) -> tuple[Store, int]:
    """(store, frame index) for ``STORE:I`` or ``STORE:SUBJECT/SEQUENCE/INDEX``."""
    path, what = split_spec(spec)
    store = open_store(path)
    if what.isdigit():
        i = int(what)
        if i >= store.n_frames:
            raise ValueError(f"{path}: frame {i} out of range (the store has {store.n_frames} frames)")
        return store, i
    keys = store.frame_keys()
    if what not in keys:
        raise ValueError(f"{path}: no frame {what!r} (keys look like {keys[0]!r})")
    return store, keys.index(what)


def motion_of(spec: str, open_store: Opener = Store.open) -> tuple[Store, list[int]]:
    """(store, frame indices in time order) of ``STORE:SUBJECT/SEQUENCE``."""
    path, what = split_spec(spec)
    store = open_store(path)
    keys = [key.rsplit("/", 1) for key in store.frame_keys()]
    frames = sorted((int(k), i) for i, (seq, k) in enumerate(keys) if seq == what)
    if not frames:
        names = sorted({seq for seq, _ in keys})
        more = " ..." if len(names) > 6 else ""
        raise ValueError(f"{path}: no sequence {what!r}; it has {', '.join(names[:6])}{more}")
    return store, [i for _, i in frames]


def default_pose(ckpt: Mapping) -> str:
    """``STORE:0`` for the checkpoint's first training store, when it is still where training found it."""
    first = as_path(ckpt["stores"][0])
    if not first.exists():
        raise ValueError(f"the checkpoint's training store {first} is not here; name a pose with --pose STORE:FRAME")
    return f"{first}:0"


def pose_of(spec: str | None, ckpt: Mapping, open_store: Opener = Store.open) -> tuple[np.ndarray, str]:
    """(joint transforms (J, 4, 4), a label) of the pose ``spec`` names; with None, the first training frame when
    its store is here, else the checkpoint's first example pose (bundled models carry some)."""
    examples = ckpt.get("examples") or {}
    if spec is None and examples.get("poses") and not as_path(ckpt["stores"][0]).exists():
        return np.asarray(examples["poses"][0], dtype=np.float32), f"example {examples['pose_keys'][0]}"
    store, i = frame_of(spec or default_pose(ckpt), open_store)
    return read_finite(store, "pose/joint_transforms", i), store.frame_key(i)


def rest_joints_of(ckpt: Mapping, name: str, extra: Iterable[Store] = (),
                   open_store: Opener = Store.open) -> np.ndarray | None:
    """Subject ``name``'s rest joints (J, 3) from the ``extra`` stores or the checkpoint's training stores that
    are still here, the first that has the subject, else from the checkpoint's examples (bundled models); None if
    none has it."""
    training = (open_store(as_path(p)) for p in ckpt["stores"] if as_path(p).exists())
    for store in itertools.chain(extra, training):
        if name in store.subjects:
            rest = store.read("subject/rest_joints", store.subjects.index(name))
            problem = nonfinite_text("subject/rest_joints", rest)
            if problem:
                raise DataError(f"{store.path}: subject {name}: {problem}")
            return rest
    rest = (ckpt.get("examples") or {}).get("rest_joints", {}).get(name)
    return None if rest is None else np.asarray(rest, dtype=np.float32)
