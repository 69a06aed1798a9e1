"""One config mechanism: every command's options for a config's fields are made from the config dataclass
(``pipeline.core.fields``, ``cli.params.config_options``), so a default lives in one place. A command that states a
default (or help) of its own for such a field fails here, and so does a function whose keyword default differs."""

from __future__ import annotations

import inspect
from dataclasses import fields

import click
import pytest

from hipnet.cli.apps import animate_main, fit_main, sample_main
from hipnet.cli.data import main as data_main
from hipnet.cli.eval import main as eval_main
from hipnet.cli.params import config_options
from hipnet.cli.train import OVERRIDES
from hipnet.cli.train import main as train_main
from hipnet.model import animate, api, apps, evaluate, figure6, fitting, meshing
from hipnet.model.config import EvalConfig, FitConfig, TrainConfig
from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.stages.depth import DepthSensor

# command -> the configs its options come from, with the parameter prefix of each
COMMANDS = {
    "hipnet-data preprocess": (data_main.commands["preprocess"], [(PreprocessConfig, "")]),
    "hipnet-data depth": (data_main.commands["depth"], [(PreprocessConfig, ""), (DepthSensor, "sensor_")]),
    "hipnet-eval": (eval_main, [(EvalConfig, "")]),
    "hipnet-fit": (fit_main, [(FitConfig, "")]),
    "hipnet-sample": (sample_main, [(FitConfig, "")]),
    "hipnet-animate": (animate_main, [(FitConfig, "")]),
}
# functions whose keyword arguments share a config's fields: their defaults must be the config's
FUNCTIONS = [(FitConfig, f) for f in (apps.fit_code, apps.posed_mesh, fitting.fit_observation, figure6.run_figure6,
                                      api.Model.mesh, api.Model.fit_code, animate.retarget_motion,
                                      animate.interpolate_keyframes, animate.blend_subjects)] + [
    (EvalConfig, f) for f in (evaluate.evaluate_model, evaluate.evaluate_store, meshing.extract_mesh,
                              meshing.coarse_to_fine_grid)]


def stated_defaults(command: click.Command, configs) -> list[str]:
    """Options of ``command`` named after a field of ``configs`` whose default or help is not the field's."""
    problems = []
    for param in command.params:
        for cls, prefix in configs:
            field = next((f for f in fields(cls) if prefix + f.name == param.name), None)
            if field is None:
                continue
            given_only = prefix and param.default is None  # passed to the config only when given
            if not given_only and param.default != field.default:
                problems.append(f"{param.name}: default {param.default!r}, {cls.__name__} says {field.default!r}")
            if not (param.help or "").startswith(field.metadata["doc"]):
                problems.append(f"{param.name}: help is not {cls.__name__}.{field.name}'s")
    return problems


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_states_no_default_of_its_own(name):
    command, configs = COMMANDS[name]
    assert stated_defaults(command, configs) == []
    named = {p.name for p in command.params}
    for cls, prefix in configs:  # every field of the config is an option (depth takes three of preprocess's)
        wanted = {"surface_points", "shard_frames", "seed"} if name.endswith("depth") and cls is PreprocessConfig \
            else {f.name for f in fields(cls)}
        if cls is FitConfig and name != "hipnet-fit":
            wanted = {"resolution"}
        assert {prefix + n for n in wanted} <= named, name


def test_the_check_finds_a_hand_written_default():
    @click.command()
    @config_options(EvalConfig, ("stride",))
    @click.option("--resolution", default=128, help="Final marching-cubes resolution.")
    def cmd(stride, resolution):
        pass

    assert stated_defaults(cmd, [(EvalConfig, "")]) == ["resolution: default 128, EvalConfig says 256"]


def test_train_overrides_have_no_default_and_the_fields_help():
    params = {p.name: p for p in train_main.params}
    for name in OVERRIDES:
        assert params[name].default is None, name
        assert params[name].help == next(f.metadata["doc"] for f in fields(TrainConfig) if f.name == name)


@pytest.mark.parametrize("cls,fn", FUNCTIONS, ids=lambda x: getattr(x, "__qualname__", ""))
def test_a_function_keyword_default_is_the_configs(cls, fn):
    defaults = {f.name: f.default for f in fields(cls)}
    stated = {n: p.default for n, p in inspect.signature(fn).parameters.items()
              if n in defaults and p.default is not inspect.Parameter.empty}
    assert stated and stated == {n: defaults[n] for n in stated}
