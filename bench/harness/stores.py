"""The stores the harness trains and scores on: the embedded dataset's train (with occupancy samples and meshes),
test and heldout stores, the depth stores of the observation experiment, and the check of their distance targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.harness.evaluation import spaced
from bench.harness.variants import depth_key, depth_sensor


def build_stores(data: Path, quick: bool, workers: int, raw: Path | None = None) -> dict[str, Path]:
    """The embedded dataset and its three stores: train (with occupancy samples and meshes, for NASA), test and
    heldout. Reuses what exists (generation and preprocessing are resumable and deterministic)."""
    from hipnet.pipeline.core.config import PreprocessConfig
    from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
    from hipnet.pipeline.readers.anny import AnnyReader
    from hipnet.pipeline.runner.driver import preprocess_split
    from hipnet.pipeline.sources.manifest import load_manifest

    raw = raw or data / "raw"
    if not (raw / "dataset.yaml").exists():
        manifest = (make_anny_manifest(seed=0, n_realistic=2, n_heldout=1, extremes=("tall_male", "slim_female"),
                                       sequences_per_subject=4, frames_per_sequence=6, key_every=3, topology="lowpoly")
                    if quick else load_manifest("anny"))
        generate_dataset(manifest, raw)
    small = dict(surface_points=400, eval_points=500, shard_frames=5) if quick else {}
    train_cfg = PreprocessConfig(geodesics="per-template", eval_on_train=True,
                                 **({"eval_points": 20_000} | small))
    eval_cfg = PreprocessConfig(geodesics="per-template", **small)
    out = {}
    for split, cfg in (("train", train_cfg), ("test", eval_cfg), ("heldout", eval_cfg)):
        summary = preprocess_split(AnnyReader(raw, (split,)), data / "stores", cfg, split, workers=workers)
        out[split] = Path(summary.store)
    out["raw"] = raw
    return out


def vertex_labels(raw: Path, subjects: list[str]) -> dict[str, np.ndarray]:
    """Each subject's mesh vertices labelled by the argmax of their skinning weights (NASA's auxiliary term)."""
    labels = {}
    for name in subjects:
        with np.load(raw / "subjects" / f"{name}.npz", allow_pickle=False) as z:
            labels[name] = z["skinning_weights"].argmax(1)
    return labels


def depth_store(stores: dict[str, Path], views: int, tiny: bool, workers: int, rig: str = "body") -> Path:
    """The train store's frames seen by ``views`` depth cameras (``pipeline.runner.depthstores.build_depth_store``
    from the train store's meshes, same frame keys): DATA/stores/depth<views>[-world]_<W>x<H>/train.zarr. Built on
    demand, resumable and deterministic (the sensor noise is seeded per frame); the same surface samples per frame
    as the train store."""
    from hipnet.pipeline.core.config import PreprocessConfig
    from hipnet.pipeline.runner.depthstores import build_depth_store

    sensor = depth_sensor(views, tiny, rig)
    out = stores["train"].parent / f"{depth_key(views, rig)}_{sensor.width}x{sensor.height}"
    cfg = PreprocessConfig(**(dict(surface_points=400, shard_frames=5) if tiny else {}))
    summary = build_depth_store(stores["train"], out, sensor, cfg, workers=workers)
    if not summary.complete:
        raise SystemExit(f"{out}: depth store incomplete, {len(summary.failures)} frames failed, e.g. "
                         f"{summary.failures[:2]}; rerun to resume")
    return Path(summary.store)


def sdf_target_check(train: Path, meshes: Path, bands: tuple[float | None, ...], n_frames: int = 8,
                     eikonal: int = 1000, near_sigma: float = 0.03, margin: float = 0.1) -> dict:
    """How often the oriented-distance target (``model.data.oriented_distance``) has the wrong sign on a training
    store's frames: eikonal points drawn as the loader draws them (half uniform in the samples' box grown by 0.1 m,
    half at samples moved by N(0, 3 cm)), their target from the store's oriented samples, the truth from the mesh
    of the same frame key in ``meshes`` (winding numbers). Per band (None: everywhere): the fraction of eikonal
    points with a target (``coverage``) and, of those, the fraction inside the body with a positive target or
    outside with a negative one (``wrong_sign``), and of those the gross ones, whose target is wrong by more than
    2 cm (``gross_wrong_sign``: the ones that teach a wrong inside or outside rather than noise at the surface),
    all in %."""
    from hipnet.model.data import oriented_distance
    from hipnet.pipeline.stages.occupancy import occupancy
    from hipnet.pipeline.store.reading import Store

    store, mesh = Store.open(train), Store.open(meshes)
    rows = {k: i for i, k in enumerate(mesh.frame_keys())}
    frames = spaced(store.n_frames, n_frames)
    faces = mesh.read("mesh/faces")
    counts = {str(b): [0, 0, 0, 0] for b in bands}  # eikonal points, with a target, with a wrong sign, gross
    for i in frames:
        j = rows[store.frame_key(i)]
        pts, nrm = store.read("surface/points", i), store.read("surface/normals", i)
        rng = np.random.default_rng([0, i])
        lo, hi = pts.min(0) - margin, pts.max(0) + margin
        near = pts[rng.integers(0, len(pts), eikonal - eikonal // 2)]
        q = np.concatenate([rng.uniform(lo, hi, (eikonal // 2, 3)),
                            near + rng.normal(0.0, near_sigma, near.shape)]).astype(np.float32)
        inside = occupancy(mesh.read("mesh/vertices", j), faces, q).inside
        for b in bands:
            d = oriented_distance(pts, nrm, q, b)
            known = np.isfinite(d)
            c = counts[str(b)]
            c[0] += len(q)
            c[1] += int(known.sum())
            wrong = known & ((d < 0) != inside)
            c[2] += int(wrong.sum())
            c[3] += int((wrong & (np.abs(d) > 0.02)).sum())
    return {"frames": len(frames), "eikonal_per_frame": eikonal,
            "bands": {b: {"coverage": 100 * k / n, "wrong_sign": 100 * w / max(k, 1),
                          "gross_wrong_sign": 100 * g / max(k, 1)} for b, (n, k, w, g) in counts.items()}}
