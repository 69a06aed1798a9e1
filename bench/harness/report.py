"""The accuracy harness's outputs: the resumable results file, the spread over seeds, the table of its docs page
(docs/experiments/accuracy.md) and the curve picture (bench/accuracy.py writes them; `python -m bench.accuracy
--page` regenerates the table and pictures)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.harness.runs import run_model
from bench.harness.variants import RENAMED, RENAMED_GROUPS, VARIANTS, depth_sensor


def renamed(data: dict) -> dict:
    """``data`` with rows written under a name the harness no longer uses (``variants.RENAMED``) renamed, each
    keeping the old name in ``was``, and their ``same_run_as`` and ``spread`` keys likewise."""
    for e in data.get("variants", []):
        if e["name"] in RENAMED:
            e["was"], e["name"] = e["name"], RENAMED[e["name"]]
        if "group" in e:
            e["group"] = RENAMED_GROUPS.get(e["group"], e["group"])
        if e.get("same_run_as") in RENAMED:
            e["same_run_as"] = RENAMED[e["same_run_as"]]
    if "spread" in data:
        data["spread"] = {RENAMED.get(k, k): v for k, v in data["spread"].items()}
    return data


def load_results(path: Path, budget) -> dict:
    if path.exists():
        data = renamed(json.loads(path.read_text()))
        if data.get("budget") == asdict(budget):
            return data
        print(f"{path}: written with another budget; starting a new results file", flush=True)
    return {"budget": asdict(budget), "variants": []}


def save_results(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def spread(data: dict) -> dict:
    """Mean and spread (max - min) over seeds of each variant with more than one seed."""
    out = {}
    for name in dict.fromkeys(e["name"] for e in data["variants"]):
        runs = [e for e in data["variants"] if e["name"] == name]
        if len(runs) > 1:
            out[name] = {k: {"mean": float(np.mean([r[k] for r in runs])), "spread": float(np.ptp([r[k] for r in runs]))}
                         for k in ("uniform_miou", "near_miou")}
    return out


def table(data: dict) -> str:
    """The harness table of docs/experiments/accuracy.md, from the results file."""
    parents = {v.name: v.parent for v in VARIANTS}
    lines = ["| variant | changes | group | seeds | uniform mIoU (%) | near mIoU (%) | Chamfer (mm) | normal cons. | "
             "fit 1k uniform (%) | fit depth1 uniform (%) | own / mean code IoU (%) | train s (threads) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(e["name"] for e in data["variants"]):
        runs = [e for e in data["variants"] if e["name"] == name]
        ident = [r["identity"] for r in runs if r.get("identity")]
        codes = "-" if not ident else (f"{np.mean([i['iou_own_code'] for i in ident]):.1f} / "
                                       f"{np.mean([i['iou_mean_code'] for i in ident]):.1f}")
        threads = "/".join(str(t) for t in sorted({r.get("threads", data.get("threads")) for r in runs}, key=str))

        def cell(k, fmt="{:.1f}", runs=runs):
            vals = [r[k] for r in runs if r.get(k) is not None]
            if not vals:
                return "-"
            text = fmt.format(np.mean(vals))
            return text + (f" ± {np.ptp(vals) / 2:.1f}" if len(vals) > 1 else "")

        steps = runs[0].get("steps", data["budget"]["steps"])
        label = f"`{name}`" + (f" ({steps:,} steps)" if steps != data["budget"]["steps"] else "")
        parent = f"`{parents[name]}`" if parents.get(name) else "-"
        lines.append(f"| {label} | {parent} | {runs[0]['group']} | {len(runs)} | {cell('uniform_miou')} | "
                     f"{cell('near_miou')} | "
                     f"{cell('chamfer_mm')} | {cell('normal_consistency', '{:.3f}')} | {cell('fit_1k_uniform_miou')} | "
                     f"{cell('fit_depth1_uniform_miou')} | {codes} | {cell('train_s', '{:.0f}')} ({threads}) |")
    return "\n".join(lines)


# the observation targets: uniform mIoU within this many points of `surface` (one view: from the body's front, and
# from a static sensor, the two readings of "1 front view")
TARGETS = {"depth4": 2.0, "depth1": 6.0, "depth1-world": 6.0}


def observations_table(data: dict) -> str | None:
    """The observation experiment, seed 0 of each run: what each trained on, the distance term's band,
    uniform mIoU and its gap to `surface` against its target (``TARGETS``), the held-out fits, and the oriented-distance
    targets' sign checked against the meshes (gross: wrong by more than 2 cm; coverage: eikonal points with a
    target). None when no observation run is in the file."""
    runs = [e for e in data["variants"] if e["group"] == "observations" and e["seed"] == 0]
    if not runs:
        return None
    base = next((e["uniform_miou"] for e in runs if e["name"] == "surface"), None)

    def f(x, fmt="{:.1f}"):
        return "-" if x is None else fmt.format(x)

    lines = ["| variant | trained on | SDF band (m) | uniform mIoU (%) | points below `surface` (target) | near mIoU (%) | "
             "fit 1k uniform (%) | fit depth1 uniform (%) | targets: gross wrong sign, no band / band (%) | "
             "band coverage (%) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in runs:
        band = e.get("config", {}).get("sdf_target_band")
        gap = None if base is None else base - e["uniform_miou"]
        target = TARGETS.get(e["name"])
        gap_text = "-" if gap is None else f"{gap:+.1f}" + (f" ({'met' if gap <= target else 'missed'}: {target:g})"
                                                              if target is not None else "")
        checks = (e.get("sdf_targets") or {}).get("bands", {})
        no_band, banded = checks.get("None"), next((v for k, v in checks.items() if k != "None"), None)
        lines.append(f"| `{e['name']}` | {e.get('training_data', '-')} | {f(band, '{:g}')} | {f(e['uniform_miou'])} | "
                     f"{gap_text} | {f(e['near_miou'])} | {f(e.get('fit_1k_uniform_miou'))} | "
                     f"{f(e.get('fit_depth1_uniform_miou'))} | "
                     f"{f(no_band and no_band['gross_wrong_sign'])} / {f(banded and banded['gross_wrong_sign'])} | "
                     f"{f(banded and banded['coverage'])} |")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(e["group"] for e in data["variants"]))
    if not groups:  # nothing ran (every selected run was done already, or a seed filter left none)
        return
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax, group in zip(axes.flat, groups, strict=False):
        for name, runs in curves_of(data, group).items():
            steps = [p["step"] for p in runs[0]["curve"]]
            same = [r["curve"] for r in runs if [p["step"] for p in r["curve"]] == steps]
            # one line per variant: the mean over its seeds at each curve step, against the mean wall time
            minutes = np.mean([[p["train_s"] / 60 for p in c] for c in same], axis=0)
            miou = np.mean([[p["uniform_miou"] for p in c] for c in same], axis=0)
            ax.plot(minutes, miou, marker="o", ms=3, label=f"{name} ({len(same)} seed{'s' * (len(same) > 1)})")
        ax.set_title(group)
        ax.set_xlabel("training wall time (min)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(curves_of(data, group)) > 8 else 1)
    for row in axes:
        row[0].set_ylabel("uniform mIoU on the curve frames (%)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_of(data: dict, group: str) -> dict[str, list[dict]]:
    """The runs drawn in a panel, by variant name: the group's own, plus the references it is read against (the
    peer panel: fast and paper-full; the long preset's: no-offset+balance0.5, its 250-step twin)."""
    extra = {"peer": ("fast", "paper-full"), "long preset": ("no-offset+balance0.5",)}.get(group, ())
    out: dict[str, list[dict]] = {}
    for e in data["variants"]:
        if e["group"] == group or e["name"] in extra:
            out.setdefault(e["name"], []).append(e)
    return out


def page_block(data: dict, picture: Path | None, page: Path) -> str:
    """The generated part of docs/experiments/accuracy.md: the harness table, then the observation experiment's
    table and picture (``picture``, linked relative to ``page``)."""
    note = (f"_Generated by `python -m bench.accuracy --page` (or `python -m bench.pages`) from "
            f"bench/results/accuracy.json (commit {data.get('commit')}, {data['budget']['steps']} steps per variant "
            "unless its row says)._\n\n")
    obs = observations_table(data)
    if obs:
        obs = ("\n\nThe observation experiment (the same model and budget trained on full mesh surfaces, 4 depth "
               "views, 1 front view; scored on the same test frames with full ground truth; \"fit depth1\": held-out "
               "subjects fitted from 1,000 points of one front depth view):\n\n" + obs + "\n")
        if picture is not None:
            rel = Path(os.path.relpath(picture, page.parent)).as_posix()
            obs += f"\n![observed points, model, ground truth]({rel})\n"
    return note + table(data) + "\n" + (obs or "")


def write_page(data: dict, page: Path, picture: Path | None = None) -> None:
    """Rewrite the generated part of ``page`` (between its ``accuracy-table`` markers)."""
    begin, end = "<!-- accuracy-table:begin -->", "<!-- accuracy-table:end -->"
    text = page.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{page}: no {begin} ... {end} markers to write the table between")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    block = page_block(data, picture if picture is not None and picture.exists() else None, page)
    page.write_text(head + begin + "\n" + block.strip("\n") + "\n" + end + tail)


def merge(data: dict, other: dict, source: str) -> int:
    """Add ``other``'s variant runs (a harness run of the same budget, e.g. in another process) that ``data`` lacks;
    returns how many were added. Refuses another budget: the runs would not be comparable."""
    other = renamed(other)
    if other.get("budget") != data.get("budget"):
        raise SystemExit(f"{source}: written with another budget, not comparable; rerun those variants instead")
    have = {(e["name"], e["seed"]) for e in data["variants"]}
    new = [{**e, "merged_from": source, "commit": other.get("commit"), "threads": e.get("threads", other.get("threads"))}
           for e in other["variants"]
           if (e["name"], e["seed"]) not in have]
    data["variants"] += new
    data["spread"] = spread(data)
    return len(new)


# --------------------------------------------------------------------------------------------------------- picture

PICTURE_VIEWS = (("front", 30.0), ("back", 210.0))  # yaw about +Y (degrees) of the body towards the viewer


def _yaw(points: np.ndarray, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.asarray(points, dtype=np.float64) @ np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]).T


def _picture_runs(data: dict, data_dir: Path, path: Path) -> list[tuple[dict, tuple]] | None:
    """The observation runs (seed 0) whose checkpoint is still theirs, with (model, code names); None when no depth
    run exists or none has its checkpoint (then a note)."""
    by_name = {v.name: v for v in VARIANTS}
    runs = [e for e in data["variants"] if e["group"] == "observations" and e["seed"] == 0 and e["name"] in by_name]
    if not any(by_name[e["name"]].depth_views for e in runs):
        return None
    test_path = data_dir / "stores" / "test.zarr"
    models = {e["name"]: run_model(e, data_dir / "runs") for e in runs} if test_path.exists() else {}
    rows = [(e, models[e["name"]]) for e in runs if models.get(e["name"]) is not None]
    if not any(by_name[e["name"]].depth_views for e, _ in rows):
        print(f"{path}: not drawn, no depth run's checkpoint (or no test store) under {data_dir}", flush=True)
        return None
    return rows


def _observed(entry: dict, test, i: int, tiny: bool) -> np.ndarray:
    """What the run of ``entry`` was trained on, for test frame ``i``: that frame's mesh seen by its depth rig, or
    surface samples."""
    from hipnet.model.fitting import observed_points
    from hipnet.pipeline.runner.depthstores import observe, sensor_rng

    v = next(v for v in VARIANTS if v.name == entry["name"])
    if not v.depth_views:
        return observed_points(test, i, 4000, False, seed=0)
    sensor = depth_sensor(v.depth_views, tiny, v.depth_rig)
    heading = test.read("pose/world_from_canonical", i)[:3, :3].astype(np.float64)
    vertices, faces = test.read("mesh/vertices", i), test.read("mesh/faces")
    return observe(vertices, faces, sensor, sensor_rng(sensor, "picture", test.frame_key(i)), heading).points


def _draw_row(axes, r: int, seen: np.ndarray, pred, truth: tuple[np.ndarray, np.ndarray], half: float) -> None:
    """Row ``r``: observed points, model surface, ground truth, from the front and from the back."""
    from hipnet.viz.render import draw_mesh

    v_gt, faces = truth
    centre = v_gt.mean(0)
    for c, (_, yaw) in enumerate(PICTURE_VIEWS):
        ax = axes[r, 3 * c]
        pts = _yaw(seen - centre, yaw)
        order = np.argsort(pts[:, 2])
        ax.scatter(pts[order, 0], pts[order, 1], s=float(np.clip(3000 / len(pts), 0.2, 3)), c=pts[order, 2],
                   cmap="viridis", linewidths=0)
        for ax, (v, f) in ((axes[r, 3 * c + 1], (pred.vertices, pred.faces)), (axes[r, 3 * c + 2], (v_gt, faces))):
            if len(f):
                draw_mesh(ax, _yaw(v - centre, yaw), np.asarray(f))
        for ax in axes[r, 3 * c: 3 * c + 3]:
            ax.set_xlim(-half, half)
            ax.set_ylim(-half, half)
            ax.set_aspect("equal")
            ax.axis("off")


def depth_picture(data: dict, data_dir: Path, path: Path) -> Path | None:
    """docs/accuracy_depth.png: one row per observation run (seed 0) with a checkpoint: what it was trained on
    (its observation of one test frame: full surface samples, or that frame's mesh seen by its depth rig), the
    model's surface for that frame (marching cubes from the run's checkpoint, the subject's code) and the ground
    truth, each from the front and the back. Drawn when a depth run exists; None (and a note) otherwise."""
    from hipnet.model.apps import posed_mesh
    from hipnet.pipeline.store.reading import Store

    rows = _picture_runs(data, data_dir, path)
    if rows is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = Store.open(data_dir / "stores" / "test.zarr")
    tiny, resolution = data["budget"]["tiny"], data["budget"]["resolution"]
    i = data.get("eval_set", {}).get("mesh_frames", [0])[0]
    v_gt, faces = test.read("mesh/vertices", i), test.read("mesh/faces")
    jt, name = test.read("pose/joint_transforms", i), test.subjects[int(test.read("frame/subject", i))]
    cols = ["observed (front)", "model (front)", "ground truth (front)", "observed (back)", "model (back)",
            "ground truth (back)"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.9 * len(cols), 3.2 * len(rows)), squeeze=False)
    half = np.abs(v_gt - v_gt.mean(0)).max() * 1.1
    for r, (e, (model, names)) in enumerate(rows):
        code = model.codes.weight.detach()[names.index(name)] if name in names else model.codes.weight.detach().mean(0)
        _draw_row(axes, r, _observed(e, test, i, tiny), posed_mesh(model, jt, code, resolution), (v_gt, faces), half)
        axes[r, 0].text(-0.08, 0.5, f"{e['name']}\n{e['uniform_miou']:.1f}% uniform", transform=axes[r, 0].transAxes,
                        rotation=90, va="center", ha="right", fontsize=8)
    for c, label in enumerate(cols):
        axes[0, c].set_title(label, fontsize=8)
    fig.suptitle(f"test frame {test.frame_key(i)}: what each run was trained on, its surface, the ground truth",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
