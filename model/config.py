"""Typed configuration of the network and the training run, with the named presets; the one place a default lives.

``paper``: the sizes of seed 000 (section 3.5, appendix A): 8 x 256 sub-networks with a skip into layer 4, 256-d
subject codes, 25k surface + 25k eikonal points per frame, Adam at 1e-4. ``small``: a model that trains usefully on a
2-core CPU in minutes; ``fast``: ``small`` with the documented departures from the paper for the CPU demo; ``long``:
``fast`` trained 6,000 steps (at most 2 hours on 2 cores). A
YAML/JSON file may override any field of a preset (``base: small`` picks the preset; ``fast``, the
``DEFAULT_PRESET``, when it names none).

Every field of ``TrainConfig``, ``EvalConfig`` and ``FitConfig`` carries its help text in ``metadata["doc"]``
(``pipeline.core.fields``); the commands build their options from the fields (type, choices, help), ``hipnet-train``'s
overrides with no default of their own (an option left out keeps the preset's value). Closed choices are ``Literal``
types, checked in ``__post_init__`` against the Literal's arguments. ``parse_overrides`` is the one parser of config
mappings (files, checkpoints): a misspelt key is a one-line ``ValueError`` naming the key and the source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from hipnet.pipeline.core.fields import check_choices, doc

Aggregation = Literal["mean", "softmin"]
LrSchedule = Literal["constant", "cosine"]
# auto: tf32 on CUDA (fp32 tensors, TF32 matmuls), fp32 on CPU; see hipnet.model.precision
Amp = Literal["auto", "fp32", "tf32", "bf16"]
Gradients = Literal["autograd", "forward"]


@dataclass(frozen=True)
class ModelConfig:
    hidden: int = 256  # width of every sub-network layer
    layers: int = 8  # fully connected layers per sub-network
    skip: int = 4  # the input is concatenated again before this layer
    pose_dim: int = 128  # size of the pose encoding phi
    pose_hidden: int = 256
    code_dim: int = 256  # subject code size; 0 = single-subject mode (no codes)
    code_init_std: float = 1e-4
    aggregator_hidden: int = 256
    aggregator_layers: int = 2
    softplus_beta: float = 100.0
    sphere_radius: float = 0.5  # geometric initialisation: SDF of this sphere about the origin
    local_frames: bool = False  # beyond the paper: sub-network k sees x in joint k's frame (ablation)
    hierarchical: bool = True  # each child sub-network sees its parent's output (the paper); False: flat (ablation)
    # base of the aggregation network (an MLP residual over parts, phi, beta is added to it): "mean" = a learnt
    # weighted mean of the part SDFs; "softmin" = -tau log mean exp(-F_k / tau), a smooth union (beyond the paper)
    aggregation: Aggregation = "mean"
    softmin_tau: float = 0.01
    # softmin with the + tau log J term (equal to F where all parts equal F; up to tau log J above the closest part);
    # False: the plain smooth minimum, at or below the closest part
    softmin_offset: bool = True
    # beyond the paper: each sub-network runs only on the query points within support_margin (m) of its part's box
    # (in its joint's frame, from the training labels: model.support) or of a descendant's box (its children need
    # its output); elsewhere its part takes the distance to its box, a lower bound of the part's distance
    part_support: bool = False
    support_margin: float = 0.05

    def __post_init__(self) -> None:
        check_choices(self)
        if self.support_margin < 0:
            raise ValueError(f"support_margin must be >= 0, got {self.support_margin}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    points_per_frame: int = doc(25_000, "Surface points per frame and step.")
    eikonal_per_frame: int = doc(25_000, "Eikonal points per frame and step (half uniform in the frame's bbox, "
                                         "half near the surface).")
    part_balance: float = doc(0.0, "Beyond the paper: surface samples (and the near-surface eikonal points' "
                                   "bases) drawn with probability proportional to their part's sample count to "
                                   "the power -part_balance; 0 = uniform over the surface (the paper), 1 = as many "
                                   "per joint label as per any other, so hands and feet get more.")
    eikonal_near_sigma: float = doc(0.03, "Std (m) of the near-surface eikonal points' offset.")
    bbox_margin: float = doc(0.1, "Eikonal uniform points: the frame's canonical bbox grown by this (m).")
    frames_per_step: int = doc(4, "Frames per step (batch size in frames).")
    lr: float = doc(1e-4, "Adam learning rate.")
    code_lr: float | None = doc(None, "Subject codes' learning rate (default: lr).")
    lr_schedule: LrSchedule = doc("constant", "constant, or cosine: from lr down to lr * lr_final over the "
                                              "planned steps.")
    lr_final: float = doc(0.03, "Final fraction of lr of the cosine schedule.")
    lambda_eikonal: float = doc(0.1, "Weight of the eikonal term.")
    lambda_normal: float = doc(0.1, "Weight of the normal terms.")
    subnet_losses: bool = doc(True, "The per-joint terms of equation 2.")
    lambda_sdf: float = doc(0.0, "Beyond the paper: weight of the L1 term between F and the signed distance to the "
                                 "nearest oriented surface sample at the eikonal points (0 = the paper's loss).")
    sdf_target_band: float | None = doc(None, "Beyond the paper, for partial observations (depth, scans): the "
                                              "lambda_sdf term only at eikonal points within this distance (m) of "
                                              "an observed sample, where its sign is trustworthy (None: everywhere).")
    epochs: int = doc(50, "Train this many epochs in total (when steps is not set).")
    steps: int | None = doc(None, "Train this many steps in total (overrides epochs when set).")
    shuffle_buffer: int = doc(64, "Frames in each loader worker's shuffle buffer.")
    loader_workers: int = doc(2, "Loader worker processes per rank.")
    seed: int = doc(0, "Seed of the initialisation and of the sample order.")
    log_every: int = doc(10, "Write log.csv, TensorBoard and the progress bar's loss every this many steps.")
    checkpoint_every: int = doc(200, "Write ckpt.pt every this many steps (and at the end).")
    gradients: Gradients = doc("autograd", "How the loss gets dF/dx (eikonal and normal terms): autograd (a "
                                            "create_graph gradient, then a double backward) or forward (forward-mode "
                                            "derivatives through the sub-networks: the same values, one backward; "
                                            "slower on a 2-core CPU, bench/results/gradients.json).")
    amp: Amp = doc("auto", "Precision: fp32; tf32 (fp32 tensors, TF32 matmuls on CUDA; plain fp32 on CPU); bf16 "
                           "(bf16 autocast); auto = tf32 on CUDA, fp32 on CPU (provisional, see "
                           "hipnet.model.precision).")

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0.0 <= self.part_balance <= 1.0:
            raise ValueError(f"part_balance must be within [0, 1], got {self.part_balance}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "config") -> TrainConfig:
        """A config from its ``to_dict`` form (checkpoints, ``config.json``); fields it lacks keep their defaults."""
        return parse_overrides(cls(), d, source)


def _check_keys(data: Mapping, cls: type, source: str, prefix: str) -> None:
    known = [f.name for f in fields(cls)]
    for key in data:
        if key not in known:
            raise ValueError(f"{source}: unknown config key {prefix}{key!r} (known: {', '.join(known)})")


def parse_overrides(base: TrainConfig, data: Mapping, source: str) -> TrainConfig:
    """``base`` with the fields in ``data`` replaced (``model:`` a nested mapping of ``ModelConfig`` fields).

    An unknown key (top level or under ``model:``) or a value outside a field's choices is a one-line
    ``ValueError`` starting with ``source`` (a file name, or what the mapping is)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of config fields, got {type(data).__name__}")
    data = dict(data)
    model = data.pop("model", None) or {}
    if not isinstance(model, Mapping):
        raise ValueError(f"{source}: 'model' must be a mapping of model fields, got {type(model).__name__}")
    _check_keys(data, TrainConfig, source, "")
    _check_keys(model, ModelConfig, source, "model.")
    try:
        return replace(base, model=replace(base.model, **model), **data)
    except ValueError as e:  # a __post_init__ check: say where the value came from
        raise ValueError(f"{source}: {e}") from None


PRESETS = {
    "paper": TrainConfig(),
    "small": TrainConfig(
        model=ModelConfig(hidden=64, layers=4, skip=2, pose_dim=32, pose_hidden=64, code_dim=32,
                          aggregator_hidden=64, aggregator_layers=2),
        points_per_frame=2000, eikonal_per_frame=2000, frames_per_step=4, lr=1e-3, epochs=4,
        shuffle_buffer=32, loader_workers=1, log_every=10, checkpoint_every=100,
    ),
}
# ``fast``: the CPU demo and the default. ``small`` at 32 wide with three departures from the paper that make a
# 2-core CPU converge in minutes: sub-networks see x in their joint's frame, the aggregation starts from a smooth union
# of the parts, and the loss pulls F towards the distance to the nearest oriented sample on the eikonal points
# (docs/guides/training.md). Each further choice is a harness lever (docs/experiments/accuracy.md): the plain
# soft-min (no + tau log J) at tau 5 mm, which lies at most tau log 2 below the closer of two touching parts
# (tau5mm); surface samples balanced between parts at power 0.5 (balance0.5); 32 frames of 125 surface +
# 250 eikonal points a step, many poses and subjects per step (32-frames), through a shuffle buffer of 256 frames, so a
# step's frames come from 8 shards rather than one (buffer256); Adam at 8e-3 with a cosine decay (lr8e-3); each
# sub-network run only near its part, with the aggregation's residual gated off beyond every part (part-support:
# the same scores at equal steps, a cheaper step), its input gradients by forward-mode derivatives (the same values;
# on the part-local model the cheaper step: part-support+forward, bench/results/part_support.json). Batches are
# made in the training process (loader_workers 0, the same batches as one worker): on 2 cores a worker process
# beside torch's two threads competes for the cores rather than overlapping them (bench/loader_workers.py).
PRESETS["fast"] = replace(
    PRESETS["small"],
    model=replace(PRESETS["small"].model, hidden=32, local_frames=True, aggregation="softmin", softmin_offset=False,
                  softmin_tau=0.005, part_support=True),
    points_per_frame=125, eikonal_per_frame=250, frames_per_step=32, lr=8e-3, lr_schedule="cosine", steps=1000,
    lambda_sdf=1.0, part_balance=0.5, shuffle_buffer=256, loader_workers=0, gradients="forward",
)
# ``long``: ``fast`` trained 6,000 steps with the cosine decay over them, the best shapes a 2-core CPU gives in at
# most 2 hours (harness variant lr8e-3@6000). It keeps the configuration it was measured in over 6,000 steps: the
# soft-min at tau 1 cm and every sub-network on every point (part-local evaluation is not yet measured that long).
PRESETS["long"] = replace(PRESETS["fast"], model=replace(PRESETS["fast"].model, softmin_tau=0.01, part_support=False),
                          gradients="autograd", steps=6000, checkpoint_every=500, log_every=50)


@dataclass(frozen=True)
class EvalConfig:
    """How ``hipnet-eval`` scores a checkpoint (``model.evaluate``)."""

    stride: int = doc(1, "Score every k-th frame.")
    max_frames: int | None = doc(None, "At most this many frames per store, spread evenly.")
    mesh_frames: int = doc(4, "Frames per store to extract meshes for (Chamfer-L1, normal consistency, pictures, PLY "
                              "files).")
    resolution: int = doc(256, "Final marching-cubes resolution.")
    chamfer_points: int = doc(100_000, "Points sampled on each mesh.")
    unknown_subjects: Literal["error", "mean"] = doc(
        "error", "Subjects the checkpoint was not trained on: refuse, or use the mean code (the paper's 0-point "
                 "protocol; fit them with hipnet-fit for real numbers).")

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass(frozen=True)
class FitConfig:
    """The applications' test-time fit of a subject code and their meshes (``model.apps``, ``hipnet-fit``,
    ``hipnet-sample``, ``hipnet-animate``)."""

    iters: int = doc(100, "Adam iterations of the code fit (the paper's test-time optimisation).")
    lr: float = doc(1e-3, "Adam learning rate of the code fit.")
    resolution: int = doc(128, "Final marching-cubes resolution.")


EVAL, FIT = EvalConfig(), FitConfig()  # the defaults, for functions' keyword arguments

# the preset every command and file uses when none is named: the one that learns on a CPU as well as on a GPU
DEFAULT_PRESET = "fast"


def load_config(name_or_path: str = DEFAULT_PRESET) -> TrainConfig:
    """A preset name (``paper``, ``small``, ``fast``, ``long``) or a YAML/JSON file of overrides (``base:`` names
    the preset; ``DEFAULT_PRESET`` when absent)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{name_or_path}: not a preset ({', '.join(PRESETS)}) and not a file")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
    else:
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    base = data.pop("base", DEFAULT_PRESET)
    if base not in PRESETS:
        raise ValueError(f"{path}: base {base!r} is not a preset ({', '.join(PRESETS)})")
    return parse_overrides(PRESETS[base], data, str(path))
