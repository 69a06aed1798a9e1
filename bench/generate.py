"""Benchmark: posing the embedded Anny bodies.

Compares, in one run on one machine, our 22-joint numpy LBS (what `hipnet-data anny` uses) against Anny's own
forward pass (104 bones, torch) for the same full-resolution subject and batch of poses, and measures the whole
generation of a small dataset (frames per second, including writing). Prints the figures and writes them to
bench/results/generate.json with the machine they ran on.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._results import write_result
from hipnet.pipeline.embedded.body import AnnyBody
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest, pose_sequence
from hipnet.pipeline.embedded.motions import random_motion


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    body = AnnyBody("full")
    rest = body.rest_shape({})
    n = 32
    motion = random_motion(np.random.default_rng(0), n, 8)
    ours = best_of(lambda: pose_sequence(rest.vertices, rest.joints, body.skinning_weights, motion))
    model = body._model
    poses = torch.eye(4, dtype=torch.float64).expand(n, len(body.bone_labels), 4, 4).clone()
    with torch.no_grad():
        anny_s = best_of(lambda: model(pose_parameters=poses))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_anny_manifest(n_realistic=2, n_heldout=0, extremes=("tall_male",), sequences_per_subject=4)
        t = time.perf_counter()
        summary = generate_dataset(manifest, Path(tmp) / "anny", body=body)
        gen_s = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (Path(tmp) / "anny").rglob("*.npz"))
    result = {
        "vertices": body.num_vertices,
        "frames_per_batch": n,
        "ours_lbs22_frames_per_s": n / ours,
        "anny_forward_frames_per_s": n / anny_s,
        "speedup_vs_anny_forward": anny_s / ours,
        "generation_frames_per_s": summary["frames"] / gen_s,
        "generation_frames": summary["frames"],
        "raw_bytes_per_frame": size / summary["frames"],
    }
    write_result("generate", result)


if __name__ == "__main__":
    main()
