"""Real motion for the embedded dataset: the 15 DeepMimic mocap clips shipped inside the pybullet 3.2.7 wheel.

The wheel is downloaded with pip (``pip download``, never installed) and only the clips are unpacked into the
cache. The clips come from CMU/SFU motion capture and are for research use: ``LICENCE_NOTICE`` is printed whenever
they are used; procedural motions remain the redistributable default.

Clip format: JSON ``{"Loop": ..., "Frames": [[dt, root_pos(3), root_quat(wxyz), chest q, neck q, r_hip q,
r_knee angle, r_ankle q, r_shoulder q, r_elbow angle, l_hip q, l_knee angle, l_ankle q, l_shoulder q,
l_elbow angle], ...]}``; Y up, facing +X, right side towards +Z; the zero pose has the limbs hanging straight
down; knees and elbows are hinges about +Z.

Retargeting onto a subject (toolkit frame: Y up, facing +Z, left towards +X):
1. every rotation R is conjugated by ``C`` (a -90 degree turn about Y taking +X to +Z): ``C R C^T``;
2. the chest rotation is shared equally by spine1..3, the neck rotation by neck and head;
3. each limb segment starts from the subject's rest direction rather than straight down: with ``Q_u`` the
   rotation taking the rest direction of the segment below joint u to -Y, joint u gets ``Q_parent^T R Q_u``
   (``Q`` is the identity at the trunk, below the ankle and at the wrist, whose rest directions already agree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.kinematics import axis_angle_to_matrix, quaternion_to_matrix
from hipnet.pipeline.core.skeleton import SMPL22
from hipnet.pipeline.embedded.body import RestShape
from hipnet.pipeline.embedded.motions import Motion

CLIPS = (
    "backflip", "cartwheel", "crawl", "dance_a", "dance_b", "getup_facedown", "getup_faceup", "jump", "kick",
    "punch", "roll", "run", "spin", "spinkick", "walk",
)
WHEEL = "pybullet==3.2.7"
LICENCE_NOTICE = (
    "DeepMimic motion clips (from the pybullet 3.2.7 wheel) come from CMU and SFU motion capture and are "
    "provided for research use only; do not redistribute datasets made from them."
)
C = axis_angle_to_matrix(np.array([0.0, -np.pi / 2, 0.0]))  # DeepMimic (+X forward) -> toolkit (+Z forward)
_DOWN = np.array([0.0, -1.0, 0.0])
_Z = np.array([0.0, 0.0, 1.0])


def clips_dir() -> Path:
    """``$XDG_CACHE_HOME/hipnet/deepmimic`` (default ``~/.cache/hipnet/deepmimic``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hipnet" / "deepmimic"


def fetch_clips(dest: Path | None = None) -> Path:
    """Download the pybullet wheel with pip (not installed) and unpack only the 15 clips into ``dest``."""
    dest = Path(dest or clips_dir())
    if all((dest / f"humanoid3d_{c}.txt").exists() for c in CLIPS):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--only-binary=:all:", "-d", tmp, "-q"]
        subprocess.run(cmd, check=True)
        wheels = sorted(Path(tmp).glob("pybullet-*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download {WHEEL} produced no wheel in {tmp}")
        with zipfile.ZipFile(wheels[0]) as z:
            for c in CLIPS:
                data = z.read(f"pybullet_data/data/motions/humanoid3d_{c}.txt")
                (dest / f"humanoid3d_{c}.txt").write_bytes(data)
    return dest


def read_clip(path: Path) -> np.ndarray:
    """(T, 44) frames of a DeepMimic clip; errors name the file."""
    try:
        frames = np.asarray(json.loads(Path(path).read_text())["Frames"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a DeepMimic clip ({e})") from e
    if frames.ndim != 2 or frames.shape[1] != 44:
        raise ValueError(f"{path}: expected frames of 44 values, got shape {frames.shape}")
    return frames


def _hinge(angle: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(angle[:, None] * _Z)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit direction ``a`` to ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        return np.eye(3)
    return axis_angle_to_matrix(axis / s * np.arctan2(s, c))


def _fraction(r: np.ndarray, f: float) -> np.ndarray:
    """``r`` to the power ``f`` (same axis, angle scaled)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(Rotation.from_matrix(r).as_rotvec() * f).as_matrix()


def retarget(frames: np.ndarray, rest: RestShape) -> Motion:
    """DeepMimic frames (T, 44) -> a Motion on a subject with rest joints ``rest.joints`` (toolkit frame)."""
    q = lambda i: quaternion_to_matrix(frames[:, i : i + 4])  # noqa: E731
    conj = lambda r: C @ r @ C.T  # noqa: E731
    n = len(frames)
    local = np.broadcast_to(np.eye(3), (n, SMPL22.num_joints, 3, 3)).copy()
    j = SMPL22.index
    local[:, j("pelvis")] = conj(q(4))
    chest = conj(q(8))
    for name in ("spine1", "spine2", "spine3"):
        local[:, j(name)] = _fraction(chest, 1 / 3)
    neck = conj(q(12))
    local[:, j("neck")] = _fraction(neck, 0.5)
    local[:, j("head")] = _fraction(neck, 0.5)
    limbs = {  # DeepMimic columns: upper quaternion, hinge angle, ankle quaternion (None for arms)
        "R": ((16, 20, 21), (25, 29, None)),
        "L": ((30, 34, 35), (39, 43, None)),
    }
    for side, (leg, arm) in limbs.items():
        for (upper, mid, low), (cu, cm, cl) in ((("hip", "knee", "ankle"), leg), (("shoulder", "elbow", "wrist"), arm)):
            u, m, lo = j(f"{side}_{upper}"), j(f"{side}_{mid}"), j(f"{side}_{low}")
            q_upper = _rotation_between(rest.joints[m] - rest.joints[u], _DOWN)
            q_mid = _rotation_between(rest.joints[lo] - rest.joints[m], _DOWN)
            local[:, u] = conj(q(cu)) @ q_upper
            local[:, m] = q_upper.T @ conj(_hinge(frames[:, cm])) @ q_mid
            if cl is not None:  # the foot points forward in both zero poses: no offset below the ankle
                local[:, lo] = q_mid.T @ conj(q(cl))
            # the hand continues the forearm in both zero poses: the wrist keeps the identity
    root = frames[:, 1:4] @ C.T
    translation = root - rest.joints[0]
    return Motion(local_rotations=local, translation=translation)


def deepmimic_manifest(manifest: dict, every: int = 2) -> dict:
    """The manifest with its sequences replaced by the 15 clips per subject (75/25 split per training subject,
    chosen with the manifest's seed; held-out subjects keep all clips held out). Every ``every``-th frame."""
    rng = np.random.default_rng(manifest["generator"]["seed"])
    heldout = {q["subject"] for q in manifest["sequences"] if q["split"] == "heldout"}
    sequences = []
    n_test = round(0.25 * len(CLIPS))
    for s in manifest["subjects"]:
        test = set(rng.choice(len(CLIPS), size=n_test, replace=False).tolist())
        for k, clip in enumerate(CLIPS):
            split = "heldout" if s["name"] in heldout else ("test" if k in test else "train")
            sequences.append({"subject": s["name"], "name": clip, "split": split})
    gen = dict(manifest["generator"], motions="deepmimic", frame_step=every)
    out = dict(manifest, generator=gen, sequences=sequences)
    out.pop("expected", None)
    return out


def add_deepmimic(manifest: dict, every: int = 8) -> dict:
    """The manifest plus, for every subject, one sequence per clip (named after the clip, with a ``clip`` field;
    every ``every``-th frame of it): the mix of the manifest's own motions with real motion capture. The
    manifest's own sequences, and so their data, are unchanged. Held-out subjects' clips are ``heldout``; per
    training subject 4 of the 15 clips (25%) are ``test``, chosen by the manifest's seed. The generator records
    ``deepmimic_frame_step``; the clips' lengths differ, so the manifest has no ``expected`` frame counts."""
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    gen = manifest["generator"]
    taken = {(q["subject"], q["name"]) for q in manifest["sequences"]}
    clash = [f"{s}/{c}" for s in (x["name"] for x in manifest["subjects"]) for c in CLIPS if (s, c) in taken]
    if clash:
        raise ValueError(f"the manifest already has sequences named after DeepMimic clips ({', '.join(clash[:3])})")
    rng = np.random.default_rng([gen["seed"], zlib.crc32(b"add_deepmimic")])
    heldout = {q["subject"] for q in manifest["sequences"] if q["split"] == "heldout"}
    n_test = round(0.25 * len(CLIPS))
    sequences = list(manifest["sequences"])
    for s in manifest["subjects"]:
        test = set(rng.choice(len(CLIPS), size=n_test, replace=False).tolist())
        for k, clip in enumerate(CLIPS):
            split = "heldout" if s["name"] in heldout else ("test" if k in test else "train")
            sequences.append({"subject": s["name"], "name": clip, "split": split, "clip": clip})
    description = f"{manifest['description'].rstrip('.')}; plus the DeepMimic clips (every {every}th frame)."
    out = {**manifest, "description": description, "generator": {**gen, "deepmimic_frame_step": every},
           "sequences": sequences}
    out.pop("expected", None)
    return out


def sequence_clip(gen: dict, sequence: dict) -> str | None:
    """The DeepMimic clip a sequence plays: its ``clip`` field (``add_deepmimic``), or its name in a dataset made
    only of clips (``deepmimic_manifest``); None for the procedural motions."""
    if "clip" in sequence:
        return sequence["clip"]
    return sequence["name"] if gen.get("motions") == "deepmimic" else None


def deepmimic_motion_source(folder: Path | None = None) -> Callable:
    """A ``motion_source`` for ``generate_dataset``: a clip's sequences retarget it, the others get their procedural
    motion (random key poses or their pose family). Fetches the clips once, prints the licence notice."""
    from hipnet.pipeline.embedded.generate import family_motion_source

    print(LICENCE_NOTICE, file=sys.stderr)
    folder = fetch_clips(folder)

    def source(rng: np.random.Generator, gen: dict, sequence: dict, rest: RestShape) -> Motion:
        clip = sequence_clip(gen, sequence)
        if clip is None:
            return family_motion_source(rng, gen, sequence, rest)
        step = gen.get("deepmimic_frame_step", gen.get("frame_step", 1))
        return retarget(read_clip(folder / f"humanoid3d_{clip}.txt")[::step], rest)

    return source
