"""``hipnet-eval``: score a trained checkpoint on evaluation stores and write a report."""

from __future__ import annotations

import importlib.metadata
import sys
import time
from pathlib import Path

import click

from hipnet.cli.params import config_options, pick
from hipnet.model.config import EvalConfig


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="RUN/ckpt.pt written by hipnet-train.")
@click.option("--shards", multiple=True, required=True, help="Evaluation store(s) (test.zarr); globs allowed.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report folder (default: RUN/eval).")
@config_options(EvalConfig)
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available).")
@click.option("--batch", default=None, type=int, help="Query points per network call (default: by device).")
def main(checkpoint, shards, out, device, batch, **options) -> None:
    """Evaluate HIPNet as in the paper (section 4.2): uniform and near-surface mIoU, per-joint near-surface IoU
    (table 7), Chamfer-L1 (x1e-4 and mm) and normal consistency from coarse-to-fine marching-cubes meshes, the
    SNARF variant when the store has it; per-subject and per-sequence breakdowns. Writes metrics.json,
    report.md, iou_hist.png, meshes.png and the extracted meshes (PLY, canonical and source frame)."""
    import torch
    from tqdm import tqdm

    from hipnet.model.compat import open_compatible
    from hipnet.model.data import expand_shards
    from hipnet.model.evaluate import (
        EVAL_ARRAYS,
        Evaluation,
        evaluate_model,
        spread_frames,
        store_codes,
        store_labels,
    )
    from hipnet.model.report import save_meshes, write_report
    from hipnet.model.train import load_checkpoint, model_from_checkpoint

    cfg = EvalConfig(**pick(EvalConfig, options))
    try:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        batch = batch or (1_048_576 if device.startswith("cuda") else 65_536)
        ck = load_checkpoint(checkpoint)
        paths = expand_shards(shards)
        stores = [open_compatible(ck, checkpoint, path, EVAL_ARRAYS) for path in paths]  # checked before any work
        model = model_from_checkpoint(ck, checkpoint).to(device).eval()
        for store in stores:  # unknown subjects refused before any work too
            store_codes(model, ck["subjects"], store, cfg.unknown_subjects)
        out = out or checkpoint.parent / "eval"
        t0 = time.time()
        evaluations = []
        for label, store in zip(store_labels(paths), stores, strict=True):
            frames = spread_frames(store.n_frames, cfg.stride, cfg.max_frames)
            meshed = [frames[k] for k in spread_frames(len(frames), 1, cfg.mesh_frames)] if cfg.mesh_frames else []
            with tqdm(total=len(frames), desc=f"eval {label}", unit="frame") as bar:
                ev = evaluate_model(model, ck["subjects"], store, frames, meshed, cfg.resolution, cfg.chamfer_points,
                                    label, cfg.unknown_subjects, batch, device, progress=bar.update)
            save_meshes(out / "meshes", store, ev)
            evaluations.append(ev)
        merged = Evaluation.merge(evaluations)
        versions = {p: importlib.metadata.version(p) for p in ("torch", "numpy", "zarr", "scikit-image", "trimesh")}
        provenance = {"checkpoint": str(checkpoint), "step": ck["step"], "config": ck["config"],
                      "schedule": ck.get("schedule"),
                      "stores": [str(p) for p in paths], "schema_version": ck["schema_version"], "versions": versions,
                      "device": device, "resolution": cfg.resolution, "wall_s": round(time.time() - t0, 1),
                      "queries": merged.queries}
        summary = write_report(out, merged, stores[0].skeleton.names, provenance)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    line = f"uniform mIoU {100 * summary['uniform_miou']:.2f}%, near-surface mIoU {100 * summary['near_miou']:.2f}%"
    if "chamfer_l1_x1e4" in summary:
        line += f", Chamfer-L1 {summary['chamfer_l1_x1e4']:.1f} x1e-4 ({summary['chamfer_mm']:.2f} mm)"
    click.echo(f"{summary['frames']} frames: {line}; report {out / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
