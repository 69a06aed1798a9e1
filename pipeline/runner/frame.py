"""One frame through the stages of docs/architecture.md section 5: the arrays a store holds for it.

``process_frame`` is a pure function of (frame, subject geometry, config): every random draw comes from a generator
seeded by ``SeedSequence([seed, crc32(dataset/subject/sequence/index)])`` and the surface samples are drawn first,
so recomputing a frame (a resumed run, ``hipnet-data geodesics``) reproduces its samples exactly.

Geometry stays float64 through the stages; the store's dtypes (``pipeline.store.schema``) are applied once, to the arrays
``process_frame`` returns. Points whose occupancy or nearest label is computed are quantised first (``stored``), so
those answers hold for the coordinates the store keeps. Every returned array is checked finite after the cast (a
float32 overflow included): a frame whose stages produced NaN or inf is an error, never written as done.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass

import numpy as np

from hipnet.pipeline.core.checks import require_finite
from hipnet.pipeline.core.config import GEODESIC_MODES, SNARF_SIGMA, PreprocessConfig  # noqa: F401 - importable here too
from hipnet.pipeline.core.frames import Frame, Subject
from hipnet.pipeline.stages.canonical import canonicalise
from hipnet.pipeline.stages.evalpoints import near_points, stretched_bbox, uniform_points
from hipnet.pipeline.stages.geodesics import (
    proxy_vertices,
    require_one_component,
    sample_labels,
    vertex_distances,
    weld,
)
from hipnet.pipeline.stages.heat import PoseHeat
from hipnet.pipeline.stages.intrinsic import NonManifoldError
from hipnet.pipeline.stages.occupancy import occupancy
from hipnet.pipeline.stages.pointcloud import observe_frame
from hipnet.pipeline.stages.surface import sample_surface
from hipnet.pipeline.store.quantise import chunk_order, decode_points, encode_normals, encode_points, point_box
from hipnet.pipeline.store.schema import SPECS


def frame_rng(seed: int, dataset: str, key: str) -> np.random.Generator:
    """The frame's own generator: a pure function of (seed, dataset/subject/sequence/index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(f"{dataset}/{key}".encode())]))


@dataclass
class SubjectGeometry:
    """What the geodesic stage needs per subject, computed once per worker process: the weld of the rest mesh
    (coincident vertices merged so the heat solver sees one shell), the proxy vertex of each joint and, for
    ``per-template``, the rest-pose distances; for ``per-frame``, the subject's pose heat solver (``heat.PoseHeat``;
    None for a welded mesh that is not an oriented manifold, whose frames take potpourri3d's robust solver)."""

    faces: np.ndarray  # (F, 3) of the frames
    weld_faces: np.ndarray  # (F, 3) into the welded vertex set
    representative: np.ndarray  # (W,) one original vertex per welded vertex
    inverse: np.ndarray  # (V,) welded index of each original vertex
    proxies: np.ndarray  # (J,) welded vertex index per joint
    template_distances: np.ndarray | None  # (J, V) heat distances in the rest pose (per-template mode)
    heat: PoseHeat | None = None  # per-frame mode

    @classmethod
    def build(cls, subject: Subject, mode: str, where: str) -> SubjectGeometry:
        if subject.rest_vertices is None or subject.faces is None:
            raise ValueError(f"{where}: no rest mesh of a fixed topology; this reader needs per-frame proxies")
        v = np.asarray(subject.rest_vertices, dtype=np.float64)
        wv, wf, inverse = weld(v, subject.faces)
        require_one_component(len(wv), wf, where, what="rest mesh")
        representative = np.empty(len(wv), dtype=np.int64)
        representative[inverse] = np.arange(len(v))
        proxies = proxy_vertices(wv, subject.rest_joints)
        template, heat = None, None
        if mode == "per-template":
            template = vertex_distances(wv, wf, proxies)[:, inverse]
        else:
            with contextlib.suppress(NonManifoldError):  # then frame_labels takes potpourri3d's robust solver
                heat = PoseHeat(wf, len(wv), proxies)
        return cls(np.asarray(subject.faces), wf, representative, inverse, proxies, template, heat)


@dataclass(frozen=True)
class ObservedGeometry:
    """What the point-cloud path needs of a subject without a rest mesh of a fixed topology (its frames are
    observations; proxies are chosen per frame): the skeleton's parents, whose bones orient PCA normals."""

    parents: tuple[int, ...]

    @classmethod
    def build(cls, parents, mode: str, where: str) -> ObservedGeometry:
        if mode != "per-frame":
            raise ValueError(f"{where}: {mode} labels need a rest mesh of a fixed topology; observed frames (point "
                             "clouds, raw scans, depth images) are labelled per frame: use --geodesics per-frame")
        return cls(tuple(int(p) for p in parents))


def frame_labels(vertices: np.ndarray, geom: SubjectGeometry, face_index: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Joint label of each sample: per-template distances if the geometry holds them, else heat distances on the
    posed (welded) mesh from the tracked proxies."""
    if geom.template_distances is not None:
        d = geom.template_distances
    else:
        posed = np.asarray(vertices, dtype=np.float64)[geom.representative]
        if geom.heat is not None:
            d = geom.heat.distances(posed)
        else:
            d = vertex_distances(posed, geom.weld_faces, geom.proxies)
        d = d[:, geom.inverse]
    return sample_labels(d, geom.faces, face_index, bary)


def stored(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` in the store's dtype for array ``name`` (the one place the pipeline leaves float64)."""
    return np.asarray(values, dtype=SPECS[name].dtype)


def surface_arrays(points: np.ndarray, normals: np.ndarray, labels: np.ndarray,
                   quantise: bool) -> dict[str, np.ndarray]:
    """The stored surface arrays of float64 samples (S, 3), their unit normals (S, 3) and labels (S,): float32
    points and float16 normals, or (``quantise``) the 16-bit codes, the frame's box and the labels, in the
    quantised store's order (``quantise.chunk_order``)."""
    if not quantise:
        return {"surface/points": stored("surface/points", points), "surface/normals": stored("surface/normals", normals),
                "surface/labels": stored("surface/labels", labels)}
    box = point_box(points)
    codes = encode_points(points, box)
    order = chunk_order(codes)
    return {"surface/box": box, "surface/points_quantised": codes[order],
            "surface/normals_octahedral": encode_normals(normals)[order],
            "surface/labels": stored("surface/labels", labels)[order]}


def points_as_read(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The float32 surface points a reader of the store gets, from ``surface_arrays``'s result."""
    if "surface/points" in arrays:
        return arrays["surface/points"]
    return decode_points(arrays["surface/points_quantised"], arrays["surface/box"])


def process_observed_frame(frame: Frame, geom: ObservedGeometry, cfg: PreprocessConfig,
                           dataset: str) -> dict[str, np.ndarray]:
    """The per-frame arrays of an observed frame (sections ``train`` and ``observed``): samples drawn from what was
    observed, labels by point-cloud heat geodesics from per-frame proxies (``pipeline.stages.pointcloud``)."""
    canon = canonicalise(frame.vertices, frame.joint_transforms)
    normals = None if frame.normals is None else frame.normals @ canon.world_from_canonical[:3, :3]
    obs = observe_frame(canon.vertices, frame.faces, normals, canon.joint_transforms[:, :3, 3], geom.parents,
                        cfg.surface_points, frame_rng(cfg.seed, dataset, frame.key))
    out = {
        **surface_arrays(obs.points, obs.normals, obs.labels, cfg.quantise),
        "pose/joint_transforms": canon.joint_transforms,
        "pose/world_from_canonical": canon.world_from_canonical,
        "observed/count": obs.count,
        "observed/normal_source": obs.source,
        "observed/normal_quality": obs.quality,
        "observed/proxy_distance": obs.proxy_distance,
    }
    out = {name: stored(name, values) for name, values in out.items()}
    require_finite(f"frame {frame.key}: stage output (not written)", **out)
    return out


def process_frame(
    frame: Frame, geom: SubjectGeometry | ObservedGeometry, cfg: PreprocessConfig, sections: tuple[str, ...],
    dataset: str
) -> dict[str, np.ndarray]:
    """The per-frame arrays of a store (names and dtypes of ``pipeline.store.schema``) for the given sections."""
    if isinstance(geom, ObservedGeometry):
        return process_observed_frame(frame, geom, cfg, dataset)
    canon = canonicalise(frame.vertices, frame.joint_transforms)
    rng = frame_rng(cfg.seed, dataset, frame.key)
    s = sample_surface(canon.vertices, frame.faces, cfg.surface_points, rng)
    labels = frame_labels(canon.vertices, geom, s.face_index, s.barycentrics)
    surface = surface_arrays(s.points, s.normals, labels, cfg.quantise)
    points, labels = points_as_read(surface), surface["surface/labels"]
    out = {
        **surface,
        "pose/joint_transforms": canon.joint_transforms,
        "pose/world_from_canonical": canon.world_from_canonical,
    }
    if "eval" in sections:
        n = cfg.eval_points
        uniform = stored("eval/uniform_points", uniform_points(canon.vertices, n, rng))
        near, _ = near_points(s, n, rng, cfg.near_sigma)
        near = stored("eval/near_points", near)
        u_occ, n_occ = occupancy(canon.vertices, frame.faces, uniform), occupancy(canon.vertices, frame.faces, near)
        out |= {
            "eval/uniform_points": uniform,
            "eval/uniform_occupancy": u_occ.inside,
            "eval/uniform_disagreements": u_occ.disagreements,
            "eval/near_points": near,
            "eval/near_occupancy": n_occ.inside,
            "eval/near_labels": nearest_labels(points, labels, near),
            "eval/near_disagreements": n_occ.disagreements,
        }
    if "snarf" in sections:
        n = cfg.eval_points
        lo, hi = stretched_bbox(canon.vertices, 0.0)
        centre, half = (lo + hi) / 2, 0.55 * float(np.max(hi - lo))
        cube = stored("snarf/uniform_points", rng.uniform(centre - half, centre + half, size=(n, 3)))
        near, _ = near_points(s, n, rng, SNARF_SIGMA)
        near = stored("snarf/near_points", near)
        out |= {
            "snarf/uniform_points": cube,
            "snarf/uniform_occupancy": occupancy(canon.vertices, frame.faces, cube).inside,
            "snarf/near_points": near,
            "snarf/near_occupancy": occupancy(canon.vertices, frame.faces, near).inside,
        }
    if "mesh" in sections:
        out["mesh/vertices"] = canon.vertices
    out = {name: stored(name, values) for name, values in out.items()}
    require_finite(f"frame {frame.key}: stage output (not written)", **out)
    return out


def relabel_frame(frame: Frame, geom: SubjectGeometry | ObservedGeometry, cfg: PreprocessConfig, dataset: str,
                  stored_points: np.ndarray) -> np.ndarray:
    """Recompute only the surface labels of a stored frame: the samples are redrawn from the frame's seed and must
    equal the stored points as read (decoded, for a quantised store): a check that the raw data and config are the
    ones the store was made from."""
    if isinstance(geom, ObservedGeometry):
        arrays = process_observed_frame(frame, geom, cfg, dataset)
        if not np.array_equal(points_as_read(arrays), stored_points):
            raise ValueError(f"frame {frame.key}: resampled surface points differ from the stored ones (the raw data "
                             "or the config is not the one this store was written from)")
        return arrays["surface/labels"]
    canon = canonicalise(frame.vertices, frame.joint_transforms)
    s = sample_surface(canon.vertices, frame.faces, cfg.surface_points, frame_rng(cfg.seed, dataset, frame.key))
    labels = frame_labels(canon.vertices, geom, s.face_index, s.barycentrics)
    surface = surface_arrays(s.points, s.normals, labels, cfg.quantise)  # the store's order
    if not np.array_equal(points_as_read(surface), stored_points):
        raise ValueError(
            f"frame {frame.key}: resampled surface points differ from the stored ones (the raw data or the config "
            "is not the one this store was written from)"
        )
    labels = surface["surface/labels"]
    require_finite(f"frame {frame.key}: stage output (not written)", **{"surface/labels": labels})
    return labels


def nearest_labels(surface_points: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Label of the nearest surface sample of each query point (table 7's per-joint grouping). The queries are
    independent, so they run on every core (as the occupancy's ray casts do); the answer does not depend on it.
    Leaves of 32 points instead of scipy's 16: the same answers, faster for 100k points about 3 cm off a 25k-sample
    body (bench/preprocess.py, ``near_labels_kdtree_100k``)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(surface_points, leafsize=32).query(queries, k=1, workers=-1)
    return labels[idx]

