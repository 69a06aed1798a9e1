"""Benchmark: preprocessing full-resolution Anny frames into stores (issue targets in brackets).

Measured in one run on one machine:
- training frames (25k surface points + labels), per-template geodesics, 1 process  [>= 50 frames/s per core]
- training frames, per-frame geodesics, 1 process                                     [>= 8 frames/s per core]
- the label agreement of the two modes on the same frames
- evaluation frames (plus 100k uniform + 100k near-surface occupancy points), 1 process [>= 2 frames/s per core]
- per-frame training frames with 2 worker processes: speed-up over 1 process (a ratio, same run)
- stored bytes per training frame                                                      [<= 500 KB]
- where a frame's time goes (per stage), so a missed target says why

Prints the figures and writes bench/results/preprocess.json with the machine they ran on.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _results import write_result

from hipnet.pipeline.embedded.body import AnnyBody
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
from hipnet.pipeline.process import PreprocessConfig, SubjectGeometry, frame_labels, frame_rng
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.run import preprocess_split
from hipnet.pipeline.stages.canonical import canonicalise
from hipnet.pipeline.stages.evalpoints import near_points, uniform_points
from hipnet.pipeline.stages.occupancy import ray_parity_occupancy, winding_occupancy
from hipnet.pipeline.stages.surface import sample_surface
from hipnet.pipeline.store import Store


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def stage_profile(reader: AnnyReader, n: int = 8) -> dict:
    """Mean seconds per frame of each stage on ``n`` frames."""
    from hipnet.pipeline.process import nearest_labels

    frames = [f for _, f in reader.load(reader.frame_refs()[:n])]
    subj = reader.subject(frames[0].subject)
    per_frame = SubjectGeometry.build(subj, "per-frame", "bench")
    per_template = SubjectGeometry.build(subj, "per-template", "bench")
    acc: dict[str, float] = {}

    def add(name, fn, *args):
        out, dt = timed(lambda: fn(*args))
        acc[name] = acc.get(name, 0.0) + dt / n
        return out

    def occupancy_points(vertices, samples, rng):
        u = uniform_points(vertices, 100_000, rng).astype(np.float32)
        return np.concatenate([u, near_points(samples, 100_000, rng)[0].astype(np.float32)])

    for f in frames:
        c = add("canonicalise", canonicalise, f.vertices, f.joint_transforms)
        rng = frame_rng(0, "anny", f.key)
        s = add("surface_sampling_25k", sample_surface, c.vertices, f.faces, 25_000, rng)
        add("labels_per_template", frame_labels, c.vertices, per_template, s.face_index, s.barycentrics)
        labels = add("labels_per_frame_heat", frame_labels, c.vertices, per_frame, s.face_index, s.barycentrics)
        both = add("eval_points_sampling", occupancy_points, c.vertices, s, rng)
        add("winding_number_200k", winding_occupancy, c.vertices, f.faces, both)
        add("ray_parity_200k", ray_parity_occupancy, c.vertices, f.faces, both)
        add("near_labels_kdtree_100k", nearest_labels, s.points.astype(np.float32), labels, both[100_000:])
    return {k: round(v * 1000, 2) for k, v in acc.items()}


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

        tmpl, t_tmpl = run(train, "train", "per-template", 1, "tmpl")
        frame, t_frame = run(train, "train", "per-frame", 1, "frame")
        _, t_frame2 = run(train, "train", "per-frame", 2, "frame2")
        _, t_eval = run(evaluation, "test", "per-template", 1, "eval")
        a, b = Store.open(tmpl.store), Store.open(frame.store)
        agreement = float((a.read("surface/labels") == b.read("surface/labels")).mean())
        train_bytes = a.bytes_on_disk() / n_train
        eval_bytes = Store.open(Path(tmp) / "eval" / "test.zarr").bytes_on_disk() / n_eval
        profile = stage_profile(evaluation)

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
        "bytes_per_train_frame": train_bytes,
        "bytes_per_eval_frame": eval_bytes,
        "stage_ms_per_frame": profile,
        "targets": {
            "train_per_template_frames_per_s_per_core": 50, "train_per_frame_frames_per_s_per_core": 8,
            "eval_frames_per_s_per_core": 2, "bytes_per_train_frame_max": 500_000,
        },
        "note": "1-process figures run in the calling process (no pool); they include reading, every stage, "
                "compression and writing, and the per-subject setup (weld, proxies, rest-pose distances).",
    }
    write_result("preprocess", result)


if __name__ == "__main__":
    main()
