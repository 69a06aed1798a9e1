"""Typed configuration of the network and the training run, with the two named presets.

``paper``: the sizes of seed 000 (section 3.5, appendix A): 8 x 256 sub-networks with a skip into layer 4, 256-d
subject codes, 25k surface + 25k eikonal points per frame, Adam at 1e-4. ``small``: a model that trains usefully on a
2-core CPU in minutes; ``fast``: ``small`` with three documented departures from the paper for the CPU demo. A
YAML/JSON file may override any field of a preset (``base: small`` picks the preset).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path


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
    # base of the aggregation network (an MLP residual over parts, phi, beta is added to it): "mean" = a learnt
    # weighted mean of the part SDFs; "softmin" = -tau log mean exp(-F_k / tau), a smooth union (beyond the paper)
    aggregation: str = "mean"
    softmin_tau: float = 0.01

    def __post_init__(self) -> None:
        if self.aggregation not in ("mean", "softmin"):
            raise ValueError(f"aggregation must be 'mean' or 'softmin', got {self.aggregation!r}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    points_per_frame: int = 25_000  # surface points per frame and step
    eikonal_per_frame: int = 25_000  # eikonal points per frame (half uniform in the bbox, half near the surface)
    eikonal_near_sigma: float = 0.03
    bbox_margin: float = 0.1  # eikonal uniform points: canonical bbox of the frame's points, grown by this (m)
    frames_per_step: int = 4
    lr: float = 1e-4
    code_lr: float | None = None  # subject codes' learning rate (default: lr)
    lr_schedule: str = "constant"  # or "cosine": from lr down to lr * lr_final over the planned steps
    lr_final: float = 0.03
    lambda_eikonal: float = 0.1
    lambda_normal: float = 0.1
    subnet_losses: bool = True  # the per-joint terms of equation 2
    # beyond the paper: L1 between F and the signed distance to the nearest oriented surface sample, on the
    # eikonal points (sign from that sample's normal). 0 = the paper's loss.
    lambda_sdf: float = 0.0
    epochs: int = 50
    steps: int | None = None  # overrides epochs when set
    shuffle_buffer: int = 64  # frames
    loader_workers: int = 2
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200  # steps
    amp: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or "bf16", "fp32"

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        model = ModelConfig(**d.pop("model", {}))
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        return cls(model=model, **d)


PRESETS = {
    "paper": TrainConfig(),
    "small": TrainConfig(
        model=ModelConfig(hidden=64, layers=4, skip=2, pose_dim=32, pose_hidden=64, code_dim=32,
                          aggregator_hidden=64, aggregator_layers=2),
        points_per_frame=2000, eikonal_per_frame=2000, frames_per_step=4, lr=1e-3, epochs=4,
        shuffle_buffer=32, loader_workers=1, log_every=10, checkpoint_every=100,
    ),
}
# ``fast``: the CPU demo. ``small`` plus three departures from the paper that make a 2-core CPU converge in minutes:
# sub-networks see x in their joint's frame, the aggregation starts from a smooth union of the parts, and the loss
# pulls F towards the distance to the nearest oriented sample on the eikonal points (README, "Training").
PRESETS["fast"] = replace(
    PRESETS["small"],
    model=replace(PRESETS["small"].model, hidden=32, local_frames=True, aggregation="softmin"),
    points_per_frame=500, eikonal_per_frame=1000, frames_per_step=8, lr=4e-3, lr_schedule="cosine", steps=500,
    lambda_sdf=1.0,
)


def load_config(name_or_path: str) -> TrainConfig:
    """A preset name (``paper``, ``small``, ``fast``) or a YAML/JSON file of overrides (``base:`` names the preset)."""
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
        raise ValueError(f"{path}: expected a mapping of config fields")
    base = PRESETS[data.pop("base", "paper")]
    model = replace(base.model, **data.pop("model", {}))
    try:
        return replace(base, model=model, **data)
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from e
