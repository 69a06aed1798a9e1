"""The evaluation report: ``metrics.json`` (everything, with provenance) and ``report.md`` with pictures; the
extracted meshes as PLY; the mesh pictures the applications draw."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hipnet.model.evaluate import Evaluation
from hipnet.model.meshing import Mesh, save_mesh
from hipnet.pipeline.stages.canonical import to_world
from hipnet.pipeline.store.reading import Store


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.2f}"


def histogram_png(path: Path, ev: Evaluation) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(min(0.5, min(s.near_iou for s in ev.frames)), 1.0, 41)
    ax.hist([100 * s.uniform_iou for s in ev.frames], bins=100 * bins, alpha=0.7, label="uniform")
    ax.hist([100 * s.near_iou for s in ev.frames], bins=100 * bins, alpha=0.7, label="near-surface")
    ax.set_xlabel("IoU per frame (%)")
    ax.set_ylabel("frames")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mesh_rows_png(path: Path, rows: Sequence[Sequence[Mesh]], row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, title: str | None = None) -> None:
    """A picture of meshes in rows and columns (``hipnet.viz.render.mesh_grid_png``)."""
    from hipnet.viz.render import mesh_grid_png

    mesh_grid_png(path, [[(m.vertices, m.faces) for m in row] for row in rows], row_labels, col_labels, title)


def meshes_png(path: Path, ev: Evaluation) -> None:
    """Ground truth beside the extracted mesh, a row per meshed frame (labelled store/subject, sequence/index)."""
    items = sorted(ev.meshes.items())
    mesh_rows_png(path, [[truth, pred] for _, (pred, truth) in items],
                  ["{}/{}\n{}/{}".format(*key.split("/")) for key, _ in items],
                  ["ground truth", "HIPNet"], "test frames: ground truth vs extracted mesh")


def save_meshes(folder: Path, store: Store, ev: Evaluation) -> list[Path]:
    """Each extracted mesh of ``store``'s evaluation as PLY, ``<key>_canonical.ply`` and ``<key>_source.ply``
    (``/`` in the frame key becomes ``_``, so the store's label keeps the files of several stores apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = {s.key: s.frame for s in ev.frames}
    written = []
    for key, (pred, _) in sorted(ev.meshes.items()):
        stem = key.replace("/", "_")
        world = store.read("pose/world_from_canonical", frame[key])
        source = Mesh(to_world(pred.vertices, world).astype("float32"), pred.faces)
        for name, mesh in ((f"{stem}_canonical.ply", pred), (f"{stem}_source.ply", source)):
            save_mesh(folder / name, mesh)
            written.append(folder / name)
    return written


def write_report(out: Path, ev: Evaluation, joint_names: list[str], provenance: dict) -> dict:
    """Write metrics.json, report.md, iou_hist.png and meshes.png into ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = ev.summary(joint_names)
    data = {"provenance": provenance, **ev.to_json(joint_names)}
    (out / "metrics.json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    histogram_png(out / "iou_hist.png", ev)
    if ev.meshes:
        meshes_png(out / "meshes.png", ev)
    lines = [
        "# HIPNet evaluation",
        "",
        f"Checkpoint `{provenance.get('checkpoint')}` (step {provenance.get('step')}), stores "
        + ", ".join(f"`{s}`" for s in provenance.get("stores", [])) + f"; {summary['frames']} frames.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| uniform mIoU (%) | {_pct(summary['uniform_miou'])} |",
        f"| near-surface mIoU (%) | {_pct(summary['near_miou'])} |",
    ]
    if "snarf_uniform_miou" in summary:
        lines += [f"| SNARF uniform / near mIoU (%) | {_pct(summary['snarf_uniform_miou'])} / "
                  f"{_pct(summary['snarf_near_miou'])} |"]
    if "chamfer_l1_x1e4" in summary:
        lines += [
            f"| Chamfer-L1 (x1e-4, {summary['mesh_frames']} frames) | {summary['chamfer_l1_x1e4']:.1f} |",
            f"| Chamfer-L1 (mm) | {summary['chamfer_mm']:.2f} |",
            f"| normal consistency | {summary['normal_consistency']:.4f} |",
        ]
    lines += ["", "Per-joint near-surface IoU (points grouped by the joint label of their nearest ground-truth surface "
              "point; the layout of the paper's table 7):", "", "| joint | near-surface IoU (%) |", "|---|---|"]
    lines += [f"| {k + 1}) {name} | {_pct(v)} |" for k, (name, v) in enumerate(summary["per_joint_near_iou"].items())]
    for key in ("subject", "sequence"):
        lines += ["", f"Per {key}:", "", f"| {key} | frames | uniform mIoU (%) | near mIoU (%) |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['frames']} | {_pct(v['uniform_miou'])} | {_pct(v['near_miou'])} |"
                  for k, v in summary[f"per_{key}"].items()]
    lines += ["", "![IoU per frame](iou_hist.png)", ""]
    if ev.meshes:
        lines += ["![meshes](meshes.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return summary
