"""The published splits as manifests: the committed YAML files are what pipeline.sources.published writes, load, follow the
protocols (counts, held-out motions), resolve to their readers; make preprocess passes the body models."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from hipnet.pipeline.readers import open_reader
from hipnet.pipeline.readers.amass import AmassReader
from hipnet.pipeline.readers.cape import CapeReader
from hipnet.pipeline.sources.manifest import load_manifest, manifest_path
from hipnet.pipeline.sources.published import MANIFESTS, SNARF_MOTIONS, manifest_text
from hipnet.pipeline.sources.selection import split_names

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_committed_manifest_is_what_the_protocol_module_writes(name):
    path = manifest_path(name)
    assert path.read_text() == manifest_text(name), (f"{path} differs: rewrite with "
                                                     "pipeline.sources.published.write_manifests")
    m = load_manifest(name)
    assert m["dataset"] == name and m["reader"] in ("amass", "dfaust", "cape")


def test_protocol_counts_and_held_out_motions():
    snarf = load_manifest("dfaust_snarf")
    held = {s["subject"]: s["name"] for s in snarf["sequences"] if s["split"] == "test"}
    assert held == {"50002": "chicken_wings", "50004": "hips", "50007": "jiggle_on_toes", "50009": "jumping_jacks",
                    "50020": "knees", "50021": "light_hopping_stiff", "50022": "light_hopping_loose",
                    "50025": "one_leg_jump", "50026": "one_leg_loose", "50027": "punching"}
    hipnet = load_manifest("dfaust")
    for subject, motions in SNARF_MOTIONS.items():
        mine = [s for s in hipnet["sequences"] if s["subject"] == subject]
        assert sorted(s["name"] for s in mine) == sorted(motions)
        assert sum(s["split"] == "train" for s in mine) == 8  # 75% of 10, rounded half up
    for m in (snarf, hipnet, load_manifest("dfaust_poseprior")):
        seqs = m["sequences"]
        for split, n in m["expected"]["sequences"].items():
            assert sum(s["split"] == split for s in seqs) == n
        assert {s["name"]: s["gender"] for s in m["subjects"]}["50004"] == "female"
    assert load_manifest("amass_transitions")["select"]["split"] == {"train_fraction": 0.7273, "seed": 0}  # 80 / 110
    assert load_manifest("amass_cmu")["frames"] == {"fraction": 0.03, "seed": 0}
    cape = load_manifest("cape")
    assert len(cape["subjects"]) == 15 and cape["frames"]["fraction"] == 0.5 and len(cape["exclude_frames"]) == 7


def test_split_rule_decides_each_name_on_its_own():
    """A name's split does not depend on the other names present; over many names the fraction holds."""
    rule = {"train_fraction": 0.75, "seed": 3}
    names = [f"seq{i:04d}" for i in range(2000)]
    full = split_names(names, rule, key="d/s")
    assert abs(sum(v == "train" for v in full.values()) / len(names) - 0.75) < 0.03
    rng = np.random.default_rng(0)
    part = sorted(rng.choice(names, size=700, replace=False))
    assert split_names(part + ["extra"], rule, key="d/s") == {**{n: full[n] for n in part},
                                                             "extra": split_names(["extra"], rule, "d/s")["extra"]}
    assert split_names(names, {**rule, "seed": 4}, key="d/s") != full  # the seed and key matter
    assert split_names(names, rule, key="d/t") != full
    with pytest.raises(ValueError, match="train_count is no longer supported"):
        split_names(names, {"train_count": 80}, key="d/s")


def test_manifest_names_resolve_to_their_readers(tmp_path):
    for name in ("amass_transitions", "amass_cmu", "dfaust", "dfaust_snarf", "dfaust_poseprior"):
        assert isinstance(open_reader(name, tmp_path, strict=False), AmassReader), name
    assert isinstance(open_reader("cape", tmp_path, strict=False), CapeReader)
    with pytest.raises(FileNotFoundError, match="Transitions"):
        open_reader("amass_transitions", tmp_path)
    with pytest.raises(ValueError, match="needs a manifest"):
        open_reader("amass", tmp_path)


def test_make_preprocess_passes_body_models():
    out = subprocess.run(["make", "-n", "preprocess", "DATASET=amass_cmu", "RAW=/raw/amass", "BODY_MODELS=/models",
                          "PROCESSED=/out"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.replace("\\\n", " ").splitlines() if "hipnet-data preprocess" in x)
    assert "--dataset amass_cmu --root /raw/amass" in line and "--body-models /models" in line
    out = subprocess.run(["make", "-n", "preprocess", "DATASET=anny"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert "--body-models" not in out
