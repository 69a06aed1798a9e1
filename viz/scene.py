"""What the viewer (``hipnet-view``) draws for a store frame, as plain data: pure functions, no server.

``frame_scene`` turns one frame's arrays (``FrameData``, read lazily by ``read_frame``) into a list of ``Node``s, each
a scene-tree name, a kind (``mesh``, ``points``, ``segments``, ``label``) and its arrays; ``viz/viewer.py`` hands
them to viser. Colours are uint8 RGB: joint labels take the palette of the static pictures (``render.label_colors``),
occupancy three fixed colours, errors a sequential colour map whose lightness grows with the error.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hipnet.pipeline.core.skeleton import Skeleton
from hipnet.pipeline.store.reading import Store
from hipnet.viz.render import label_colors

INSIDE = np.array([40, 110, 230], np.uint8)  # evaluation point inside the body
OUTSIDE = np.array([190, 190, 190], np.uint8)  # outside
OVERLAP = np.array([230, 30, 30], np.uint8)  # inside two overlapping parts (winding number 2: ray parity says outside)
GT_COLOR = (200, 170, 150)
MODEL_COLOR = (120, 170, 230)
BONE_COLOR = np.array([20, 20, 20], np.uint8)
OFFSET = 1.0  # metres along X between the ground truth (at 0), the model (+) and the posed model (-)
ERROR_MAP = "viridis"  # perceptually uniform: lightness grows monotonically with the value

# what the store view reads, those of the store's sections (Store.open checks them)
VIEW_ARRAYS = ("frame/subject", "frame/sequence", "frame/index", "pose/joint_transforms", "subject/rest_joints",
               "surface/points", "surface/normals", "surface/labels", "eval/uniform_points", "eval/uniform_occupancy",
               "eval/uniform_disagreements", "eval/near_points", "eval/near_occupancy", "eval/near_disagreements",
               "mesh/vertices", "mesh/faces")


class Node(NamedTuple):
    name: str  # scene-tree path, e.g. "/store/samples"
    kind: str  # mesh | points | segments | label
    data: dict  # mesh: vertices (V, 3), faces (F, 3); points: points (N, 3), colors (N, 3) uint8;
    # segments: points (K, 2, 3), colors (3,) uint8; label: text, position (3,)


@dataclass
class FrameData:
    """One store frame, canonical frame; the optional parts are None when the store lacks that section."""

    subject: str
    sequence: str
    index: int
    frame: int  # position in the store
    joint_transforms: np.ndarray  # (J, 4, 4)
    points: np.ndarray  # (S, 3) surface samples
    normals: np.ndarray  # (S, 3)
    labels: np.ndarray  # (S,) joint index
    vertices: np.ndarray | None = None  # (V, 3) ground-truth mesh
    faces: np.ndarray | None = None  # (Fc, 3)
    eval_points: dict[str, np.ndarray] = field(default_factory=dict)  # uniform | near -> (N, 3)
    eval_occupancy: dict[str, np.ndarray] = field(default_factory=dict)  # uniform | near -> (N,) bool
    disagreements: dict[str, int] = field(default_factory=dict)  # uniform | near -> stored count


@dataclass(frozen=True)
class SceneOptions:
    mesh: bool = True
    samples: bool = True
    normals: bool = False
    skeleton: bool = True
    joint_names: bool = True
    eval_set: str = "none"  # none | uniform | near
    outside: bool = False  # draw the outside evaluation points too
    normal_length: float = 0.02  # metres
    normal_every: int = 10  # one normal per this many samples


# ---------------------------------------------------------------------------------------------------- reading


@dataclass
class SequenceIndex:
    """Frames by subject and sequence: ``frames[(subject, sequence)]`` is the store positions in time order."""

    frames: dict[tuple[str, str], list[int]]

    @classmethod
    def build(cls, subject_ids: np.ndarray, sequence_ids: np.ndarray, index: np.ndarray, subjects: Sequence[str],
              sequences: Sequence[str]) -> SequenceIndex:
        out: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for i, (s, q, k) in enumerate(zip(subject_ids.tolist(), sequence_ids.tolist(), index.tolist(), strict=True)):
            out.setdefault((subjects[s], sequences[q]), []).append((k, i))
        return cls({key: [i for _, i in sorted(v)] for key, v in sorted(out.items())})

    @classmethod
    def of(cls, store: Store) -> SequenceIndex:
        """From the store's three id columns ((F,) int32 each: the only whole-store reads of the viewer)."""
        return cls.build(*(store.read(n) for n in ("frame/subject", "frame/sequence", "frame/index")),
                         store.subjects, store.sequences)

    def subjects(self) -> list[str]:
        return sorted({s for s, _ in self.frames})

    def sequences(self, subject: str) -> list[str]:
        return [q for s, q in self.frames if s == subject]

    def locate(self, frame: int) -> tuple[str, str, int]:
        """(subject, sequence, position in the sequence) of store frame ``frame``."""
        for (s, q), frames in self.frames.items():
            if frame in frames:
                return s, q, frames.index(frame)
        raise ValueError(f"frame {frame} is not in the store")


def read_frame(store: Store, i: int, eval_points: bool = False) -> FrameData:
    """Frame ``i`` of ``store``, reading that frame's chunks only (one chunk per frame and array); the evaluation
    points (200k for a default store) only when ``eval_points``."""
    sections = store.sections
    jt = store.read("pose/joint_transforms", i)
    s, q, k = (int(store.read(n, i)) for n in ("frame/subject", "frame/sequence", "frame/index"))
    data = FrameData(store.subjects[s], store.sequences[q], k, i, jt, store.read("surface/points", i),
                     store.read("surface/normals", i).astype(np.float32), store.read("surface/labels", i))
    if "mesh" in sections:
        data.vertices, data.faces = store.read("mesh/vertices", i), store.read("mesh/faces")
    if "eval" in sections:
        data.disagreements = {e: int(store.read(f"eval/{e}_disagreements", i)) for e in ("uniform", "near")}
        if eval_points:
            for e in ("uniform", "near"):
                data.eval_points[e] = store.read(f"eval/{e}_points", i)
                data.eval_occupancy[e] = store.read(f"eval/{e}_occupancy", i)
    for name, a in (("pose/joint_transforms", jt), ("surface/points", data.points), ("mesh/vertices", data.vertices)):
        if a is not None and not np.isfinite(a).all():
            raise ValueError(f"{store.path}: frame {i} ({data.subject}/{data.sequence}/{k}): {name} holds NaN or inf")
    return data


def read_log(path: Path) -> dict[str, np.ndarray]:
    """The columns of a run's ``log.csv`` (``model/trainlog.py``) as float arrays; empty cells (a term a resumed
    run added) are NaN. A one-line error naming the file when it is empty or not a training log."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "step" not in rows[0]:
        raise ValueError(f"{path}: not a training log (no header with a 'step' column)")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body):
        bad = next(n for n, r in enumerate(body, 2) if len(r) != len(header))
        raise ValueError(f"{path}: line {bad} has a different number of cells than the header")
    cols = np.array([[float(c) if c else np.nan for c in r] for r in body], dtype=np.float64).reshape(-1, len(header))
    return {name: cols[:, k] for k, name in enumerate(header)}


def loss_terms(log: dict[str, np.ndarray]) -> list[str]:
    """The loss columns of a log: everything but the bookkeeping columns."""
    return [k for k in log if k not in ("step", "epoch", "points_per_s", "wall_s")]


# ---------------------------------------------------------------------------------------------------- colours


def label_palette(n: int) -> np.ndarray:
    """(n, 3) uint8: the joint-label colours of the static pictures (``render.label_colors``)."""
    return np.round(np.asarray(label_colors(n))[:, :3] * 255).astype(np.uint8)


def label_point_colors(labels: np.ndarray, n_joints: int) -> np.ndarray:
    """(S, 3) uint8: each sample the colour of its joint label."""
    return label_palette(n_joints)[np.asarray(labels, dtype=np.int64)]


def occupancy_colors(inside: np.ndarray, overlap: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) uint8: INSIDE or OUTSIDE, and OVERLAP where ``overlap`` (inside two parts) is set."""
    out = np.where(np.asarray(inside, bool)[:, None], INSIDE, OUTSIDE).astype(np.uint8)
    if overlap is not None:
        out[np.asarray(overlap, bool)] = OVERLAP
    return out


def error_colors(error: np.ndarray, vmax: float) -> np.ndarray:
    """(N, 3) uint8: ``error`` (N,) >= 0 on the ERROR_MAP from 0 (dark) to ``vmax`` (light); larger errors are
    clipped to ``vmax``'s colour."""
    import matplotlib

    if vmax <= 0:
        raise ValueError(f"vmax must be positive, got {vmax}")
    t = np.clip(np.asarray(error, dtype=np.float64) / vmax, 0.0, 1.0)
    return np.round(matplotlib.colormaps[ERROR_MAP](t)[:, :3] * 255).astype(np.uint8)


def label_legend_html(names: Sequence[str], used: Sequence[int] | None = None) -> str:
    """A legend: a coloured swatch and the name of each joint label (``used``: only these indices)."""
    colors = label_palette(len(names))
    keep = range(len(names)) if used is None else sorted(set(int(k) for k in used))
    items = [f'<span style="white-space:nowrap;margin-right:6px"><span style="display:inline-block;width:10px;'
             f'height:10px;background:rgb({",".join(map(str, colors[k].tolist()))});margin-right:3px"></span>'
             f"{html.escape(names[k])}</span>" for k in keep]
    return f'<div style="font-size:11px;line-height:1.5">{" ".join(items)}</div>'


def error_legend_html(vmax_mm: float) -> str:
    """The error colour bar, 0 to ``vmax_mm`` millimetres."""
    stops = error_colors(np.linspace(0, 1, 6), 1.0)
    gradient = ", ".join(f"rgb({','.join(map(str, c.tolist()))})" for c in stops)
    return (f'<div style="font-size:11px">distance to the ground truth<div style="height:10px;background:'
            f'linear-gradient(to right, {gradient})"></div><span>0 mm</span><span style="float:right">'
            f"&ge; {vmax_mm:g} mm</span></div>")


# ---------------------------------------------------------------------------------------------------- geometry


def skeleton_segments(joint_transforms: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """(J - 1, 2, 3): one segment from each non-root joint's parent to the joint."""
    pos = np.asarray(joint_transforms)[:, :3, 3]
    kids = [j for j, p in enumerate(parents) if p >= 0]
    return np.stack([pos[[parents[j] for j in kids]], pos[kids]], axis=1).astype(np.float32)


def normal_segments(points: np.ndarray, normals: np.ndarray, length: float, every: int = 1) -> np.ndarray:
    """(ceil(S / every), 2, 3): a segment from every ``every``-th sample along its normal, ``length`` long."""
    p, n = np.asarray(points)[::every], np.asarray(normals, dtype=np.float32)[::every]
    return np.stack([p, p + length * n], axis=1).astype(np.float32)


def overlap_points(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) bool: points inside two overlapping parts of a closed mesh (winding number even and >= 2: inside, where
    ray parity says outside); these are what a store's ``eval/*_disagreements`` counts."""
    from hipnet.pipeline.stages.occupancy import winding_numbers

    w = winding_numbers(vertices, faces, points)
    return (w >= 2) & (w % 2 == 0)


def surface_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray | None) -> np.ndarray:
    """(N,) distance in metres from each of ``points`` (N, 3) to the ground truth: the mesh (V, 3), (F, 3) when
    ``faces`` is given (exact point-to-triangle distance), else the nearest of the points ``vertices``."""
    points = np.asarray(points, dtype=np.float32)
    if faces is None:
        from scipy.spatial import cKDTree

        return cKDTree(np.asarray(vertices, np.float64)).query(points)[0].astype(np.float32)
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)), o3d.core.Tensor(np.asarray(faces, np.uint32)))
    if len(points) == 0:
        return np.zeros(0, np.float32)
    return scene.compute_distance(o3d.core.Tensor(points)).numpy()


# ---------------------------------------------------------------------------------------------------- scenes


def frame_scene(frame: FrameData, skeleton: Skeleton, options: SceneOptions, root: str = "/store",
                overlap: dict[str, np.ndarray] | None = None) -> list[Node]:
    """The nodes drawn for one store frame under ``root``: the ground-truth mesh, the surface samples by joint
    label, their normals, the skeleton (bones and joint names) and the evaluation points by occupancy (``overlap``:
    per evaluation set, the points inside overlapping parts, drawn in OVERLAP whether or not outside points are)."""
    nodes = []
    if options.mesh and frame.vertices is not None:
        nodes.append(Node(f"{root}/mesh", "mesh", {"vertices": frame.vertices, "faces": frame.faces}))
    if options.samples:
        nodes.append(Node(f"{root}/samples", "points",
                          {"points": frame.points, "colors": label_point_colors(frame.labels, skeleton.num_joints)}))
    if options.normals:
        nodes.append(Node(f"{root}/normals", "segments",
                          {"points": normal_segments(frame.points, frame.normals, options.normal_length,
                                                     options.normal_every), "colors": np.array([0, 160, 90], np.uint8)}))
    if options.skeleton:
        nodes.append(Node(f"{root}/skeleton/bones", "segments",
                          {"points": skeleton_segments(frame.joint_transforms, skeleton.parents),
                           "colors": BONE_COLOR}))
        if options.joint_names:
            pos = frame.joint_transforms[:, :3, 3]
            nodes += [Node(f"{root}/skeleton/names/{name}", "label", {"text": name, "position": pos[j]})
                      for j, name in enumerate(skeleton.names)]
    if options.eval_set != "none" and options.eval_set in frame.eval_points:
        pts, inside = frame.eval_points[options.eval_set], frame.eval_occupancy[options.eval_set]
        over = None if overlap is None else overlap.get(options.eval_set)
        keep = inside if not options.outside else np.ones(len(pts), bool)
        if over is not None:
            keep = keep | over
        nodes.append(Node(f"{root}/eval/{options.eval_set}", "points",
                          {"points": pts[keep], "colors": occupancy_colors(inside[keep],
                                                                           None if over is None else over[keep])}))
    return nodes


def frame_facts(frame: FrameData, n_overlap: dict[str, int] | None = None) -> str:
    """The side panel's facts for a frame, as markdown."""
    lines = [f"**subject** {frame.subject}  ", f"**sequence** {frame.sequence}  ",
             f"**index** {frame.index} (store frame {frame.frame})  ",
             f"**surface samples** {len(frame.points):,}  "]
    if frame.vertices is not None:
        lines.append(f"**mesh** {len(frame.vertices):,} vertices, {len(frame.faces):,} faces  ")
    for e, count in frame.disagreements.items():
        text = f"**{e} disagreement** {count:,} (stored)"
        if e in frame.eval_occupancy:
            inside = int(frame.eval_occupancy[e].sum())
            text += f"; inside {inside:,} of {len(frame.eval_occupancy[e]):,}"
        if n_overlap and e in n_overlap:
            text += f"; overlap points found {n_overlap[e]:,}"
        lines.append(text + "  ")
    return "\n".join(lines)
