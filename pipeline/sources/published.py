"""The published splits of AMASS, DFAUST and CAPE as manifests (``data_manifests/*.yaml``).

Facts come from FORMATS.md and the papers in seeds/ (HIPNet section 4.1; SNARF's ``lib/dataset/dfaust_split.yml``
and ``lib/dataset/jointlim.py``). Where a protocol names its sequences, the manifest lists them; where it gives
a rule ("75% of sequences per subject", "3% of frames"), the manifest writes the rule down with its seed and the
readers apply it to each file name on its own (``pipeline.sources.selection``), so a given release always gives the same
split and a missing file moves no other sequence. ``write_manifests`` wrote the committed files; tests check that
they still agree.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hipnet.pipeline.sources.selection import named_rng, round_half_up

DFAUST_GENDERS = {"50002": "male", "50004": "female", "50007": "male", "50009": "male", "50020": "female",
                  "50021": "female", "50022": "female", "50025": "female", "50026": "male", "50027": "male"}
# SNARF (lib/dataset/dfaust_split.yml): ten motions per subject, the first one held out for testing.
SNARF_MOTIONS = {
    "50002": ["chicken_wings", "hips", "jiggle_on_toes", "jumping_jacks", "knees", "light_hopping_loose",
              "light_hopping_stiff", "one_leg_jump", "one_leg_loose", "punching"],
    "50004": ["hips", "chicken_wings", "jiggle_on_toes", "jumping_jacks", "knees", "light_hopping_loose",
              "light_hopping_stiff", "one_leg_jump", "one_leg_loose", "punching"],
    "50007": ["jiggle_on_toes", "chicken_wings", "jumping_jacks", "knees", "light_hopping_loose",
              "light_hopping_stiff", "one_leg_jump", "one_leg_loose", "punching", "running_on_spot"],
    "50009": ["jumping_jacks", "chicken_wings", "hips", "jiggle_on_toes", "light_hopping_loose",
              "light_hopping_stiff", "one_leg_jump", "one_leg_loose", "punching", "running_on_spot"],
    "50020": ["knees", "chicken_wings", "hips", "jiggle_on_toes", "light_hopping_loose", "light_hopping_stiff",
              "one_leg_jump", "one_leg_loose", "punching", "running_on_spot"],
    "50021": ["light_hopping_stiff", "chicken_wings", "hips", "knees", "one_leg_jump", "one_leg_loose", "punching",
              "running_on_spot", "shake_arms", "shake_hips"],
    "50022": ["light_hopping_loose", "hips", "jiggle_on_toes", "jumping_jacks", "knees", "light_hopping_stiff",
              "one_leg_jump", "one_leg_loose", "punching", "running_on_spot"],
    "50025": ["one_leg_jump", "chicken_wings", "hips", "jiggle_on_toes", "knees", "light_hopping_loose",
              "light_hopping_stiff", "one_leg_loose", "punching", "running_on_spot"],
    "50026": ["one_leg_loose", "chicken_wings", "hips", "jiggle_on_toes", "jumping_jacks", "knees",
              "light_hopping_loose", "light_hopping_stiff", "one_leg_jump", "punching"],
    "50027": ["punching", "hips", "jiggle_on_toes", "jumping_jacks", "knees", "light_hopping_loose",
              "light_hopping_stiff", "one_leg_jump", "one_leg_loose", "running_on_spot"],
}
# SNARF (lib/dataset/jointlim.py): the PosePrior ("MPI_Limits") motions of subject 03099 used out of distribution.
POSEPRIOR_MOTIONS = ["op2", "op3", "op4", "op5", "op7", "op8", "op9"]
CAPE_SUBJECTS = ["00032", "00096", "00122", "00127", "00134", "00145", "00159", "00215", "02474", "03223", "03284",
                 "03331", "03375", "03383", "03394"]
# Frames of the CAPE release that peers found unreadable (listed in public CAPE loaders); paths below sequences/.
CAPE_CORRUPT = [
    "00032/shortlong_pose_model/shortlong_pose_model.000047.npz",
    "03394/longlong_ROM_lower/longlong_ROM_lower.000100.npz",
    "00215/poloshort_basketball/poloshort_basketball.000061.npz",
    "00096/shirtshort_chicken_wings/shirtshort_chicken_wings.000108.npz",
    "00122/shortshort_punching/shortshort_punching.000147.npz",
    "02474/longlong_ROM_lower/longlong_ROM_lower.000354.npz",
    "02474/longlong_rotate_hips/longlong_rotate_hips.000245.npz",
]
SEED = 0


def _split_listed(names: list[str], fraction: float, seed: int, key: str) -> dict[str, str]:
    """Exact split of a list known in full when the manifest is written (DFAUST's ten motions per subject): the
    sorted names permuted by ``named_rng(seed, key)``, the first ``round_half_up(fraction * n)`` (at least one of
    each) for training. The result is written into the manifest, so files on disk never change it."""
    names = sorted(names)
    n_train = min(max(round_half_up(fraction * len(names)), 1), len(names) - 1)
    order = named_rng(seed, key).permutation(len(names))
    train = {names[i] for i in order[:n_train]}
    return {n: "train" if n in train else "test" for n in names}


def _dfaust_subjects() -> list[dict]:
    return [{"name": s, "gender": g, "shape": f"DFaust/{s}"} for s, g in DFAUST_GENDERS.items()]


def _dfaust_common(dataset: str, description: str) -> dict:
    return {
        "dataset": dataset, "reader": "dfaust", "description": description, "subset": "DFaust",
        "route": "auto", "motion": "{shape}/{subject}_{name}", "translation": "zero",
        "registrations_rotation_x_deg": 90.0, "subjects": _dfaust_subjects(),
    }


def dfaust() -> dict:
    rule = {"train_fraction": 0.75, "seed": SEED}
    seqs = []
    for s, motions in SNARF_MOTIONS.items():
        split = _split_listed(motions, rule["train_fraction"], rule["seed"], key=f"dfaust/{s}")
        seqs += [{"subject": s, "name": m, "split": split[m]} for m in sorted(motions)]
    return {**_dfaust_common("dfaust", "DFAUST (AMASS DFaust_67 posed with SMPL+H, translation zeroed), HIPNet's "
                                       "split: 75% of each subject's sequences for training, 25% for test."),
            "protocol": {"source": "HIPNet section 4.1", "sequences": "SNARF's ten motions per subject",
                         "split_rule": {"per": "subject", **rule}},
            "sequences": seqs,
            "expected": {"subjects": 10, "sequences": {"train": 80, "test": 20}}}


def dfaust_snarf() -> dict:
    seqs = []
    for s, motions in SNARF_MOTIONS.items():
        seqs += [{"subject": s, "name": m, "split": "test" if i == 0 else "train"} for i, m in enumerate(motions)]
    return {**_dfaust_common("dfaust_snarf", "DFAUST as SNARF splits it: one held-out motion per subject, the "
                                             "other nine for training."),
            "protocol": {"source": "SNARF lib/dataset/dfaust_split.yml (its 'val' motion is the test motion)"},
            "sequences": seqs,
            "expected": {"subjects": 10, "sequences": {"train": 90, "test": 10}}}


def dfaust_poseprior() -> dict:
    seqs = [{"subject": s, "name": m, "split": "test", "motion": f"PosePrior/03099/{m}"}
            for s in DFAUST_GENDERS for m in POSEPRIOR_MOTIONS]
    return {"dataset": "dfaust_poseprior", "reader": "amass",
            "description": "Out-of-distribution poses: AMASS PosePrior (MPI_Limits, subject 03099) motions posed on "
                           "the ten DFAUST bodies (their SMPL+H betas and gender), translation zeroed. Test only: "
                           "evaluate models trained on dfaust_snarf or dfaust.",
            "protocol": {"source": "SNARF section 4 and lib/dataset/jointlim.py",
                         "frames": "every 10th frame (our choice: SNARF does not state its subsampling)"},
            "subset": "DFaust", "translation": "zero", "subjects": _dfaust_subjects(), "sequences": seqs,
            "frames": {"every": 10},
            "expected": {"subjects": 10, "sequences": {"test": 70}}}


def amass_transitions() -> dict:
    return {"dataset": "amass_transitions", "reader": "amass",
            "description": "AMASS Transitions: one subject, 110 motions, about 80 for training and 30 for test (each "
                           "motion's split is drawn from its name, so a missing file moves no other motion).",
            "protocol": {"source": "HIPNet section 4.1 ('randomly selected 80 sequences for training'; the draw "
                                   "is not published): train_fraction 80 / 110"},
            "subset": "Transitions", "subjects": [{"name": "mazen_c3d", "shape": "Transitions/mazen_c3d"}],
            "sequences": [],
            "select": {"split": {"train_fraction": round(80 / 110, 4), "seed": SEED}},
            "expected": {"subjects": 1, "sequences_total": 110}}


def amass_cmu() -> dict:
    return {"dataset": "amass_cmu", "reader": "amass",
            "description": "AMASS CMU: subjects with at least 5 motions (89 of them), about 75% of the motions for "
                           "training and 25% for test (each motion's split drawn from its name), 3% of the frames "
                           "of every motion.",
            "protocol": {"source": "HIPNet section 4.1"},
            "subset": "CMU", "subjects": [], "sequences": [],
            "select": {"subjects": {"min_sequences": 5}, "split": {"train_fraction": 0.75, "seed": SEED}},
            "frames": {"fraction": 0.03, "seed": SEED},
            "expected": {"subjects": 89}}


def cape() -> dict:
    return {"dataset": "cape", "reader": "cape",
            "description": "CAPE: 15 subjects in 41 subject-clothing combinations; about 75% of the sequences of "
                           "each subject-clothing combination for training, 25% for test (each sequence's split "
                           "drawn from its name); 50% of the frames of each sequence.",
            "protocol": {"source": "HIPNet section 4.1"},
            "subjects": [{"name": s} for s in CAPE_SUBJECTS], "sequences": [],
            "select": {"split": {"per": "subject-clothing", "train_fraction": 0.75, "seed": SEED}},
            "frames": {"fraction": 0.5, "seed": SEED},
            "exclude_frames": [{"file": f, "reason": "unreadable in the public release"} for f in CAPE_CORRUPT],
            "expected": {"subjects": 15, "subject_clothing": 41, "sequences_total": 609, "frames_on_disk": 148411}}


MANIFESTS = {"amass_transitions": amass_transitions, "amass_cmu": amass_cmu, "dfaust": dfaust,
             "dfaust_snarf": dfaust_snarf, "dfaust_poseprior": dfaust_poseprior, "cape": cape}

HEADER = """\
# {name}: written by hipnet.pipeline.sources.published.write_manifests() and committed; the keys are described in
# data_manifests/README.md. Do not edit by hand: change pipeline/sources/published.py and rewrite (a test checks they agree).
"""


class _Dumper(yaml.SafeDumper):
    """Quotes strings of digits (subject ids such as 00096), which YAML 1.2 readers would take for numbers."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar(
    "tag:yaml.org,2002:str", s, style="'" if s[:1].isdigit() else None))


def manifest_text(name: str) -> str:
    return HEADER.format(name=name) + yaml.dump(MANIFESTS[name](), Dumper=_Dumper, sort_keys=False, width=120)


def write_manifests(folder: Path) -> list[Path]:
    out = []
    for name in MANIFESTS:
        path = Path(folder) / f"{name}.yaml"
        path.write_text(manifest_text(name))
        out.append(path)
    return out
