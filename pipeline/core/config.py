"""What decides the content of a store: ``PreprocessConfig`` (saved in the store's ``config`` attribute; a rerun must
match it). Its fields hold the defaults and the help of ``hipnet-data preprocess``'s options (``pipeline.core.fields``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal, get_args

from hipnet.pipeline.core.fields import doc
from hipnet.pipeline.core.frames import FrameRef

GeodesicMode = Literal["per-frame", "per-template"]
GEODESIC_MODES = get_args(GeodesicMode)
SNARF_SIGMA = 0.01


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides the content of a store (saved in its attrs; a rerun must match it)."""

    surface_points: int = doc(25_000, "Surface samples per frame.")
    eval_points: int = doc(100_000, "Uniform and near-surface evaluation points per frame (each), for evaluation "
                                    "splits.")
    near_sigma: float = doc(0.03, "Std (m) of near-surface evaluation points.")
    geodesics: GeodesicMode = doc("per-frame", "per-frame: heat geodesics on every posed mesh (the paper). "
                                               "per-template: once per subject in the rest pose, reused (faster).")
    snarf: bool = doc(False, "Also store SNARF's evaluation points (cube 1.1x extent, near sigma 0.01).")
    eval_on_train: bool = doc(False, "Evaluation points and meshes for the training split too.")
    shard_frames: int = doc(32, "Frames per shard (unit of writing and shuffling).")
    seed: int = doc(0, "Seed of all sampling (per frame: seed + frame name).")
    quantise: bool = doc(False, "Store surface points as 16-bit codes over each frame's box and normals as two 16-bit "
                                "octahedral codes (about half the bytes per training frame; the error bounds are in "
                                "the store's `quantisation` attribute). Readers decode them.")
    frame_every: int = doc(1, "Keep frames 0, k, 2k, ... of each sequence (after the dataset's own frame selection); "
                              "recorded in the store's config. `make demo` builds its test store with 16: the frames "
                              "it scores.")

    def __post_init__(self) -> None:
        if self.geodesics not in GEODESIC_MODES:
            raise ValueError(f"geodesics must be one of {GEODESIC_MODES}, got {self.geodesics!r}")
        for name, value in (("surface_points", self.surface_points), ("eval_points", self.eval_points),
                            ("shard_frames", self.shard_frames), ("frame_every", self.frame_every)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")

    def to_attrs(self) -> dict:
        """The config as stored in the ``config`` attr: every field."""
        return asdict(self)

    def select(self, refs: list[FrameRef]) -> list[FrameRef]:
        """The listed frames this config keeps: positions 0, k, 2k, ... of each sequence's frames (k =
        ``frame_every``), in the listing's order."""
        if self.frame_every == 1:
            return refs
        seen: dict[tuple[str, str], int] = {}
        kept = []
        for r in refs:
            position = seen.get((r.subject, r.sequence), 0)
            seen[(r.subject, r.sequence)] = position + 1
            if position % self.frame_every == 0:
                kept.append(r)
        return kept

    @classmethod
    def from_attrs(cls, attrs: dict) -> PreprocessConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in known})

    def sections(self, split: str, observed: bool = False) -> tuple[str, ...]:
        """Which store sections a split gets: evaluation points and meshes for evaluation splits; for observed
        frames (point clouds, raw scans, depth images: no closed surface, no inside) the ``observed`` record
        instead, whatever the split."""
        quantised = ["quantised"] if self.quantise else []
        if observed:
            return ("train", "observed", *quantised)
        sections = ["train"]
        if split != "train" or self.eval_on_train:
            sections += ["eval", "mesh"] + (["snarf"] if self.snarf else [])
        return (*sections, *quantised)
