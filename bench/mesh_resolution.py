"""Chamfer-L1 of one checkpoint's meshes against the marching-cubes resolution, with the metric's sampling floor.

The demo and the accuracy harness mesh at 128^3 (to save time); the peers' protocol (FORMATS.md, "Metric
protocols") meshes at 256^3. This scores the same frames at each resolution, and the floor of the metric itself:
the Chamfer-L1 between two independent samplings (100k points each) of the ground-truth mesh, which no model can
go below. Each run is an entry of bench/results/mesh_resolution.json (keyed by --label; other entries are kept).

    python -m bench.mesh_resolution --label demo --checkpoint runs/anny_fast/ckpt.pt \\
        --store data/processed/anny_demo/test.zarr --mesh-frames 2              # the demo's meshed frames
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench._results import commit, machine


def chamfer_by_resolution(store, sdf_of, frames, resolutions, chamfer_points=100_000) -> dict:
    """For each resolution, the mean Chamfer-L1 (mm, x1e-4) and normal consistency of ``frames``' meshes, the SDF
    queries spent and the seconds taken; and the floor: the truth against an independent sampling of itself."""
    from hipnet.model.evaluate import evaluate_store, surface_metrics

    rows, floors = [], []
    for res in resolutions:
        t0 = time.time()
        ev = evaluate_store(store, sdf_of, frames, frames, res, chamfer_points)
        surf = [f.surface for f in ev.frames]
        rows.append({"resolution": res, "chamfer_mm": float(np.mean([s.chamfer_mm for s in surf])),
                     "chamfer_x1e4": float(np.mean([s.chamfer_l1_x1e4 for s in surf])),
                     "normal_consistency": float(np.mean([s.normal_consistency for s in surf])),
                     "queries": ev.queries, "seconds": round(time.time() - t0, 1),
                     "per_frame_mm": [float(s.chamfer_mm) for s in surf]})
        if not floors:
            truths = [ev.meshes[f.key][1] for f in ev.frames]
            floors = [surface_metrics(t, t, chamfer_points, seed=int(f.frame) + 1) for t, f in zip(truths, ev.frames,
                                                                                                   strict=True)]
    floor = {"chamfer_mm": float(np.mean([f.chamfer_mm for f in floors])),
             "chamfer_x1e4": float(np.mean([f.chamfer_l1_x1e4 for f in floors]))}
    return {"frames": [int(i) for i in frames], "chamfer_points": chamfer_points, "floor": floor, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="RUN/ckpt.pt")
    p.add_argument("--store", type=Path, required=True, help="the evaluation store (test.zarr)")
    p.add_argument("--label", required=True, help="the entry's name in the results file (demo, buffer256@6000, ...)")
    p.add_argument("--stride", type=int, default=1, help="as hipnet-eval: every k-th frame ...")
    p.add_argument("--mesh-frames", type=int, default=2, help="... of which this many, spread evenly, are meshed")
    p.add_argument("--frames", default=None, help="or these frames (comma-separated indices of the store)")
    p.add_argument("--resolutions", default="128,256",
                   help="marching-cubes resolutions, comma-separated (each 32 times a power of two)")
    p.add_argument("--chamfer-points", type=int, default=100_000)
    p.add_argument("--about", default="", help="where the checkpoint comes from (kept in the entry)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mesh_resolution.json")
    args = p.parse_args(argv)

    import torch

    from hipnet.model.compat import open_compatible
    from hipnet.model.evaluate import EVAL_ARRAYS, model_sdf, spread_frames, store_codes
    from hipnet.model.train import load_checkpoint, model_from_checkpoint

    torch.set_num_threads(args.threads)
    try:
        ck = load_checkpoint(args.checkpoint)
        store = open_compatible(ck, args.checkpoint, args.store, EVAL_ARRAYS)
        model = model_from_checkpoint(ck, args.checkpoint).eval()
        codes = store_codes(model, ck["subjects"], store)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.frames:
        frames = [int(i) for i in args.frames.split(",")]
    else:
        scored = spread_frames(store.n_frames, args.stride)
        frames = [scored[k] for k in spread_frames(len(scored), 1, args.mesh_frames)]
    jts, subject_ids = store.read("pose/joint_transforms"), store.read("frame/subject")

    def sdf_of(i):
        return model_sdf(model, jts[i], codes[int(subject_ids[i])], "cpu")

    entry = chamfer_by_resolution(store, sdf_of, frames, [int(r) for r in args.resolutions.split(",")],
                                  args.chamfer_points)
    entry.update(checkpoint_step=int(ck["step"]), about=args.about, store=args.store.name, commit=commit(),
                 machine=machine())
    data = json.loads(args.out.read_text()) if args.out.exists() else {"entries": {}}
    data["entries"][args.label] = entry
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"{args.label}: floor {entry['floor']['chamfer_mm']:.2f} mm; " + ", ".join(
        f"{r['resolution']}^3 {r['chamfer_mm']:.2f} mm ({r['seconds']} s)" for r in entry["rows"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
