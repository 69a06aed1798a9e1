"""The store contract (docs/architecture.md section 4): array names, dtypes, shapes, chunking, root attributes, the shard
index, SCHEMA_VERSION. ``python -m hipnet.pipeline.store.schema --markdown`` prints the tables of docs/guides/pipeline.md.

This is the only place the layout of a store is written down in code. The writer (``pipeline.store.zarrstore``), the
validator (``pipeline.store.validate``), the streaming loader and the evaluation all import it, so a change here is a
change everywhere (and a new ``SCHEMA_VERSION`` when old stores can no longer be read).

Frame-major arrays have one chunk per frame and ``shard_frames`` frames per shard (Zarr v3 sharding): a shard is
the unit of writing (one task, one slice assignment), of hashing, and of coarse shuffling in the loader. Shard
``i`` of array ``a`` is the file ``a/c/i/0/...`` (``shard_key``); a shard whose frames are all fill value has no
file (Zarr does not write empty chunks), which the shard index records as 0 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

import numpy as np

#: Version 2: every complete store carries its ``dims`` and its ``shard_index`` (the readers have no path for a store
#: without them); a version-1 store is refused with "rerun preprocess" (``VERSION_HELP``).
SCHEMA_VERSION = 2
VERSION_HELP = ("rebuild it with this version: delete it (or choose another --out) and rerun `hipnet-data "
                "preprocess` with the same arguments")

#: Sections of a store. ``train`` is always written; ``eval`` and ``mesh`` for evaluation splits (or on request);
#: ``snarf`` only when the SNARF evaluation variant is asked for; ``observed`` (instead of ``eval`` and ``mesh``)
#: for frames observed as point clouds, raw scans or depth images (``pipeline.stages.pointcloud``); ``quantised``
#: (opt-in, ``PreprocessConfig.quantise``) stores the surface points and normals in 16-bit codes instead of floats.
SECTIONS = ("train", "eval", "mesh", "snarf", "observed", "quantised")


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store. ``dims`` are symbols resolved per store (see ``Dims``); a leading ``F`` makes the
    array frame-major (chunk = one frame, shard = ``shard_frames`` frames)."""

    name: str
    dtype: str
    dims: tuple[str, ...]
    section: str
    doc: str
    replaced_in: str | None = None  # a section whose stores hold this array encoded (``DECODED_FROM``) instead

    @property
    def per_frame(self) -> bool:
        return self.dims[:1] == ("F",)


DONE = "done"  # the frame-done mask; not hashed (it is written after its shard's hash record)

ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("surface/points", "float32", ("F", "S", 3), "train",
              "area-weighted surface samples in random order, canonical frame", "quantised"),
    ArraySpec("surface/normals", "float16", ("F", "S", 3), "train",
              "unit outward normals: interpolated area-weighted vertex normals", "quantised"),
    ArraySpec("surface/labels", "uint8", ("F", "S"), "train", "index of the geodesically nearest joint"),
    ArraySpec("pose/joint_transforms", "float32", ("F", "J", 4, 4), "train", "[G_j | J_j], canonical frame"),
    ArraySpec("pose/world_from_canonical", "float32", ("F", 4, 4), "train", "x_world = R x_canonical + t"),
    ArraySpec("frame/subject", "int32", ("F",), "train", "subject id; names in attrs['subjects']"),
    ArraySpec("frame/sequence", "int32", ("F",), "train", "sequence id; names in attrs['sequences']"),
    ArraySpec("frame/index", "int32", ("F",), "train", "frame index within its sequence"),
    ArraySpec("subject/rest_joints", "float32", ("P", "J", 3), "train", "rest-pose joint positions per subject"),
    ArraySpec(DONE, "bool", ("F",), "train", "frame finished; a rerun skips shards whose frames are all done"),
    ArraySpec("eval/uniform_points", "float32", ("F", "U", 3), "eval", "uniform in the bbox stretched 10% (diagonal)"),
    ArraySpec("eval/uniform_occupancy", "bool", ("F", "U"), "eval", "inside: generalised winding number > 0.5"),
    ArraySpec("eval/uniform_disagreements", "int32", ("F",), "eval", "points where ray parity disagrees"),
    ArraySpec("eval/near_points", "float32", ("F", "N", 3), "eval", "surface samples + N(0, near_sigma^2 I)"),
    ArraySpec("eval/near_occupancy", "bool", ("F", "N"), "eval", "inside: generalised winding number > 0.5"),
    ArraySpec("eval/near_labels", "uint8", ("F", "N"), "eval", "joint label of the nearest surface sample"),
    ArraySpec("eval/near_disagreements", "int32", ("F",), "eval", "points where ray parity disagrees"),
    ArraySpec("mesh/vertices", "float32", ("F", "V", 3), "mesh", "ground-truth mesh, canonical frame"),
    ArraySpec("mesh/faces", "int32", ("Fc", 3), "mesh", "faces, once per store (one topology)"),
    ArraySpec("snarf/uniform_points", "float32", ("F", "U", 3), "snarf", "uniform in a cube 1.1x the largest extent"),
    ArraySpec("snarf/uniform_occupancy", "bool", ("F", "U"), "snarf", "inside: generalised winding number > 0.5"),
    ArraySpec("snarf/near_points", "float32", ("F", "N", 3), "snarf", "surface samples + N(0, 0.01^2 I)"),
    ArraySpec("snarf/near_occupancy", "bool", ("F", "N"), "snarf", "inside: generalised winding number > 0.5"),
    ArraySpec("observed/count", "int32", ("F",), "observed",
              "distinct points observed (for a scan: its distinct surface samples) before sampling"),
    ArraySpec("observed/normal_source", "uint8", ("F",), "observed",
              "0: given with the frame (file, depth image); 1: scan mesh winding; 2: PCA, oriented outward"),
    ArraySpec("observed/normal_quality", "float32", ("F", 3), "observed",
              "median PCA variation of the neighbourhoods, fraction of normals the skeleton cannot orient, "
              "fraction pointing towards their nearest bone"),
    ArraySpec("observed/proxy_distance", "float32", ("F", "J"), "observed",
              "distance from each joint to its proxy, the nearest observed point (m)"),
    ArraySpec("surface/box", "float32", ("F", 2, 3), "quantised",
              "lower and upper corner of a box holding the frame's surface points (the quantisation grid)"),
    ArraySpec("surface/points_quantised", "uint16", ("F", "S", 3), "quantised",
              "surface/points as q: box[0] + q (box[1] - box[0]) / 65535; ordered by x code within each chunk"),
    ArraySpec("surface/normals_octahedral", "uint16", ("F", "S", 2), "quantised",
              "surface/normals, octahedral map of the unit sphere onto [-1, 1]^2, 16 bits per coordinate"),
)

SPECS = {a.name: a for a in ARRAYS}

#: The arrays a reader asks for that a quantised store holds encoded, and the stored arrays they are decoded from
#: (``pipeline.store.quantise``; ``Store.read`` decodes, so training and evaluation code read floats either way).
DECODED_FROM = {
    "surface/points": ("surface/points_quantised", "surface/box"),
    "surface/normals": ("surface/normals_octahedral",),
}

#: Surface points per chunk along S in a quantised store (a whole frame per chunk otherwise): the loader reads the
#: chunks a step needs, and Zarr decodes only those. Within a chunk (a random subset of the frame's samples, as the
#: samples are drawn in random order) the points are ordered by their x code, which lets the compressor drop part
#: of the order's entropy (about 25 KB per 25k-point frame at this chunk size; 2,500 is the smallest measured size
#: that keeps a frame under 250 KB); a reader therefore takes whole chunks, never a prefix of one.
QUANTISED_CHUNK_POINTS = 2500
QUANTISED_CODES = ("surface/points_quantised", "surface/normals_octahedral")
QUANTISED_LEVELS = 65535  # 16-bit codes 0..65535
#: Largest angle (radians) between a unit normal and its decoded octahedral code, rounding to the nearest code of
#: spacing 2 / 65535: each coordinate moves at most e = 1 / 65535, the unnormalised decoded vector (L1 norm 1, so
#: Euclidean norm >= 1 / sqrt(3)) moves at most sqrt(6) e on each linear piece of the (continuous) unfolding, so
#: the angle is at most asin(sqrt(18) e); plus 1e-6 for float32 decoding. tests/test_quantise.py measures it.
NORMAL_ERROR_BOUND_RAD = math.asin(math.sqrt(18) / QUANTISED_LEVELS) + 1e-6


DIM_DOCS = {
    "F": "frames", "S": "surface samples per frame", "J": "joints", "P": "subjects",
    "U": "uniform evaluation points per frame", "N": "near-surface evaluation points per frame",
    "V": "mesh vertices", "Fc": "mesh faces",
}


@dataclass(frozen=True)
class Dims:
    """Sizes of the symbolic dimensions of one store (``DIM_DOCS``), kept in its ``dims`` attr."""

    F: int
    S: int
    J: int
    P: int
    U: int = 0
    N: int = 0
    V: int = 0
    Fc: int = 0

    def shape(self, spec: ArraySpec) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else getattr(self, d) for d in spec.dims)


def specs_for(sections: Iterable[str]) -> list[ArraySpec]:
    """The arrays a store of ``sections`` holds (a quantised store: the encoded surface arrays, not the floats)."""
    chosen = set(sections)
    unknown = chosen - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown store sections {sorted(unknown)}; choose from {SECTIONS}")
    return [a for a in ARRAYS if a.section in chosen and a.replaced_in not in chosen]


def stored_names(name: str, sections: Iterable[str]) -> tuple[str, ...]:
    """The stored arrays that a read of ``name`` comes from in a store of ``sections``: ``name`` itself, or the
    arrays it is decoded from (``DECODED_FROM``) where the store holds it encoded."""
    spec = SPECS.get(name)
    return DECODED_FROM[name] if spec and spec.replaced_in is not None and spec.replaced_in in set(sections) else (name,)


def compressors(dtype: str, typesize: int | None = None):
    """Zstd behind a byte shuffle for numbers (floats compress poorly without it); plain zstd for bool/uint8.
    ``typesize``: bytes shuffled as one element (default: the dtype's); the quantised surface codes shuffle a
    whole point (6 bytes) or normal (4), so each coordinate's high bytes form one stream (``codec_typesize``)."""
    from zarr.codecs import BloscCodec

    itemsize = typesize or np.dtype(dtype).itemsize
    shuffle = "shuffle" if itemsize > 1 else "noshuffle"
    return (BloscCodec(cname="zstd", clevel=3, shuffle=shuffle, typesize=itemsize),)


def codec_typesize(spec: ArraySpec) -> int:
    """Bytes the compressor shuffles as one element: a whole code row for the quantised surface codes, one
    value otherwise."""
    itemsize = np.dtype(spec.dtype).itemsize
    return itemsize * spec.dims[-1] if spec.name in QUANTISED_CODES else itemsize


def layout(spec: ArraySpec, dims: Dims, shard_frames: int,
           sections: Iterable[str] = ()) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(chunks, shards) of an array: one frame per chunk and ``shard_frames`` per shard for frame-major arrays,
    a single chunk otherwise. In a quantised store the surface arrays' chunks hold ``QUANTISED_CHUNK_POINTS``
    points of one frame."""
    shape = dims.shape(spec)
    if not spec.per_frame:
        return tuple(max(1, s) for s in shape), None
    chunks = (1, *shape[1:])
    if "quantised" in set(sections) and spec.dims[1:2] == ("S",):
        chunks = (1, max(1, min(QUANTISED_CHUNK_POINTS, shape[1])), *shape[2:])
    shards = (max(1, min(shard_frames, shape[0])), *shape[1:])
    return chunks, shards


def n_shards(n_frames: int, shard_frames: int) -> int:
    return -(-n_frames // shard_frames)


def shard_slice(i: int, n_frames: int, shard_frames: int) -> slice:
    return slice(i * shard_frames, min((i + 1) * shard_frames, n_frames))



def frames_text(i: int, n_frames: int, shard_frames: int) -> str:
    """``frames 32-63`` (inclusive) or ``frame 7``: what shard ``i`` holds, for messages."""
    sl = shard_slice(i, n_frames, shard_frames)
    return f"frame {sl.start}" if sl.stop - sl.start == 1 else f"frames {sl.start}-{sl.stop - 1}"


def array_problem(spec: ArraySpec, dtype, shape: tuple[int, ...], dims: Dims) -> str | None:
    """What is wrong with an array of ``dtype`` and ``shape`` under ``spec`` in a store of ``dims`` (None if
    nothing): a one-line description with the expected and the found value."""
    if str(dtype) != spec.dtype:
        return f"dtype {dtype}, the schema says {spec.dtype}"
    expected = dims.shape(spec)
    if tuple(shape) != expected:
        sizes = ", ".join(f"{d}={getattr(dims, d)}" for d in spec.dims if isinstance(d, str))
        return f"shape {tuple(shape)}, expected {expected} ({' x '.join(map(str, spec.dims))} with {sizes})"
    return None


# ------------------------------------------------------------------------------------------------ relabelling

#: The mask ``hipnet-data geodesics`` (``run.relabel_store``) adds while it relabels; removed when it finishes.
GEODESICS_DONE = ArraySpec("geodesics_done", "bool", ("F",), "relabel",
                           "frame relabelled (exists only while `hipnet-data geodesics` runs)")


# ------------------------------------------------------------------------------------------------ root attributes


@dataclass(frozen=True)
class AttrNames:
    """The names of the root attributes: write ``group.attrs[ATTR.complete]``, never the string."""

    schema_version: str = "schema_version"
    dataset: str = "dataset"
    split: str = "split"
    sections: str = "sections"
    shard_frames: str = "shard_frames"
    config: str = "config"
    frames_sha: str = "frames_sha"
    skeleton: str = "skeleton"
    dims: str = "dims"
    subjects: str = "subjects"
    sequences: str = "sequences"
    source: str = "source"
    manifest_hash: str = "manifest_hash"
    versions: str = "versions"
    units: str = "units"
    up_axis: str = "up_axis"
    canonicalisation: str = "canonicalisation"
    normals: str = "normals"
    occupancy_method: str = "occupancy_method"
    geodesic_labels: str = "geodesic_labels"
    quantisation: str = "quantisation"
    depth_sensor: str = "depth_sensor"
    relabel: str = "relabel"
    excluded: str = "excluded"
    unlisted: str = "unlisted"
    shard_index: str = "shard_index"
    complete: str = "complete"


ATTR = AttrNames()


@dataclass(frozen=True)
class AttrSpec:
    """One root attribute. ``required``: a store without it fails validation; ``identity``: a rerun into an
    existing store must match it, or it is refused (``store.create_store``)."""

    name: str
    doc: str
    required: bool = False
    identity: bool = False


ROOT_ATTRS: tuple[AttrSpec, ...] = (
    AttrSpec(ATTR.schema_version, "SCHEMA_VERSION of the writer", True, True),
    AttrSpec(ATTR.dataset, "dataset name (manifest or reader)", True, True),
    AttrSpec(ATTR.split, "train, test or heldout", True, True),
    AttrSpec(ATTR.sections, "sections written: train, eval, mesh, snarf, observed", True, True),
    AttrSpec(ATTR.shard_frames, "frames per shard", True, True),
    AttrSpec(ATTR.config, "the resolved PreprocessConfig", True, True),
    AttrSpec(ATTR.frames_sha, "sha256 (16 hex digits) of the frame keys in store order", True, True),
    AttrSpec(ATTR.skeleton, "joint names and parents", True, True),
    AttrSpec(ATTR.dims, "sizes of the dimension symbols F, S, J, P, U, N, V, Fc", True),
    AttrSpec(ATTR.subjects, "subject names; frame/subject indexes them", True),
    AttrSpec(ATTR.sequences, "sequence names; frame/sequence indexes them", True),
    AttrSpec(ATTR.source, "reader name and raw root"),
    AttrSpec(ATTR.manifest_hash, "hash of the dataset manifest (null without one)"),
    AttrSpec(ATTR.versions, "versions of the packages that shaped the content"),
    AttrSpec(ATTR.units, "length unit"),
    AttrSpec(ATTR.up_axis, "up axis"),
    AttrSpec(ATTR.canonicalisation, "how frames were canonicalised"),
    AttrSpec(ATTR.normals, "how normals were computed"),
    AttrSpec(ATTR.occupancy_method, "how occupancy was computed and cross-checked"),
    AttrSpec(ATTR.geodesic_labels, "how joint labels were computed"),
    AttrSpec(ATTR.quantisation, "quantised stores only: the codes and their error bounds, max_point_error_mm (over "
                                "the store's frames, written at completion) and max_normal_error_deg"),
    AttrSpec(ATTR.depth_sensor, "the depth sensor a store of `hipnet-data depth` was rendered with (absent "
                                "otherwise)", identity=True),
    AttrSpec(ATTR.relabel, "geodesic mode of an unfinished `hipnet-data geodesics` run (absent otherwise)"),
    AttrSpec(ATTR.excluded, "frames and sequences left out by `preprocess --exclude-failed`: [{key, reason}] (key "
                            "subject/sequence/index or subject/sequence); frames_sha is of the source's frames "
                            "without them (absent when none)"),
    AttrSpec(ATTR.unlisted, "sequences that could not be listed when the frame list was fixed: [{key, reason}]; the "
                            "store is not complete while any remain (absent when none)"),
    AttrSpec(ATTR.shard_index, "per array, per shard: [file bytes, content hash] (written at completion)"),
    AttrSpec(ATTR.complete, "true: every frame done and the shard index written; set last"),
)

REQUIRED_ATTRS = tuple(a.name for a in ROOT_ATTRS if a.required)
IDENTITY_ATTRS = tuple(a.name for a in ROOT_ATTRS if a.identity)

#: Conventions every store states in its root attributes (docs/architecture.md sections 3 and 5).
CONVENTIONS = {
    ATTR.units: "metres",
    ATTR.up_axis: "+Y",
    ATTR.canonicalisation: "pelvis at the origin, heading about +Y removed (pipeline.stages.canonical); "
                           "pose/world_from_canonical maps back",
    ATTR.normals: "interpolated area-weighted vertex normals, unit, outward",
    ATTR.occupancy_method: "generalised winding number > 0.5 (libigl fast_winding_number) on the stored float32 "
                           "points; cross-check: open3d RaycastingScene.compute_occupancy (ray parity), "
                           "disagreements counted per frame",
    ATTR.geodesic_labels: "argmin over joints of heat-method distance (potpourri3d, use_robust) from each joint's "
                          "proxy vertex (nearest to the rest joint, tracked by index), interpolated by barycentrics",
}

#: What differs in a store of observed frames (point clouds, raw scans, depth images).
OBSERVED_CONVENTIONS = {
    ATTR.normals: "observed frames: the input's normals where it has them (observed/normal_source 0), a scan's "
                  "interpolated vertex normals (1), else PCA normals oriented away from the nearest bone (2)",
    ATTR.geodesic_labels: "argmin over joints of point-cloud heat-method distance (potpourri3d PointCloudHeatSolver, "
                          "per piece) from each joint's proxy, the observed point nearest the joint in each frame",
}


#: The ``quantisation`` attribute of a quantised store at creation; ``max_point_error_mm`` is added at completion
#: (``store.mark_complete``), from the frames' boxes: half a code step along each axis, combined, plus float32
#: rounding of the decoded coordinates.
QUANTISATION = {
    "points": "uint16 per coordinate over the frame's surface/box: x = box[0] + q (box[1] - box[0]) / 65535",
    "point_error": "per frame at most |box[1] - box[0]| / 131070 (half a code step per axis) plus float32 rounding",
    "normals": "octahedral map, 16 bits per coordinate, rounded to the nearest code",
    "max_normal_error_deg": math.degrees(NORMAL_ERROR_BOUND_RAD),
    "labels": "uint8",
    "chunk_points": QUANTISED_CHUNK_POINTS,
    "order": "the samples' random order, then sorted by x code within each chunk (points, normals, labels alike)",
}


# ------------------------------------------------------------------------------------------------ shard index

#: Zarr group holding one hash record per shard (``hashes/<i>``, attributes ``{"arrays": {name: [bytes, hash]}}``)
#: and one for the arrays written once at creation (``hashes/static``). Each shard task writes its own record
#: before its ``done`` slice; ``mark_complete`` collects them into the ``shard_index`` attribute.
HASH_GROUP = "hashes"
STATIC_RECORD = "static"
HASH_ALGORITHM = "blake2b-128 of the shard's C-contiguous array bytes (native numpy layout, dtype of the schema)"


def content_hash(block: np.ndarray) -> str:
    """Hash of an array's content, independent of chunking and codecs: 32 hex digits."""
    return hashlib.blake2b(np.ascontiguousarray(block).data, digest_size=16).hexdigest()


def shard_key(spec: ArraySpec, shard: int) -> str:
    """Path of shard ``shard`` of an array inside the store (Zarr v3 default chunk keys, ``/`` separated): frame
    shards are ``c/<shard>/0/...``; an array written once is one chunk, ``c/0/0/...``."""
    return "/".join([spec.name, "c", str(shard), *["0"] * (len(spec.dims) - 1)])


# ------------------------------------------------------------------------------------------------ documentation


def markdown() -> str:
    """The tables of docs/guides/pipeline.md: arrays, then root attributes."""
    lines = ["| array | dtype | shape | section | notes |", "|---|---|---|---|---|"]
    for a in (*ARRAYS, GEODESICS_DONE):
        shape = "(" + ", ".join(map(str, a.dims)) + ("," if len(a.dims) == 1 else "") + ")"
        doc = a.doc + (f"; a {a.replaced_in} store holds " + " and ".join(f"`{n}`" for n in DECODED_FROM[a.name])
                       + " instead (decoded on reading)" if a.replaced_in else "")
        lines.append(f"| `{a.name}` | {a.dtype} | {shape} | {a.section} | {_cell(doc)} |")
    lines += ["", "| root attribute | required | identity | meaning |", "|---|---|---|---|"]
    for s in ROOT_ATTRS:
        lines.append(f"| `{s.name}` | {'yes' if s.required else ''} | {'yes' if s.identity else ''} | "
                     f"{_cell(s.doc)} |")
    dims = ", ".join(f"{f.name} {DIM_DOCS[f.name]}" for f in fields(Dims))
    lines += ["", f"Schema version {SCHEMA_VERSION}. Dimensions: {dims}. A `quantised` store (`hipnet-data preprocess "
              f"--quantise`) holds `surface/points` and `surface/normals` encoded (decoded on reading), with "
              f"surface chunks of {QUANTISED_CHUNK_POINTS} points; normals within "
              f"{math.degrees(NORMAL_ERROR_BOUND_RAD):.4f} degrees, points within half a code step per axis of "
              "their box (the store's `quantisation` attribute)."]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# ------------------------------------------------------------------------------------------------ validation limits

NORMAL_TOLERANCE = 1e-2  # float16 normals: |n| within 1% of 1
# fraction of a frame's evaluation points where winding number and ray parity may disagree: self-intersections
# (a hand through the torso in deep flexion) are doubly covered, winding number 2 (inside, right) where ray parity
# says outside; the embedded data reaches 1.03% on one near-surface frame. A broken (open) mesh goes far beyond.
MAX_DISAGREEMENT = 0.05


def validate(group, progress: Callable[[int], None] | None = None, max_disagreement: float = MAX_DISAGREEMENT,
             quick: bool = False):
    """Check an open store against this schema (``pipeline.store.validate.validate_store``, which has the details;
    kept here because callers import the check with the contract). Returns a ``pipeline.store.validate.Report``."""
    from hipnet.pipeline.store.validate import validate_store

    return validate_store(group, progress=progress, max_disagreement=max_disagreement, quick=quick)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hipnet.pipeline.store.schema", description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the schema tables of docs/guides/pipeline.md")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.error("nothing to do: pass --markdown")
    print(markdown(), end="")


if __name__ == "__main__":
    main()
