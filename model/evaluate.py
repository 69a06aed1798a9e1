"""Evaluation (seed 000 section 4.2, FORMATS.md metric protocols): per test frame, then averaged over frames.

- uniform IoU (points in the bbox stretched 10% along its diagonal) and near-surface IoU (surface + N(0, 0.03));
- per-joint near-surface IoU: near points grouped by the joint label of their nearest ground-truth surface sample
  (table 7); a joint with no points in a frame does not count for that frame;
- Chamfer-L1 between the extracted mesh and the ground-truth mesh: 100k points sampled on each, the mean of
  accuracy (prediction to truth) and completeness (truth to prediction), in units of 1/10 of the longest edge of
  the ground-truth bbox, reported x1e-4; the same in millimetres; normal consistency (mean |n . n_nearest|, both
  directions);
- the SNARF variant (cube 1.1x the largest extent; near N(0, 0.01)) when the store holds it.

Everything here takes an SDF as a plain function of points, so the metrics are tested on analytic shapes. A frame
is keyed ``store/subject/sequence/index`` (``store_labels``), so frames of several stores never collide.
Every float array read for a frame is checked for NaN and inf (``model.data.finite``): a bad frame is an error
naming the store and the frame, not a silent score.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from hipnet.model.config import EVAL
from hipnet.model.data import finite, read_finite
from hipnet.model.hipnet import HIPNet
from hipnet.model.meshing import SDF, Mesh, extract_mesh
from hipnet.model.query import CHUNK, model_sdf
from hipnet.pipeline.core.location import as_path, is_url
from hipnet.pipeline.stages.surface import sample_surface
from hipnet.pipeline.store.reading import Store

# what hipnet-eval reads from a store (those of the store's sections), checked when the store is opened
EVAL_ARRAYS = ("frame/subject", "frame/sequence", "frame/index", "pose/joint_transforms", "pose/world_from_canonical",
               "eval/uniform_points", "eval/uniform_occupancy", "eval/near_points", "eval/near_occupancy",
               "eval/near_labels", "mesh/vertices", "mesh/faces", "snarf/uniform_points", "snarf/uniform_occupancy",
               "snarf/near_points", "snarf/near_occupancy")


def iou(pred_inside: np.ndarray, gt_inside: np.ndarray) -> float:
    union = np.count_nonzero(pred_inside | gt_inside)
    return 1.0 if union == 0 else np.count_nonzero(pred_inside & gt_inside) / union


def joint_ious(pred_inside: np.ndarray, gt_inside: np.ndarray, labels: np.ndarray, n_joints: int) -> np.ndarray:
    """(J,) IoU of the points labelled with each joint; NaN where a joint has no points or an empty union."""
    out = np.full(n_joints, np.nan)
    for j in range(n_joints):
        m = labels == j
        union = np.count_nonzero((pred_inside | gt_inside) & m)
        if union:
            out[j] = np.count_nonzero(pred_inside & gt_inside & m) / union
    return out


@dataclass
class SurfaceScore:
    chamfer_l1_x1e4: float  # (accuracy + completeness) / 2, in units of (longest bbox edge / 10), times 1e4
    chamfer_mm: float
    normal_consistency: float


def surface_metrics(pred: Mesh, gt: Mesh, n: int = EVAL.chamfer_points, seed: int = 0) -> SurfaceScore:
    from scipy.spatial import cKDTree

    if len(pred.faces) == 0:
        return SurfaceScore(float("inf"), float("inf"), 0.0)
    rng = np.random.default_rng(seed)
    a = sample_surface(pred.vertices.astype(np.float64), pred.faces, n, rng)
    b = sample_surface(gt.vertices.astype(np.float64), gt.faces, n, rng)
    d_ab, i_ab = cKDTree(b.points).query(a.points)
    d_ba, i_ba = cKDTree(a.points).query(b.points)
    extent = gt.vertices.max(0) - gt.vertices.min(0)
    unit = float(extent.max()) / 10
    mean = (d_ab.mean() + d_ba.mean()) / 2
    nc = (np.abs(np.sum(a.normals * b.normals[i_ab], 1)).mean() + np.abs(np.sum(b.normals * a.normals[i_ba], 1)).mean())
    return SurfaceScore(mean / unit * 1e4, mean * 1000, nc / 2)


@dataclass
class FrameScore:
    frame: int  # index in its store
    subject: str
    sequence: str
    store: str  # the store's label (``store_labels``)
    key: str  # store/subject/sequence/index: unique across the stores of one evaluation
    uniform_iou: float
    near_iou: float
    joint_iou: list[float]
    snarf_uniform_iou: float | None = None
    snarf_near_iou: float | None = None
    surface: SurfaceScore | None = None


@dataclass
class Evaluation:
    frames: list[FrameScore] = field(default_factory=list)
    meshes: dict[str, tuple[Mesh, Mesh]] = field(default_factory=dict)  # frame key -> (prediction, truth)
    queries: int = 0

    @classmethod
    def merge(cls, evaluations: Sequence[Evaluation]) -> Evaluation:
        """One evaluation of several stores' frames (their keys must differ: give each store its own label)."""
        out = cls()
        for ev in evaluations:
            clash = sorted({s.key for s in out.frames} & {s.key for s in ev.frames})
            if clash:
                raise ValueError(f"frame keys {clash[:3]} come from two stores: label the stores apart")
            out.frames += ev.frames
            out.meshes.update(ev.meshes)
            out.queries += ev.queries
        return out

    def summary(self, joint_names: Sequence[str]) -> dict:
        f = self.frames
        # per joint, the mean over the frames where it has near-surface points; NaN where it has none in any frame
        joint = np.array([s.joint_iou for s in f], dtype=np.float64).reshape(len(f), len(joint_names))
        seen = np.isfinite(joint)
        per_joint = np.where(seen.any(0), np.where(seen, joint, 0.0).sum(0) / np.maximum(seen.sum(0), 1), np.nan)
        out = {
            "frames": len(f),
            "uniform_miou": float(np.mean([s.uniform_iou for s in f])),
            "near_miou": float(np.mean([s.near_iou for s in f])),
            "per_joint_near_iou": dict(zip(joint_names, per_joint.tolist(), strict=True)),
        }
        if f and f[0].snarf_uniform_iou is not None:
            out["snarf_uniform_miou"] = float(np.mean([s.snarf_uniform_iou for s in f]))
            out["snarf_near_miou"] = float(np.mean([s.snarf_near_iou for s in f]))
        surf = [s.surface for s in f if s.surface is not None]
        if surf:
            out["mesh_frames"] = len(surf)
            out["chamfer_l1_x1e4"] = float(np.mean([s.chamfer_l1_x1e4 for s in surf]))
            out["chamfer_mm"] = float(np.mean([s.chamfer_mm for s in surf]))
            out["normal_consistency"] = float(np.mean([s.normal_consistency for s in surf]))
        for key in ("subject", "sequence"):
            groups: dict[str, list[FrameScore]] = {}
            for s in f:
                groups.setdefault(getattr(s, key), []).append(s)
            out[f"per_{key}"] = {k: {"frames": len(v), "uniform_miou": float(np.mean([s.uniform_iou for s in v])),
                                     "near_miou": float(np.mean([s.near_iou for s in v]))}
                                 for k, v in sorted(groups.items())}
        return out

    def to_json(self, joint_names: Sequence[str]) -> dict:
        return {"summary": self.summary(joint_names), "frames": [asdict(s) for s in self.frames]}


def store_labels(paths: Sequence[Path]) -> list[str]:
    """A distinct short name per store for frame keys and mesh files: the file stem (``test``), with its parent
    folders (``anny_test``) where two stores share a stem, and the position in the list as a last resort."""
    paths = [PurePosixPath(as_path(p).path) if is_url(p) else Path(p) for p in paths]  # a URL's bucket/key
    for depth in range(1, 4):
        labels = ["_".join([*p.parent.parts[len(p.parent.parts) - depth + 1 :], p.stem]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{k}_{p.stem}" for k, p in enumerate(paths)]


def score_frame(store: Store, i: int, sdf: SDF, label: str | None = None) -> FrameScore:
    """Frame ``i``'s occupancy scores (uniform, near-surface, per-joint near-surface, SNARF when stored) for an
    SDF in the store's canonical frame. ``label`` names the store in the frame key (default: its stem)."""
    if "eval" not in store.sections:
        raise ValueError(f"{store.path}: no evaluation points (a training store?); preprocess an evaluation split")
    key = store.frame_key(i)
    subject, sequence, _ = key.split("/")
    label = store.path.stem if label is None else label
    u = sdf(read_finite(store, "eval/uniform_points", i)) < 0
    nr = sdf(read_finite(store, "eval/near_points", i)) < 0
    near_gt = store.read("eval/near_occupancy", i)
    score = FrameScore(
        frame=int(i), subject=subject, sequence=sequence, store=label, key=f"{label}/{key}",
        uniform_iou=iou(u, store.read("eval/uniform_occupancy", i)),
        near_iou=iou(nr, near_gt),
        joint_iou=joint_ious(nr, near_gt, store.read("eval/near_labels", i), store.skeleton.num_joints).tolist(),
    )
    if "snarf" in store.sections:
        score.snarf_uniform_iou = iou(sdf(read_finite(store, "snarf/uniform_points", i)) < 0,
                                      store.read("snarf/uniform_occupancy", i))
        score.snarf_near_iou = iou(sdf(read_finite(store, "snarf/near_points", i)) < 0,
                                   store.read("snarf/near_occupancy", i))
    return score


def evaluate_store(store: Store, sdf_of: Callable[[int], SDF], frames: Sequence[int], meshed: Sequence[int] = (),
                   resolution: int = EVAL.resolution, chamfer_points: int = EVAL.chamfer_points,
                   label: str | None = None, progress: Callable[[int], None] | None = None) -> Evaluation:
    """Score ``frames`` of an evaluation store; ``sdf_of(i)`` gives frame i's SDF (canonical frame). Meshes are
    extracted (coarse-to-fine, bbox of the truth x1.1) for ``meshed``, keyed by frame key."""
    if "eval" not in store.sections:
        raise ValueError(f"{store.path}: no evaluation points (a training store?); preprocess an evaluation split")
    faces = store.read("mesh/faces")
    per_frame = store.array("eval/uniform_points").shape[1] + store.array("eval/near_points").shape[1]
    result = Evaluation()
    mesh_set = set(meshed)
    for i in frames:
        sdf = sdf_of(i)
        score = score_frame(store, i, sdf, label)
        result.queries += per_frame
        if i in mesh_set:
            read_finite(store, "pose/world_from_canonical", i)  # the meshes are also written in the source frame
            truth = Mesh(read_finite(store, "mesh/vertices", i), faces)
            lo, hi = truth.vertices.min(0), truth.vertices.max(0)
            centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.1
            pred, spent = extract_mesh(sdf, centre - half, centre + half, resolution)
            result.queries += spent
            # seeded by the frame's name, not its row: a frame scores the same in any store that holds it
            score.surface = surface_metrics(pred, truth, chamfer_points, seed=zlib.crc32(store.frame_key(i).encode()))
            result.meshes[score.key] = (pred, truth)
        result.frames.append(score)
        if progress is not None:
            progress(1)
    return result


def store_codes(model: HIPNet, subjects: Sequence[str], store: Store, unknown: str = "error") -> list:
    """The subject code of each of ``store.subjects`` (D,) tensors, None in single-subject mode. A subject the
    checkpoint (trained on ``subjects``) does not know is refused (``unknown="error"``) or gets the mean code
    (``"mean"``: the paper's 0-point protocol)."""
    if model.codes is None:
        return [None] * len(store.subjects)
    codes, names = model.codes.weight.detach(), list(subjects)
    missing = sorted(set(store.subjects) - set(names))
    if missing and unknown == "error":
        raise ValueError(f"{store.path}: subjects {missing} are not in the checkpoint (held-out subjects?); "
                         "pass --unknown-subjects mean, or fit them with hipnet-fit")
    return [codes[names.index(s)] if s in names else codes.mean(0) for s in store.subjects]


def evaluate_model(model: HIPNet, subjects: Sequence[str], store: Store, frames: Sequence[int],
                   meshed: Sequence[int] = (), resolution: int = EVAL.resolution,
                   chamfer_points: int = EVAL.chamfer_points, label: str | None = None,
                   unknown: str = EVAL.unknown_subjects, chunk: int = CHUNK, device: str = "cpu",
                   progress: Callable[[int], None] | None = None) -> Evaluation:
    """``evaluate_store`` for a trained model: each frame with its subject's code (``store_codes``) and pose."""
    codes = store_codes(model, subjects, store, unknown)
    jts, subject_ids = store.read("pose/joint_transforms"), store.read("frame/subject")

    def sdf_of(i: int) -> SDF:
        jt = finite(store, i, "pose/joint_transforms", jts[i])
        return model_sdf(model, jt, codes[int(subject_ids[i])], device, chunk=chunk)

    return evaluate_store(store, sdf_of, frames, meshed, resolution, chamfer_points, label, progress)


def spread_frames(n: int, stride: int = 1, limit: int | None = None) -> list[int]:
    """Every ``stride``-th of ``n`` frames, at most ``limit`` of them spread evenly over the whole range."""
    frames = list(range(0, n, stride))
    if limit is not None and len(frames) > limit:
        frames = [frames[round(k * (len(frames) - 1) / max(1, limit - 1))] for k in range(limit)]
    return frames
