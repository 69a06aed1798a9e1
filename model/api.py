"""The Python API: a trained HIPNet as an object, the stores as a torch ``Dataset``; ``import hipnet`` exports it.

```python
import hipnet

model = hipnet.load("anny")  # the bundled pretrained model, or a path to any RUN/ckpt.pt
pose = model.example_poses[0]  # (22, 4, 4) canonical joint transforms; stores hold them per frame
sdf = model.sdf(points, pose, "adult00")  # (N,) signed distances, metres; a subject name, index, code or None
mesh = model.mesh(pose, "adult00", resolution=128)  # mesh.vertices (V, 3), mesh.faces (F, 3)
code = model.fit_code(observed_points, pose)  # a new subject's code from surface points (the paper's figure 6)
```

Every point and pose is in the stores' canonical frame: the pelvis at the origin, the heading removed, the body
facing +Z, Y up, metres. ``subject`` is a training subject's name or index, a code array of the model's code size,
or None for the mean training code (the best guess for a body the model has not seen).

Bundled models live in ``hipnet/model/pretrained/NAME.pt`` next to ``NAME.json`` (how they were made and what they
score); ``make pretrained`` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hipnet.model.apps import code_table, fit_code, posed_mesh
from hipnet.model.checkpoint import load_checkpoint, model_from_checkpoint
from hipnet.model.config import FIT, TrainConfig
from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import Mesh
from hipnet.model.query import sdf_in_chunks
from hipnet.pipeline.core.location import as_path
from hipnet.pipeline.store.reading import Store

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
# what a bundled checkpoint carries besides a run's: a few poses and every subject's rest joints, so that meshes,
# samples and blends need no store on disk
EXAMPLES = "examples"


def pretrained_models() -> list[str]:
    """Names of the models bundled with the package (``hipnet.load(name)``)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """The checkpoint file a name or path refers to: a bundled model's name (``anny``), a ``ckpt.pt`` file, or a
    run folder holding one. A one-line error names what was looked for."""
    text = str(name_or_path)
    if text in pretrained_models():
        return PRETRAINED_DIR / f"{text}.pt"
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.is_file():
        names = ", ".join(pretrained_models()) or "none"
        raise FileNotFoundError(f"{name_or_path}: no checkpoint there, and not a bundled model (bundled: {names})")
    return path


def is_pretrained(path: Path) -> bool:
    """Whether ``path`` is one of the bundled checkpoints (their commands write elsewhere than next to them)."""
    return Path(path).resolve().parent == PRETRAINED_DIR


class Model:
    """A trained HIPNet with its subjects: signed distances, meshes and code fitting in the canonical frame.

    ``network`` is the ``torch.nn.Module`` (``hipnet.model.hipnet.HIPNet``) for anything the methods do not
    cover; ``checkpoint`` the dict it was loaded from."""

    def __init__(self, checkpoint: dict, source: Path | str = "checkpoint", device: str = "cpu") -> None:
        self.checkpoint = checkpoint
        self.source = Path(source)
        self.device = device
        self.network: HIPNet = model_from_checkpoint(checkpoint, source).to(device).eval()
        self.subjects: list[str] = list(checkpoint["subjects"])
        self.config = TrainConfig.from_dict(checkpoint["config"], source=f"{source} config")
        examples = checkpoint.get(EXAMPLES) or {}
        self.example_poses: list[np.ndarray] = [np.asarray(p) for p in examples.get("poses", [])]
        self.rest_joints: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in examples.get("rest_joints", {}).items()}

    def __repr__(self) -> str:
        cfg = self.config.model
        return (f"hipnet.Model({self.source.name}: {len(self.subjects)} subjects, {self.network.skeleton.num_joints} "
                f"joints, {cfg.layers} x {cfg.hidden} sub-networks, code size {self.network.code_dim}, "
                f"trained {self.checkpoint['step']} steps)")

    @property
    def joint_names(self) -> list[str]:
        return list(self.network.skeleton.names)

    @property
    def mean_code(self) -> np.ndarray:
        """The mean of the training subjects' codes (D,): the prior a fit starts from."""
        return code_table(self.network).mean(0).cpu().numpy()

    def code(self, subject: str | int | np.ndarray | torch.Tensor | None = None) -> torch.Tensor | None:
        """The code (D,) of ``subject``: a training subject's name or index, a code array, or None (the mean
        code). None for a single-subject model, which has no codes."""
        if self.network.codes is None:
            return None
        table = code_table(self.network)
        if subject is None:
            return table.mean(0)
        if isinstance(subject, str):
            if subject not in self.subjects:
                raise ValueError(f"subject {subject!r} is not in {self.source}; it has {', '.join(self.subjects)}")
            return table[self.subjects.index(subject)]
        if isinstance(subject, int | np.integer):
            if not 0 <= int(subject) < len(self.subjects):
                raise ValueError(f"subject index {subject} is outside 0..{len(self.subjects) - 1}")
            return table[int(subject)]
        code = torch.as_tensor(np.asarray(subject, dtype=np.float32)).to(table.device)
        if code.shape != (self.network.code_dim,):
            raise ValueError(f"a code has shape ({self.network.code_dim},), got {tuple(code.shape)}")
        return code

    def _pose(self, pose: np.ndarray | torch.Tensor) -> np.ndarray:
        jt = np.asarray(pose, dtype=np.float32)
        j = self.network.skeleton.num_joints
        if jt.shape != (j, 4, 4):
            raise ValueError(f"a pose is ({j}, 4, 4) canonical joint transforms, got {jt.shape}")
        return jt

    def sdf(self, points: np.ndarray | torch.Tensor, pose: np.ndarray | torch.Tensor,
            subject: str | int | np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """Signed distance (N,) float32 at ``points`` (N, 3) for one ``pose`` (J, 4, 4): negative inside."""
        x = np.asarray(points, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"points are (N, 3), got {x.shape}")
        return sdf_in_chunks(self.network, x, self._pose(pose), self.code(subject), device=self.device)

    def mesh(self, pose: np.ndarray | torch.Tensor, subject: str | int | np.ndarray | torch.Tensor | None = None,
             resolution: int = FIT.resolution) -> Mesh:
        """The surface (the zero level set, marching cubes coarse to fine, largest component) for one pose;
        ``resolution`` is 32 or less, or 32 times a power of two (64, 128, 256)."""
        return posed_mesh(self.network, self._pose(pose), self.code(subject), resolution, device=self.device)

    def fit_code(self, points: np.ndarray, pose: np.ndarray | torch.Tensor, iters: int = FIT.iters,
                 lr: float = FIT.lr) -> np.ndarray:
        """A code (D,) for a body seen only as surface ``points`` (P, 3) in ``pose``: the network frozen, the code
        optimised from the mean code so the surface passes through the points (the paper's test-time fit)."""
        x = np.asarray(points, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"points are (P, 3), got {x.shape}")
        return fit_code(self.network, x, self._pose(pose), iters, lr, device=self.device).code.cpu().numpy()


def load(name_or_path: str | Path = "anny", device: str = "cpu") -> Model:
    """A trained model: a bundled one by name (``hipnet.pretrained_models()``), a ``ckpt.pt`` or a run folder."""
    path = resolve_checkpoint(name_or_path)
    return Model(load_checkpoint(path), path, device)


def open_store(path: str | Path, arrays: Sequence[str] | None = None) -> Store:
    """A store written by ``hipnet-data preprocess``, checked before it is read (complete, every shard file
    present): ``store.read("pose/joint_transforms", i)``, ``store.subjects``, ``store.frame_key(i)``, ..."""
    return Store.open(as_path(path), arrays)


class FrameDataset(Dataset):
    """Frames of one or more stores as a map-style torch ``Dataset``: item ``i`` is a dict of tensors, one frame.

    Keys: the store arrays asked for (default: ``pose/joint_transforms``, ``surface/points``, ``surface/normals``,
    ``surface/labels``), plus ``subject`` (an index into ``dataset.subjects``, the subjects of all stores in order of
    appearance) and ``key`` (``SUBJECT/SEQUENCE/INDEX``). For the trainer's streaming, shard-ordered loader with
    on-the-fly sampling see ``hipnet.model.data.FrameStream``; this class is for your own loops."""

    DEFAULT = ("pose/joint_transforms", "surface/points", "surface/normals", "surface/labels")

    def __init__(self, paths: Sequence[str | Path] | str | Path, arrays: Sequence[str] = DEFAULT) -> None:
        paths = [paths] if isinstance(paths, str | Path) else list(paths)
        if not paths:
            raise ValueError("FrameDataset needs at least one store")
        self.arrays = tuple(arrays)
        self.stores = [open_store(p, self.arrays) for p in paths]
        self.subjects: list[str] = []
        for store in self.stores:
            self.subjects += [s for s in store.subjects if s not in self.subjects]
        self._offsets = np.cumsum([0] + [s.n_frames for s in self.stores])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} is outside a dataset of {len(self)} frames")
        i = i % len(self)
        k = int(np.searchsorted(self._offsets, i, side="right") - 1)
        store, j = self.stores[k], i - int(self._offsets[k])
        item = {name: _as_tensor(store.read(name, j)) for name in self.arrays}
        subject = store.subjects[int(store.read("frame/subject", j))]
        item["subject"] = torch.tensor(self.subjects.index(subject))
        item["key"] = store.frame_key(j)
        return item


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A stored array as torch code expects it: floats (float16 normals too) as float32, integer labels and ids as
    int64, booleans as they are."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return torch.from_numpy(a.astype(np.float32, copy=False))
    if a.dtype.kind in "iu":
        return torch.from_numpy(a.astype(np.int64, copy=False))
    return torch.from_numpy(a)
