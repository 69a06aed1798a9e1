"""The embedded Anny dataset: manifest creation and raw-dataset generation.

Raw dataset layout (read back by ``pipeline.readers.anny``)::

    OUT/
      subjects/<subject>.npz              rest_vertices (V,3) f32, rest_joints (22,3) f32,
                                          skinning_weights (V,22) f32, faces (F,3) i32
      sequences/<subject>/<sequence>.npz  vertices (T,V,3) f32, joint_transforms (T,22,4,4) f32,
                                          local_rotations (T,22,3,3) f32, translation (T,3) f32
      dataset.yaml                        the manifest, topology, skeleton and counts; written last

Every file is written atomically and byte-deterministically; a rerun skips files already present, so an
interrupted generation resumes where it stopped. ``dataset.yaml`` marks the dataset complete.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hipnet.pipeline.core.io import read_yaml, write_npz, write_yaml
from hipnet.pipeline.core.kinematics import forward_kinematics, linear_blend_skinning
from hipnet.pipeline.core.skeleton import SMPL22
from hipnet.pipeline.embedded.body import PHENOTYPES, AnnyBody, RestShape
from hipnet.pipeline.embedded.families import ALL_FAMILIES, FAMILIES, RANDOM, family_motion
from hipnet.pipeline.embedded.motions import Motion, random_motion
from hipnet.pipeline.sources.manifest import check_split, manifest_hash

GENERATOR_VERSION = 1

# Deliberate extremes of Anny's phenotype space (each value in [0, 1]). In Anny gender 0 is male and 1 female;
# age 2/3 is the "young" adult anchor and 1 the "old" one.
EXTREMES = {
    "tall_male": {"gender": 0.0, "age": 0.7, "muscle": 0.5, "weight": 0.5, "height": 1.0, "proportions": 0.5},
    "short_female": {"gender": 1.0, "age": 0.7, "muscle": 0.5, "weight": 0.5, "height": 0.0, "proportions": 0.5},
    "heavy_male": {"gender": 0.0, "age": 0.7, "muscle": 0.3, "weight": 1.0, "height": 0.5, "proportions": 0.5},
    "slim_female": {"gender": 1.0, "age": 0.7, "muscle": 0.5, "weight": 0.0, "height": 0.5, "proportions": 0.5},
}


def sample_adult_phenotypes(seed: int, n: int) -> list[dict[str, float]]:
    """Realistic adults from Anny's ``SimpleShapeDistribution`` (morphological age 20-60), seeded."""
    import torch
    from anny.shape_distribution import SimpleShapeDistribution

    # The distribution only reads the model's dtype, device and phenotype labels.
    spec = type(
        "ModelSpec", (), {"dtype": torch.float64, "device": torch.device("cpu"), "phenotype_labels": list(PHENOTYPES)}
    )()
    ages = torch.distributions.Uniform(torch.tensor(20.0, dtype=torch.float64), torch.tensor(60.0, dtype=torch.float64))
    dist = SimpleShapeDistribution(spec, morphological_age_distribution=ages)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, kwargs = dist.sample(n)
    return [{k: round(float(kwargs[k][i]), 4) for k in PHENOTYPES} for i in range(n)]


def make_anny_manifest(
    seed: int = 0,
    n_realistic: int = 8,
    n_heldout: int = 2,
    extremes: tuple[str, ...] = tuple(EXTREMES),
    sequences_per_subject: int = 8,
    frames_per_sequence: int = 16,
    key_every: int = 8,
    topology: str = "full",
    motions: str = "procedural",
    families: tuple[str, ...] = ALL_FAMILIES,
) -> dict:
    """Write down subjects, sequences and the split once. Per training subject 75% of the sequences are
    ``train`` and 25% ``test`` (seed 000, section 4.1); held-out subjects have all their sequences in
    ``heldout`` (test-time fitting).

    ``motions="procedural"`` (the default dataset): sequences ``motionNN`` of random key poses, without a
    ``family`` field (``sequence_family`` reads them as ``random``), exactly as the shipped manifest.
    ``motions="families"``: each sequence gets a ``family`` from ``families``, assigned by the seed (per subject a
    seeded permutation of ``families``, repeated), and is named ``<family><NN>``; the split is drawn as above."""
    if motions not in ("procedural", "families"):
        raise ValueError(f"motions must be 'procedural' or 'families', got {motions!r}")
    _check_families(families)
    rng = np.random.default_rng(seed)
    family_rng = np.random.default_rng([seed, zlib.crc32(b"families")])
    people = sample_adult_phenotypes(seed, n_realistic + n_heldout)
    subjects = [{"name": f"adult{i:02d}", "kind": "realistic", "phenotypes": p} for i, p in enumerate(people)]
    subjects += [{"name": name, "kind": "extreme", "phenotypes": EXTREMES[name]} for name in extremes]
    heldout = {s["name"] for s in subjects[n_realistic : n_realistic + n_heldout]}
    n_test = max(1, round(0.25 * sequences_per_subject))
    sequences = []
    for s in subjects:
        test = set(rng.choice(sequences_per_subject, size=n_test, replace=False).tolist())
        order = family_rng.permutation(len(families)) if motions == "families" else None
        for k in range(sequences_per_subject):
            split = "heldout" if s["name"] in heldout else ("test" if k in test else "train")
            if order is None:
                sequences.append({"subject": s["name"], "name": f"motion{k:02d}", "split": split})
            else:
                family = families[order[k % len(families)]]
                sequences.append({"subject": s["name"], "name": f"{family}{k:02d}", "split": split, "family": family})
    described = "procedural motions" if motions == "procedural" else "pose families: " + ", ".join(families)
    out = {
        "dataset": "anny",
        "description": f"Embedded default dataset: Anny body model (CC0 assets) in {described}.",
        "generator": {
            "version": GENERATOR_VERSION,
            "seed": seed,
            "topology": topology,
            "motions": motions,
            "frames_per_sequence": frames_per_sequence,
            "key_every": key_every,
            "amplitude": 1.0,
        },
        "subjects": subjects,
        "sequences": sequences,
    }
    if motions == "families":
        out["generator"]["families"] = list(families)
    return _with_expected(out)


def _check_families(families) -> None:
    unknown = [f for f in families if f not in ALL_FAMILIES]
    if unknown or not families or len(set(families)) != len(families):
        raise ValueError(f"families must be distinct names from {ALL_FAMILIES}, got {tuple(families)}")


def _with_expected(manifest: dict) -> dict:
    """The manifest with its ``expected`` counts (subjects, sequences and frames per split) recomputed."""
    counts = {split: sum(q["split"] == split for q in manifest["sequences"]) for split in ("train", "test", "heldout")}
    n = manifest["generator"]["frames_per_sequence"]
    subjects = {q["subject"] for q in manifest["sequences"]}
    expected = {"subjects": sum(s["name"] in subjects for s in manifest["subjects"]), "sequences": counts,
                "frames": {k: v * n for k, v in counts.items()}}
    return {**manifest, "expected": expected}


def sequence_family(sequence: dict) -> str:
    """A sequence's pose family; sequences without the field (the default dataset's) are ``random``."""
    return sequence.get("family", RANDOM)


def add_families(manifest: dict, families: tuple[str, ...] = tuple(FAMILIES), per_family: int = 1) -> dict:
    """The manifest plus, for every subject, ``per_family`` sequences of each family (named ``<family><NN>``,
    with a ``family`` field). The manifest's own sequences, and so their data, are unchanged. Held-out subjects'
    new sequences are ``heldout``; per training subject 25% of the new sequences are ``test``, chosen by the
    manifest's seed. The generator records ``families`` and ``family_sequences``."""
    _check_families(families)
    if per_family < 1:
        raise ValueError(f"per_family must be at least 1, got {per_family}")
    gen = manifest["generator"]
    rng = np.random.default_rng([gen["seed"], zlib.crc32(b"add_families")])
    heldout = {q["subject"] for q in manifest["sequences"] if q["split"] == "heldout"}
    new = [(f, i) for f in families for i in range(per_family)]
    n_test = max(1, round(0.25 * len(new)))
    sequences = list(manifest["sequences"])
    for s in manifest["subjects"]:
        test = set(rng.choice(len(new), size=n_test, replace=False).tolist())
        for k, (family, i) in enumerate(new):
            split = "heldout" if s["name"] in heldout else ("test" if k in test else "train")
            sequences.append({"subject": s["name"], "name": f"{family}{i:02d}", "split": split, "family": family})
    description = f"{manifest['description'].rstrip('.')}; plus pose families: {', '.join(families)}."
    gen = {**gen, "families": list(families), "family_sequences": per_family}
    out = _with_expected({**manifest, "description": description, "generator": gen, "sequences": sequences})
    check_split(out)
    return out


def hold_out_family(manifest: dict, family: str) -> dict:
    """A held-out motion-family experiment from a manifest with families (``add_families`` or
    ``motions="families"``), on its training subjects (held-out subjects are left out):

    - ``train``: the ``train`` sequences of every other family;
    - ``test``: every sequence of ``family`` (never seen in training);
    - ``heldout``: the ``test`` sequences of the other families, the in-family comparison.

    No sequence is in two splits. The generator records ``held_out_family``."""
    present = {sequence_family(q) for q in manifest["sequences"]}
    if family not in present:
        raise ValueError(f"no sequence of family {family!r} in the manifest (families: {sorted(present)})")
    if present == {family}:
        raise ValueError(f"the manifest has only family {family!r}: nothing to train on")
    sequences = []
    for q in manifest["sequences"]:
        if q["split"] == "heldout":
            continue
        split = "test" if sequence_family(q) == family else ("train" if q["split"] == "train" else "heldout")
        sequences.append({**q, "split": split})
    used = {q["subject"] for q in sequences}
    description = (f"{manifest['description'].rstrip('.')}. Held-out motion family {family!r}: test holds only "
                   f"{family!r}, heldout the other families' test sequences (in-family comparison).")
    out = _with_expected({**manifest, "description": description,
                          "generator": {**manifest["generator"], "held_out_family": family},
                          "subjects": [s for s in manifest["subjects"] if s["name"] in used], "sequences": sequences})
    check_split(out)
    return out


def sequence_seed(seed: int, subject: str, sequence: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(f"anny/{subject}/{sequence}".encode())])


def pose_sequence(rest_vertices, rest_joints, weights, motion: Motion) -> tuple[np.ndarray, np.ndarray]:
    """Posed vertices (T, V, 3) and joint transforms (T, 22, 4, 4) of a subject in a motion (float64)."""
    jt = forward_kinematics(motion.local_rotations, rest_joints, SMPL22.parents, motion.translation)
    return linear_blend_skinning(rest_vertices, weights, jt, rest_joints), jt


def family_motion_source(rng: np.random.Generator, cfg: dict, sequence: dict, rest_shape: RestShape) -> Motion:
    """The default motion of a sequence: its pose family's (``family_motion``; no ``family`` field = random)."""
    family = sequence_family(sequence)
    if family == RANDOM:
        return random_motion(rng, cfg["frames_per_sequence"], cfg["key_every"], cfg.get("amplitude", 1.0))
    return family_motion(rng, family, cfg["frames_per_sequence"], cfg["key_every"], rest_shape.joints)


def _write_subjects(manifest: dict, out: Path, body: AnnyBody) -> dict[str, RestShape]:
    """Each subject's rest shape; ``subjects/<name>.npz`` written where it is missing."""
    rest = {}
    for s in manifest["subjects"]:
        shape = body.rest_shape(s["phenotypes"])
        rest[s["name"]] = shape
        path = out / "subjects" / f"{s['name']}.npz"
        if not path.exists():
            write_npz(path, {"rest_vertices": shape.vertices.astype(np.float32),
                             "rest_joints": shape.joints.astype(np.float32),
                             "skinning_weights": body.skinning_weights.astype(np.float32), "faces": body.faces})
    return rest


def _write_sequence(out: Path, seq: dict, gen: dict, shape: RestShape, body: AnnyBody, motion_source) -> int:
    """Pose and write ``sequences/<subject>/<name>.npz`` unless it exists; returns its frame count."""
    path = out / "sequences" / seq["subject"] / f"{seq['name']}.npz"
    if path.exists():  # resumed: count the frames from the small joint array only
        with np.load(path, allow_pickle=False) as z:
            return len(z["joint_transforms"])
    rng = np.random.default_rng(sequence_seed(gen["seed"], seq["subject"], seq["name"]))
    motion = motion_source(rng, gen, seq, shape)
    verts, jt = pose_sequence(shape.vertices, shape.joints, body.skinning_weights, motion)
    write_npz(path, {"vertices": verts.astype(np.float32), "joint_transforms": jt.astype(np.float32),
                     "local_rotations": motion.local_rotations.astype(np.float32),
                     "translation": motion.translation.astype(np.float32)})
    return len(verts)


def generate_dataset(
    manifest: dict,
    out: Path,
    topology: str | None = None,
    motion_source: Callable[[np.random.Generator, dict, dict, RestShape], Motion] | None = None,
    progress: Callable[[int], None] | None = None,
    body: AnnyBody | None = None,
) -> dict:
    """Generate the raw dataset of ``manifest`` into ``out``; return the summary written to dataset.yaml.

    ``motion_source(rng, generator_config, sequence, rest_shape)`` gives each sequence's motion; by default the
    sequence's pose family (``family_motion``; sequences without a ``family`` are ``random``).
    ``progress(n)`` is called after each sequence.
    """
    check_split(manifest)
    out = Path(out)
    gen = dict(manifest["generator"])
    if topology is not None:
        gen["topology"] = topology
    body = body or AnnyBody(gen["topology"])
    if body.topology != gen["topology"]:
        raise ValueError(f"body topology {body.topology!r} differs from the requested {gen['topology']!r}")
    motion_source = motion_source or family_motion_source
    marker = out / "dataset.yaml"
    if marker.exists():
        done = read_yaml(marker)
        if done.get("manifest_hash") == manifest_hash(manifest) and done.get("generator") == gen:
            return done
        raise FileExistsError(f"{out} holds a different finished dataset (dataset.yaml); choose another --out")

    rest = _write_subjects(manifest, out, body)
    n_frames = 0
    sequences = []
    for seq in manifest["sequences"]:
        length = _write_sequence(out, seq, gen, rest[seq["subject"]], body, motion_source)
        n_frames += length
        sequences.append({**seq, "frames": length})
        if progress is not None:
            progress(1)
    summary = {
        "dataset": manifest["dataset"],
        "generator": gen,
        "manifest_hash": manifest_hash(manifest),
        "skeleton": SMPL22.to_attrs(),
        "units": "metres",
        "up_axis": "+Y",
        "num_vertices": body.num_vertices,
        "num_faces": len(body.faces),
        "frames": n_frames,
        "subjects": manifest["subjects"],
        "sequences": sequences,  # the manifest's, with each sequence's frame count
    }
    write_yaml(marker, summary)
    return summary
