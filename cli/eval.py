"""``hipnet-eval``: score a trained checkpoint on evaluation stores and write a report."""

from __future__ import annotations

import importlib.metadata
import sys
import time
from pathlib import Path

import click


def _frames(n: int, stride: int, limit: int | None) -> list[int]:
    frames = list(range(0, n, stride))
    if limit is not None and len(frames) > limit:  # spread the kept frames over the whole store
        frames = [frames[round(k * (len(frames) - 1) / max(1, limit - 1))] for k in range(limit)]
    return frames


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="RUN/ckpt.pt written by hipnet-train.")
@click.option("--shards", multiple=True, required=True, help="Evaluation store(s) (test.zarr); globs allowed.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report folder (default: RUN/eval).")
@click.option("--stride", default=1, show_default=True, help="Score every k-th frame.")
@click.option("--max-frames", type=int, default=None, help="At most this many frames per store, spread evenly.")
@click.option("--mesh-frames", default=4, show_default=True,
              help="Frames per store to extract meshes for (Chamfer-L1, normal consistency, pictures, PLY files).")
@click.option("--resolution", default=256, show_default=True, help="Final marching-cubes resolution.")
@click.option("--chamfer-points", default=100_000, show_default=True, help="Points sampled on each mesh.")
@click.option("--unknown-subjects", type=click.Choice(["error", "mean"]), default="error", show_default=True,
              help="Subjects the checkpoint was not trained on: refuse, or use the mean code (the paper's 0-point "
                   "protocol; fit them with hipnet-fit for real numbers).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available).")
@click.option("--batch", default=None, type=int, help="Query points per network call (default: by device).")
def main(checkpoint, shards, out, stride, max_frames, mesh_frames, resolution, chamfer_points, unknown_subjects,
         device, batch) -> None:
    """Evaluate HIPNet as in the paper (section 4.2): uniform and near-surface mIoU, per-joint near-surface IoU
    (table 7), Chamfer-L1 (x1e-4 and mm) and normal consistency from coarse-to-fine marching-cubes meshes, the
    SNARF variant when the store has it; per-subject and per-sequence breakdowns. Writes metrics.json,
    report.md, iou_hist.png, meshes.png and the extracted meshes (PLY, canonical and source frame)."""
    import torch
    from tqdm import tqdm

    from hipnet.model.data import expand_shards
    from hipnet.model.evaluate import evaluate_store, model_sdf
    from hipnet.model.meshing import Mesh, save_mesh
    from hipnet.model.report import write_report
    from hipnet.model.train import load_checkpoint, model_from_checkpoint
    from hipnet.pipeline.stages.canonical import to_world
    from hipnet.pipeline.store import Store

    try:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        batch = batch or (1_048_576 if device.startswith("cuda") else 65_536)
        ck = load_checkpoint(checkpoint)
        model = model_from_checkpoint(ck).to(device).eval()
        out = out or checkpoint.parent / "eval"
        codes = model.codes.weight.detach() if model.codes is not None else None
        names = list(ck["subjects"])
        t0 = time.time()
        evaluations, keys = [], {}
        paths = expand_shards(shards)
        for path in paths:
            store = Store.open(path)
            if store.skeleton.to_attrs() != ck["skeleton"]:
                raise ValueError(f"{path}: skeleton differs from the checkpoint's")
            missing = sorted(set(store.subjects) - set(names))
            if missing and codes is not None and unknown_subjects == "error":
                raise ValueError(f"{path}: subjects {missing} are not in the checkpoint (held-out subjects?); "
                                 "pass --unknown-subjects mean, or fit them with hipnet-fit")
            mean_code = codes.mean(0) if codes is not None else None
            jts = store.read("pose/joint_transforms")
            subj_ids = store.read("frame/subject")

            def sdf_of(i, store=store, jts=jts, subj_ids=subj_ids, mean_code=mean_code):
                code = None
                if codes is not None:
                    name = store.subjects[int(subj_ids[i])]
                    code = codes[names.index(name)] if name in names else mean_code
                return model_sdf(model, jts[i], code, device)

            frames = _frames(store.n_frames, stride, max_frames)
            meshes = _frames(len(frames), 1, mesh_frames) if mesh_frames else []
            with tqdm(total=len(frames), desc=f"eval {path.name}", unit="frame") as bar:
                ev = evaluate_store(store, sdf_of, frames, [frames[k] for k in meshes], resolution, chamfer_points,
                                    batch, progress=bar.update)
            mesh_dir = out / "meshes"
            mesh_dir.mkdir(parents=True, exist_ok=True)
            for i, (pred, _) in ev.meshes.items():
                key = store.frame_key(i)
                keys[i] = key
                stem = f"{path.stem}_{key.replace('/', '_')}"
                save_mesh(mesh_dir / f"{stem}_canonical.ply", pred)
                world = store.read("pose/world_from_canonical", i)
                save_mesh(mesh_dir / f"{stem}_source.ply", Mesh(to_world(pred.vertices, world).astype("float32"),
                                                                pred.faces))
            evaluations.append(ev)
        merged = evaluations[0]
        for ev in evaluations[1:]:
            merged.frames += ev.frames
            merged.meshes.update(ev.meshes)
            merged.queries += ev.queries
        versions = {p: importlib.metadata.version(p) for p in ("torch", "numpy", "zarr", "scikit-image", "trimesh")}
        provenance = {"checkpoint": str(checkpoint), "step": ck["step"], "config": ck["config"],
                      "stores": [str(p) for p in paths], "schema_version": ck["schema_version"], "versions": versions,
                      "device": device, "resolution": resolution, "wall_s": round(time.time() - t0, 1),
                      "queries": merged.queries}
        summary = write_report(out, merged, Store.open(paths[0]).skeleton.names, provenance, keys)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    line = f"uniform mIoU {100 * summary['uniform_miou']:.2f}%, near-surface mIoU {100 * summary['near_miou']:.2f}%"
    if "chamfer_l1_x1e4" in summary:
        line += f", Chamfer-L1 {summary['chamfer_l1_x1e4']:.1f} x1e-4 ({summary['chamfer_mm']:.2f} mm)"
    click.echo(f"{summary['frames']} frames: {line}; report {out / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
