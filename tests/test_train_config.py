"""Training configuration: one parser for files and checkpoints with one error (the key and the source, one line),
Literal choices checked, and hipnet-train's override options derived from TrainConfig with no defaults of their own."""

from __future__ import annotations

from dataclasses import MISSING, fields, replace

import click
import pytest

from hipnet.model.config import PRESETS, ModelConfig, TrainConfig, load_config
from hipnet.model.precision import resolve


@pytest.mark.parametrize("text, key", [
    ("base: small\nlearnin_rate: 0.01\n", "learnin_rate"),
    ("base: small\nmodel: {hidden: 32, hiden: 16}\n", "model.'hiden'"),
])
def test_a_misspelt_key_in_a_config_file_names_the_key_and_the_file(tmp_path, text, key):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        load_config(str(f))
    message = str(e.value)
    assert message.startswith(f"{f}: unknown config key ") and key.split(".")[-1].strip("'") in message
    assert key.startswith("model.") == ("model." in message) and "\n" not in message


def test_checkpoint_configs_share_the_parser():
    d = PRESETS["fast"].to_dict()
    assert TrainConfig.from_dict(d) == PRESETS["fast"]
    with pytest.raises(ValueError, match=r"^checkpoint: unknown config key 'lrr'"):
        TrainConfig.from_dict(d | {"lrr": 1.0}, source="checkpoint")
    with pytest.raises(ValueError, match=r"^checkpoint: unknown config key model\.'widht'"):
        TrainConfig.from_dict(d | {"model": d["model"] | {"widht": 3}}, source="checkpoint")


@pytest.mark.parametrize("key, value", [("amp", "fp16"), ("lr_schedule", "step")])
def test_closed_choices_are_checked_from_the_literal(tmp_path, key, value):
    with pytest.raises(ValueError, match=key):
        replace(PRESETS["small"], **{key: value})
    with pytest.raises(ValueError, match="aggregation"):
        ModelConfig(aggregation="max")
    f = tmp_path / "c.json"
    f.write_text(f'{{"base": "small", "{key}": "{value}"}}')
    with pytest.raises(ValueError, match=rf"^{f}: {key} must be one of"):
        load_config(str(f))


def test_an_unknown_base_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("base: tiny\n")
    with pytest.raises(ValueError, match=rf"^{f}: base 'tiny' is not a preset"):
        load_config(str(f))


def test_every_train_override_option_is_a_config_field_without_a_default():
    from hipnet.cli.train import main

    run_options = {"shards", "more_shards", "config", "out", "resume", "max_minutes", "fit_schedule", "device", "help"}
    config_fields = {f.name: f for f in fields(TrainConfig)}
    overrides = [p for p in main.params if p.name not in run_options]
    assert {p.name for p in overrides} >= {"steps", "epochs", "points_per_frame", "eikonal_per_frame", "amp"}
    for p in overrides:
        assert p.name in config_fields, p.name
        assert p.default is None, (p.name, p.default)
        assert p.help == config_fields[p.name].metadata["doc"], p.name
    amp = next(p for p in overrides if p.name == "amp")
    assert isinstance(amp.type, click.Choice) and tuple(amp.type.choices) == ("auto", "fp32", "tf32", "bf16")
    # defaults live in the dataclass only: every TrainConfig field has one there, with help text
    for f in fields(TrainConfig):
        assert f.default is not MISSING or f.default_factory is not MISSING, f.name
        assert f.name == "model" or f.metadata.get("doc"), f.name


def test_precision_modes_resolve_per_device():
    assert resolve("auto", "cpu") == "fp32" and resolve("auto", "cuda:0") == "tf32"
    assert resolve("tf32", "cpu") == "tf32" and resolve("bf16", "cpu") == "bf16"


def test_part_balance_outside_zero_one_is_refused_with_the_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("base: fast\npart_balance: 1.5\n")
    with pytest.raises(ValueError, match=r"cfg.yaml: part_balance must be within \[0, 1\], got 1.5"):
        load_config(str(path))


def test_one_default_preset_everywhere(tmp_path):
    """The CLI, a YAML file without `base`, and the Makefile all take DEFAULT_PRESET, the preset that learns on a
    CPU; `paper` stays a choice whose measured behaviour the help states."""
    import re
    from pathlib import Path

    from hipnet.cli.train import main
    from hipnet.model.config import DEFAULT_PRESET

    assert DEFAULT_PRESET == "fast"
    option = next(p for p in main.params if p.name == "config")
    assert option.default == DEFAULT_PRESET and "paper" in option.help and "does not learn on a CPU" in option.help
    f = tmp_path / "mine.yaml"
    f.write_text("lr: 0.002\n")
    assert load_config(str(f)) == replace(PRESETS[DEFAULT_PRESET], lr=0.002)
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert re.search(r"^TRAIN_CONFIG \?= (\S+)$", makefile, re.M).group(1) == DEFAULT_PRESET
