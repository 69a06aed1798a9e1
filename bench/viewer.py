"""Benchmark: how long ``hipnet-view`` takes to update a model surface on this machine (the figure in docs/guides/viewer.md).

For a checkpoint and a store, on ``--frames`` frames spread over the store: the time of the viewer's own update
functions, in the order the viewer runs them, at the interactive and the refined resolution
(``viz.posing.model_surface``: coarse-to-fine marching cubes from ``posing.START``), plus the error colouring
(``scene.surface_distance`` + ``scene.error_colors``) and the one-frame read and scene building of the Store tab
(``scene.read_frame`` + ``scene.frame_scene``). The load average before and after is recorded: on a machine shared
with other work the times are longer than on an idle one, so the CPU time of each update (all threads) is recorded
too. Writes bench/results/viewer.json.

    python -m bench.viewer --checkpoint runs/anny_fast/ckpt.pt --store data/processed/anny_demo/test.zarr
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench._results import write_result
from hipnet.model.checkpoint import load_checkpoint, model_from_checkpoint
from hipnet.viz.posing import COARSE, FINE, START, model_surface
from hipnet.viz.scene import SceneOptions, error_colors, frame_scene, read_frame, surface_distance
from hipnet.viz.sources import RunSource, open_view_store


def _stats(xs: list[float]) -> dict:
    return {"median_s": round(float(np.median(xs)), 3), "min_s": round(min(xs), 3), "max_s": round(max(xs), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/anny_fast/ckpt.pt"))
    ap.add_argument("--store", type=Path, default=Path("data/processed/anny_demo/test.zarr"))  # the demo's
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--coarse", type=int, default=COARSE)
    ap.add_argument("--fine", type=int, default=FINE)
    args = ap.parse_args()
    load_before = os.getloadavg()
    ck = load_checkpoint(args.checkpoint)
    run = RunSource(args.checkpoint.parent, checkpoint=args.checkpoint, ckpt=ck,
                    model=model_from_checkpoint(ck, args.checkpoint).eval())
    source = open_view_store(args.store)
    frames = np.linspace(0, source.store.n_frames - 1, args.frames).round().astype(int).tolist()
    rows, reads, scenes = [], [], []
    for i in frames:
        t0 = time.perf_counter()
        frame = read_frame(source.store, i)
        t1 = time.perf_counter()
        frame_scene(frame, source.store.skeleton, SceneOptions())
        reads.append(t1 - t0)
        scenes.append(time.perf_counter() - t1)
        code, _ = run.code(frame.subject)
        row = {"frame": i, "key": f"{frame.subject}/{frame.sequence}/{frame.index}"}
        for kind, resolution in (("interactive", args.coarse), ("refined", args.fine)):
            cpu = time.process_time()
            surface = model_surface(run.model, frame.joint_transforms, code, resolution)
            t0 = time.perf_counter()
            d = surface_distance(surface.mesh.vertices, frame.vertices, frame.faces)
            error_colors(d, 0.02)
            row[kind] = {"resolution": resolution, "surface_s": round(surface.seconds, 3),
                         "colouring_s": round(time.perf_counter() - t0, 3),
                         "cpu_s": round(time.process_time() - cpu, 3), "queries": surface.queries,
                         "vertices": len(surface.mesh.vertices), "mean_distance_mm": round(1000 * float(d.mean()), 2)}
        rows.append(row)
        print(row, flush=True)
    summary = {kind: {"resolution": rows[0][kind]["resolution"],
                      **_stats([r[kind]["surface_s"] + r[kind]["colouring_s"] for r in rows]),
                      "cpu_median_s": round(float(np.median([r[kind]["cpu_s"] for r in rows])), 3)}
               for kind in ("interactive", "refined")}
    write_result("viewer", {
        "command": "python -m bench.viewer " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "checkpoint": str(args.checkpoint), "step": ck["step"], "model": ck["config"]["model"],
        "store": str(args.store), "frames": frames, "start_resolution": START,
        "mesh_update": summary, "frame_read": _stats(reads), "frame_scene": _stats(scenes),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "niceness": os.nice(0),
        "torch_threads": torch.get_num_threads(),
        "per_frame": rows,
    })


if __name__ == "__main__":
    main()
