"""Fuzzed readers (hypothesis): one file of a small valid dataset in each published format (AMASS, DFAUST, CAPE,
generic) is damaged the ways real files are (cut short, a flipped byte, emptied; in an array: NaN or inf anywhere,
another dtype, another shape, a member gone, a pickled object), and the reader lists, reads every subject and loads
every frame. The invariant: every problem is one line naming the damaged file, never an exception that escapes, and
every subject and frame that does load is finite (so nothing non-finite can reach a store).

The example budget is fixed and derandomised (``FUZZ_EXAMPLES``, 60 per format, a third of that for the slower DFAUST
reader) so this stays inside ``make test``; ``make fuzz`` runs the random hypothesis profile ``fuzz`` (400 per
format)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import (
    write_amass_body_models,
    write_amass_smplh,
    write_cape,
    write_dfaust,
    write_generic,
    write_registrations,
)

from hipnet.pipeline.readers import open_reader
from hipnet.pipeline.readers.base import LISTING_ERRORS
from hipnet.pipeline.runner.tasks import STAGE_ERRORS

settings.register_profile("default-fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
                          derandomize=True, suppress_health_check=list(HealthCheck), database=None)
settings.register_profile("fuzz", max_examples=400, deadline=None, suppress_health_check=list(HealthCheck),
                          database=None)
PROFILE = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "default-fuzz"

# ------------------------------------------------------------------------------------------------ damage

BYTE_DAMAGE = st.tuples(st.sampled_from(["truncate", "flip", "empty"]), st.floats(0, 1), st.integers(1, 255))
ARRAY_DAMAGE = st.tuples(st.sampled_from(["nan", "inf", "-inf", "dtype", "shape", "drop", "pickled"]),
                         st.integers(0, 1000), st.floats(0, 1),
                         st.sampled_from(["int8", "bool", "<U3", "complex64", "float16"]),
                         st.sampled_from(["flat", "drop_last", "add_axis", "empty"]))
DAMAGE = st.one_of(st.tuples(st.just("bytes"), BYTE_DAMAGE), st.tuples(st.just("array"), ARRAY_DAMAGE))


def damage_bytes(path: Path, how) -> None:
    kind, where, xor = how
    data = bytearray(path.read_bytes())
    if kind == "empty" or not data:
        path.write_bytes(b"")
    elif kind == "truncate":
        path.write_bytes(bytes(data[: int(where * (len(data) - 1))]))
    else:
        data[int(where * (len(data) - 1))] ^= xor
        path.write_bytes(bytes(data))


def damage_array(a: np.ndarray, how) -> np.ndarray | None:
    """``a`` damaged as ``how`` says; None: the member is removed."""
    kind, _, where, dtype, shape = how
    if kind == "drop":
        return None
    if kind == "pickled":
        return np.array([{"x": 1}], dtype=object)
    if kind in ("nan", "inf", "-inf"):
        if a.dtype.kind != "f" or a.size == 0:
            return a.astype(np.float64) if a.dtype.kind in "iu" else a
        a = a.copy()
        a.flat[int(where * (a.size - 1))] = float(kind)
        return a
    if kind == "dtype":
        return a.astype(dtype) if a.dtype.kind != "U" else a.astype("<U1")
    if a.ndim == 0:  # a scalar member (gender, frame rate): one more axis or none at all
        return a[None] if shape in ("flat", "add_axis") else np.zeros(0, dtype=a.dtype)
    if shape == "flat":
        return a.reshape(-1)
    if shape == "drop_last":
        return a[..., :-1] if a.ndim else a
    if shape == "add_axis":
        return a[None]
    return a[:0]


def damage_npz(path: Path, how) -> None:
    with np.load(path, allow_pickle=True) as z:
        arrays = {k: z[k] for k in z.files}
    key = sorted(arrays)[how[1] % len(arrays)]
    new = damage_array(arrays[key], how)
    if new is None:
        del arrays[key]
    else:
        arrays[key] = new
    np.savez(path, **arrays)


def damage_hdf5(path: Path, how) -> None:
    with h5py.File(path, "r+") as f:
        key = sorted(f)[how[1] % len(f)]
        a = np.asarray(f[key])
        new = damage_array(a, how)
        del f[key]
        if new is not None and new.dtype.kind != "O":
            f[key] = new.astype("S3") if new.dtype.kind == "U" else new


def damage(path: Path, how) -> None:
    kind, detail = how
    if kind == "bytes":
        damage_bytes(path, detail)
    elif path.suffix == ".npz":
        damage_npz(path, detail)
    elif path.suffix == ".hdf5":
        damage_hdf5(path, detail)
    else:  # PLY and others: no arrays to reach, damage the bytes
        damage_bytes(path, ("flip", detail[2], 1 + detail[1] % 255))


# ------------------------------------------------------------------------------------------------ the invariant


def _finite(what: str, obj) -> None:
    for name, value in vars(obj).items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), f"{what}: {name} holds non-finite values"


def exercise(open_it, target: Path) -> list[str]:
    """List, read every subject, load every frame: the problems, each checked to be one line naming ``target``."""
    messages = []
    try:
        reader = open_it()
        listing = reader.list_frames()
    except LISTING_ERRORS as e:  # the reader refuses the whole dataset (a file every sequence needs)
        messages.append(str(e))
    else:
        messages += [str(f) for f in listing.failures]
        for name in reader.subject_names():
            try:
                _finite(f"subject {name}", reader.subject(name))
            except STAGE_ERRORS as e:
                messages.append(str(e))
        for ref, frame in reader.load(listing.refs):
            if isinstance(frame, Exception):
                messages.append(str(frame))
            else:
                _finite(ref.key, frame)
    for m in messages:
        assert "\n" not in m.strip() and str(target) in m, (str(target), m)
    return messages


def fuzz(pristine: Path, files: list[str], open_it, data) -> None:
    which = data.draw(st.sampled_from(files))
    how = data.draw(DAMAGE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "raw"
        shutil.copytree(pristine, root)
        target = root / which
        damage(target, how)
        exercise(lambda: open_it(root), target)


# ------------------------------------------------------------------------------------------------ the formats


@pytest.fixture(scope="module")
def amass(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz_amass")
    models = write_amass_body_models(base / "bm", kinds=("smplh",), genders=("female",))
    folder = base / "raw" / "Transitions_mocap" / "mazen"
    rng = np.random.default_rng(0)
    betas = rng.normal(size=16)
    for name in ("a", "b"):
        write_amass_smplh(folder / f"{name}_poses.npz", rng, frames=3, betas=betas)
    np.savez(folder / "shape.npz", betas=betas, gender=np.array("female"))
    m = base / "m.yaml"
    m.write_text(yaml.safe_dump({"dataset": "fz", "reader": "amass", "subset": "Transitions",
                                 "subjects": [{"name": "mazen"}],
                                 "sequences": [{"subject": "mazen", "name": n, "split": "train"} for n in "ab"]}))
    return base / "raw", lambda root: open_reader(str(m), root, ("train",), models)


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_fuzzed_amass_files(amass, data):
    pristine, open_it = amass
    fuzz(pristine, ["Transitions_mocap/mazen/b_poses.npz", "Transitions_mocap/mazen/shape.npz"], open_it, data)


@pytest.fixture(scope="module")
def cape(tmp_path_factory):
    made = write_cape(tmp_path_factory.mktemp("fuzz_cape"), frames=2)
    return made["root"], lambda r: open_reader(str(made["manifest"]), r, ("train",), made["models"])


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_fuzzed_cape_files(cape, data):
    pristine, open_it = cape
    fuzz(pristine, ["cape_release/sequences/00032/shortlong_hips/shortlong_hips.000002.npz",
                    "cape_release/minimal_body_shape/00032/00032_minimal.npy"], open_it, data)


@pytest.fixture(scope="module")
def dfaust(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz_dfaust")
    made = write_dfaust(base, frames=2)
    raw = write_registrations(base / "raw", made["verts"], made["faces"])
    return raw, lambda r: open_reader(str(made["manifest"]), r, ("train",), made["models"])


@settings(settings.get_profile(PROFILE), max_examples=max(4, settings.get_profile(PROFILE).max_examples // 3))
@given(data=st.data())
def test_fuzzed_dfaust_registrations(dfaust, data):
    pristine, open_it = dfaust
    fuzz(pristine, ["registrations_m.hdf5"], open_it, data)


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    root = write_generic(tmp_path_factory.mktemp("fuzz_generic") / "raw", frames=2,
                         sequences=(("crawl", "train"),))
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix in (".npz", ".ply"))
    return root, files, lambda r: open_reader("generic", r, ("train",))


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_fuzzed_generic_files(generic, data):
    pristine, files, open_it = generic
    fuzz(pristine, files, open_it, data)


def test_the_fuzz_targets_load_cleanly_undamaged(amass, cape, dfaust, generic, tmp_path):
    """Without damage every format loads with no problem: the fuzz tests start from valid data."""
    for pristine, open_it in (amass, cape, dfaust, generic[::2]):
        assert exercise(lambda p=pristine, o=open_it: o(p), pristine) == []
