"""Benchmark: preprocessing full-resolution Anny frames into stores (targets in brackets).

Measured in one run on one machine:
- training frames (25k surface points + labels), per-template geodesics, 1 process  [>= 60 frames/s per core]
- training frames, per-frame geodesics, 1 process                                     [>= 15 frames/s per core]
- the label agreement of the two modes on the same frames
- evaluation frames (plus 100k uniform + 100k near-surface occupancy points), 1 process [>= 2.5 frames/s per core]
- per-frame training frames with 2 worker processes: speed-up over 1 process (a ratio, same run)
- stored bytes per training frame                                                      [<= 500 KB]
- where a frame's time goes (per stage), so a missed target says why; and for a whole per-template training store,
  where its time goes outside the stages: reading, the per-subject setup, zarr's writes, the integrity records
  (``per_template_ms_per_frame_split``)
- each stage and each 1-process figure against the previous implementation (libigl's fast winding
  number plus open3d ray parity, the straightforward sampling and labels, potpourri3d's robust heat solver built
  per frame, scipy's default KD-tree leaves for the near points' labels, kept below as ``previous_*``), timed in
  the same run, interleaved, on the same frames:
  ``speedup_vs_previous`` (previous time / current time), with a check that the stores the two write hold the same
  values, and the per-frame labels' agreement with the robust solver's (``label_agreement_vs_robust``)

Prints the figures and writes bench/results/preprocess.json with the machine they ran on.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench._results import write_result
from hipnet.pipeline.embedded.body import AnnyBody
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner import frame as process
from hipnet.pipeline.runner import tasks as shards
from hipnet.pipeline.runner.driver import preprocess_split
from hipnet.pipeline.runner.frame import PreprocessConfig, SubjectGeometry, frame_labels, frame_rng
from hipnet.pipeline.stages.canonical import canonicalise
from hipnet.pipeline.stages.evalpoints import near_points, uniform_points
from hipnet.pipeline.stages.geodesics import sample_labels
from hipnet.pipeline.stages.intrinsic import NonManifoldError
from hipnet.pipeline.stages.occupancy import fast_winding_occupancy, occupancy
from hipnet.pipeline.stages.surface import sample_surface, sample_surface_reference
from hipnet.pipeline.store import zarrstore as store
from hipnet.pipeline.store.reading import Store

# ------------------------------------------------------------------ the previous implementations, for the ratios

def previous_sample_labels(distances, faces, face_index, bary) -> np.ndarray:
    corner = np.asarray(faces)[face_index]
    return np.argmin(np.einsum("jsk,sk->sj", distances[:, corner], bary), axis=1).astype(np.uint8)


def previous_nearest_labels(surface_points, labels, queries) -> np.ndarray:
    """Before: scipy's default leaves of 16 points (the query threaded as now, so the ratio is the leaves')."""
    from scipy.spatial import cKDTree

    return labels[cKDTree(surface_points).query(queries, k=1, workers=-1)[1]]


class RobustPerFrame:
    """In place of ``PoseHeat``: no pose heat solver, so ``frame_labels`` builds potpourri3d's robust solver on every
    posed mesh, as before (the path a non-manifold mesh still takes)."""

    def __init__(self, *_) -> None:
        raise NonManifoldError("the previous per-frame labels")


@contextmanager
def patched(owner, **replacements):
    """``owner``'s attributes replaced inside the block, restored after it."""
    saved = {name: getattr(owner, name) for name in replacements}
    for name, value in replacements.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owner, name, value)


@contextmanager
def previous_stages():
    """Run ``process_frame`` (1 process, this interpreter) with the previous stage implementations. The worker's
    cache of subject geometry (which holds the pose heat solver) is emptied on the way in and out."""
    with patched(process, sample_surface=sample_surface_reference, sample_labels=previous_sample_labels,
                 occupancy=fast_winding_occupancy, PoseHeat=RobustPerFrame, nearest_labels=previous_nearest_labels):
        shards._GEOMETRY.clear()
        try:
            yield
        finally:
            shards._GEOMETRY.clear()


@contextmanager
def time_split(reader: AnnyReader):
    """Seconds spent, during a 1-process store write in this interpreter, reading frames (``reader.load``), building
    subject geometry, in ``process_frame``, in zarr's shard writes and in the integrity records (the writes
    without the records), filled into the yielded dict; the functions are wrapped only inside the block."""
    spent: dict[str, float] = defaultdict(float)

    def timed_call(fn, label: str):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t
        return call

    def timed_load(refs, load=reader.load):
        frames = iter(load(refs))
        while True:
            t = time.perf_counter()
            item = next(frames, None)
            spent["reading"] += time.perf_counter() - t
            if item is None:
                return
            yield item

    with (patched(shards, subject_geometry=timed_call(shards.subject_geometry, "subject_setup"),
                  process_frame=timed_call(shards.process_frame, "stages"),
                  write_shard=timed_call(shards.write_shard, "zarr_writes")),
          patched(store, record_shard=timed_call(store.record_shard, "integrity_records")),
          patched(reader, load=timed_load)):
        yield spent
    spent["zarr_writes"] -= spent["integrity_records"]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def stage_profile(reader: AnnyReader, n: int = 8) -> tuple[dict, dict, dict]:
    """Mean ms per frame of each stage on ``n`` frames (wall and CPU of all threads), current and previous
    implementation interleaved on the same inputs; and the checks that both give the same answers."""
    from hipnet.pipeline.runner.frame import nearest_labels

    frames = [f for _, f in reader.load(reader.frame_refs()[:n])]
    subj = reader.subject(frames[0].subject)
    per_frame = SubjectGeometry.build(subj, "per-frame", "bench")
    per_template = SubjectGeometry.build(subj, "per-template", "bench")
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    robust = dataclasses.replace(per_frame, heat=None)
    same = {"sampling_bits": True, "labels": True, "occupancy": True, "disagreement_count_differs": 0,
            "label_agreement_vs_robust": []}

    def add(name, fn, *args):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        wall[name] = wall.get(name, 0.0) + (time.perf_counter() - t) / n
        cpu[name] = cpu.get(name, 0.0) + (time.process_time() - c) / n
        return out

    def occupancy_points(vertices, samples, rng):
        u = uniform_points(vertices, 100_000, rng).astype(np.float32)
        return np.concatenate([u, near_points(samples, 100_000, rng)[0].astype(np.float32)])

    for f in frames:
        c = add("canonicalise", canonicalise, f.vertices, f.joint_transforms)
        s = add("surface_sampling_25k", sample_surface, c.vertices, f.faces, 25_000, frame_rng(0, "anny", f.key))
        rng = frame_rng(0, "anny", f.key)
        s0 = add("previous/surface_sampling_25k", sample_surface_reference, c.vertices, f.faces, 25_000, rng)
        same["sampling_bits"] &= all(np.array_equal(a, b) for a, b in zip(s, s0, strict=True))
        d = per_template.template_distances
        a = add("labels_per_template", sample_labels, d, per_template.faces, s.face_index, s.barycentrics)
        b = add("previous/labels_per_template", previous_sample_labels, d, per_template.faces, s.face_index,
                s.barycentrics)
        same["labels"] &= bool(np.array_equal(a, b))
        labels = add("labels_per_frame_heat", frame_labels, c.vertices, per_frame, s.face_index, s.barycentrics)
        reference = add("previous/labels_per_frame_heat", frame_labels, c.vertices, robust, s.face_index,
                        s.barycentrics)
        same["label_agreement_vs_robust"].append(float((labels == reference).mean()))
        both = add("eval_points_sampling", occupancy_points, c.vertices, s, rng)
        new = add("occupancy_200k", occupancy, c.vertices, f.faces, both)
        old = add("previous/occupancy_200k", fast_winding_occupancy, c.vertices, f.faces, both)
        same["occupancy"] &= bool(np.array_equal(new.inside, old.inside))
        same["disagreement_count_differs"] += int(new.disagreements != old.disagreements)
        near = add("near_labels_kdtree_100k", nearest_labels, s.points.astype(np.float32), labels, both[100_000:])
        near0 = add("previous/near_labels_kdtree_100k", previous_nearest_labels, s.points.astype(np.float32), labels,
                    both[100_000:])
        same["labels"] &= bool(np.array_equal(near, near0))
    agreement = same.pop("label_agreement_vs_robust")
    same["label_agreement_vs_robust"] = {"min": min(agreement), "mean": float(np.mean(agreement))}
    speedup = {k: wall[f"previous/{k}"] / wall[k] for k in wall if f"previous/{k}" in wall}
    cpu_speedup = {k: cpu[f"previous/{k}"] / cpu[k] for k in cpu if f"previous/{k}" in cpu}
    rounded = {k: round(v * 1000, 2) for k, v in wall.items()}
    return rounded, {"wall": speedup, "cpu": cpu_speedup, "cpu_ms": {k: round(v * 1000, 2) for k, v in cpu.items()}}, same


def stores_agree(tmpl, tmpl0, ev, ev0, reader: AnnyReader) -> dict:
    """Whether the stores written with the current and the previous stages hold the same values; where the
    occupancy differs, which of the two matches libigl's exact winding number on the frame's float64 canonical
    mesh (the one occupancy is computed on; the stored float32 mesh can put a point within 1e-7 on the other side)."""
    import igl

    def equal(x, y, names):
        return all(np.array_equal(x.read(k), y.read(k)) for k in names)

    faces = ev.read("mesh/faces").astype(np.int64)
    stored_mesh = ev.read("mesh/vertices")
    canonical = [canonicalise(f.vertices, f.joint_transforms).vertices for _, f in reader.load(reader.frame_refs())]
    differ = current_exact = previous_exact = 0
    for kind in ("uniform", "near"):
        points, occ, occ0 = (ev.read(f"eval/{kind}_points"), ev.read(f"eval/{kind}_occupancy"),
                             ev0.read(f"eval/{kind}_occupancy"))
        for i in np.flatnonzero((occ != occ0).any(axis=1)):
            mesh = next(v for v in canonical if np.array_equal(v.astype(np.float32), stored_mesh[i]))
            idx = np.flatnonzero(occ[i] != occ0[i])
            exact = igl.winding_number(mesh.astype(np.float64), faces, points[i][idx].astype(np.float64)) > 0.5
            differ += len(idx)
            current_exact += int(np.count_nonzero(occ[i][idx] == exact))
            previous_exact += int(np.count_nonzero(occ0[i][idx] == exact))
    counts = [(ev.read(f"eval/{k}_disagreements"), ev0.read(f"eval/{k}_disagreements")) for k in ("uniform", "near")]
    return {
        "train_store_identical": equal(tmpl, tmpl0, ["surface/points", "surface/normals", "surface/labels"]),
        "eval_store_labels_identical": equal(ev, ev0, ["surface/labels", "eval/near_labels"]),
        "eval_occupancy_points_differing": differ,
        "eval_occupancy_differing_current_matches_exact": current_exact,
        "eval_occupancy_differing_previous_matches_exact": previous_exact,
        "eval_disagreement_counts_differing": int(sum(np.count_nonzero(a != b) for a, b in counts)),
    }


def main() -> None:
    body = AnnyBody("full")
    manifest = make_anny_manifest(n_realistic=2, n_heldout=1, extremes=("tall_male",), sequences_per_subject=4,
                                  frames_per_sequence=16, key_every=8, topology="full")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        generate_dataset(manifest, raw, body=body)
        train = AnnyReader(raw, ("train",))
        evaluation = AnnyReader(raw, ("test",))
        n_train, n_eval = len(train.frame_refs()), len(evaluation.frame_refs())

        def run(reader, split, mode, workers, name):
            cfg = PreprocessConfig(geodesics=mode, shard_frames=8)
            summary, dt = timed(lambda: preprocess_split(reader, Path(tmp) / name, cfg, split, workers=workers))
            assert summary.complete and not summary.failures, summary
            return summary, dt

        def run_previous(reader, split, mode, name):
            with previous_stages():
                return run(reader, split, mode, 1, name)

        # current and previous implementations alternate, so a change in the machine's load hits both
        tmpl, t_tmpl = run(train, "train", "per-template", 1, "tmpl")
        shards._GEOMETRY.clear()  # the split below pays the per-subject setup again, as every store does
        with time_split(train) as spent:
            _, t_split = run(train, "train", "per-template", 1, "tmpl_split")
        split = {k: round(1000 * v / n_train, 2) for k, v in spent.items()}
        split["store_creation_and_rest"] = round(1000 * (t_split - sum(spent.values())) / n_train, 2)
        tmpl0, t_tmpl0 = run_previous(train, "train", "per-template", "tmpl0")
        frame, t_frame = run(train, "train", "per-frame", 1, "frame")
        _, t_frame0 = run_previous(train, "train", "per-frame", "frame0")
        _, t_frame2 = run(train, "train", "per-frame", 2, "frame2")
        ev, t_eval = run(evaluation, "test", "per-template", 1, "eval")
        ev0, t_eval0 = run_previous(evaluation, "test", "per-template", "eval0")
        a, b = Store.open(tmpl.store), Store.open(frame.store)
        agreement = float((a.read("surface/labels") == b.read("surface/labels")).mean())
        train_bytes = a.bytes_on_disk() / n_train
        eval_bytes = Store.open(Path(tmp) / "eval" / "test.zarr").bytes_on_disk() / n_eval
        same_stores = stores_agree(Store.open(tmpl.store), Store.open(tmpl0.store), Store.open(ev.store),
                                   Store.open(ev0.store), evaluation)
        profile, stage_speedup, same_stages = stage_profile(evaluation)

    result = {
        "vertices": body.num_vertices,
        "train_frames": n_train,
        "eval_frames": n_eval,
        "train_per_template_frames_per_s_per_core": n_train / t_tmpl,
        "train_per_frame_frames_per_s_per_core": n_train / t_frame,
        "train_per_frame_2_workers_frames_per_s": n_train / t_frame2,
        "speedup_2_workers_vs_1": t_frame / t_frame2,
        "eval_frames_per_s_per_core": n_eval / t_eval,
        "label_agreement_per_template_vs_per_frame": agreement,
        "label_agreement_vs_robust": same_stages["label_agreement_vs_robust"],
        "bytes_per_train_frame": train_bytes,
        "bytes_per_eval_frame": eval_bytes,
        "stage_ms_per_frame": {k: v for k, v in profile.items() if not k.startswith("previous/")},
        "stage_ms_per_frame_previous": {k[9:]: v for k, v in profile.items() if k.startswith("previous/")},
        "stage_cpu_ms_per_frame": stage_speedup["cpu_ms"],
        "per_template_ms_per_frame_split": split,
        "speedup_vs_previous": {
            "stages_wall": stage_speedup["wall"],
            "stages_cpu": stage_speedup["cpu"],
            "train_per_template_frames": t_tmpl0 / t_tmpl,
            "train_per_frame_frames": t_frame0 / t_frame,
            "eval_frames": t_eval0 / t_eval,
        },
        "same_answers_as_previous": {**same_stages, **same_stores},
        "targets": {
            "train_per_template_frames_per_s_per_core": 60, "train_per_frame_frames_per_s_per_core": 15,
            "eval_frames_per_s_per_core": 2.5, "bytes_per_train_frame_max": 500_000,
        },
        "note": "1-process figures run in the calling process (no pool); they include reading, every stage, "
                "compression and writing, and the per-subject setup (weld, proxies, rest-pose distances). "
                "speedup_vs_previous = previous time / current time in this run (end to end: whole 1-process "
                "stores; stages: wall, and CPU of all threads, per frame). Embree, libigl and the nearest-sample KD-tree "
                "query use every core.",
    }
    write_result("preprocess", result)


if __name__ == "__main__":
    main()
