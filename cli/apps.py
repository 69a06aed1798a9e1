"""``hipnet-fit``, ``hipnet-sample``, ``hipnet-animate``: the applications of a trained model (seed 000, section 5.1).

Poses and motions are named in stores: ``STORE:I`` (frame index) or ``STORE:SUBJECT/SEQUENCE/INDEX`` for one pose,
``STORE:SUBJECT/SEQUENCE`` for a motion. Everything is in the stores' canonical frame (the body faces +Z).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
CHECKPOINT = click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
                          help="RUN/ckpt.pt written by hipnet-train.")
RESOLUTION = click.option("--resolution", default=128, show_default=True, help="Final marching-cubes resolution.")
DEVICE = click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")


def _load(checkpoint: Path, device: str):
    from hipnet.model.train import load_checkpoint, model_from_checkpoint

    ck = load_checkpoint(checkpoint)
    return ck, model_from_checkpoint(ck).to(device).eval()


def _split_spec(spec: str) -> tuple[Path, str]:
    if ":" not in spec:
        raise ValueError(f"{spec!r}: expected STORE:FRAME or STORE:SUBJECT/SEQUENCE[/INDEX]")
    path, _, what = spec.rpartition(":")
    return Path(path), what


def _open(path: Path):
    from hipnet.pipeline.store import Store

    return Store.open(path)


def frame_of(spec: str) -> tuple[object, int]:
    """(store, frame index) for ``STORE:I`` or ``STORE:SUBJECT/SEQUENCE/INDEX``."""
    path, what = _split_spec(spec)
    store = _open(path)
    if what.isdigit():
        i = int(what)
        if i >= store.n_frames:
            raise ValueError(f"{path}: frame {i} out of range (the store has {store.n_frames} frames)")
        return store, i
    keys = store.frame_keys()
    if what not in keys:
        raise ValueError(f"{path}: no frame {what!r} (keys look like {keys[0]!r})")
    return store, keys.index(what)


def motion_of(spec: str) -> tuple[object, list[int]]:
    """(store, frame indices in time order) of ``STORE:SUBJECT/SEQUENCE``."""
    path, what = _split_spec(spec)
    store = _open(path)
    keys = [key.rsplit("/", 1) for key in store.frame_keys()]
    frames = sorted((int(k), i) for i, (seq, k) in enumerate(keys) if seq == what)
    if not frames:
        names = sorted({seq for seq, _ in keys})
        raise ValueError(f"{path}: no sequence {what!r}; it has {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}")
    return store, [i for _, i in frames]


def default_pose(ck: dict) -> str:
    """The first frame of the checkpoint's first training store, when it is still where training found it."""
    first = Path(ck["stores"][0])
    if not first.exists():
        raise ValueError(f"the checkpoint's training store {first} is not here; name a pose with --pose STORE:FRAME")
    return f"{first}:0"


def rest_joints_of(ck: dict, name: str, extra=()) -> np.ndarray | None:
    """A subject's rest joints from the checkpoint's training stores (or ``extra`` stores), if any has it."""
    for store in [*extra, *(Path(p) for p in ck["stores"] if Path(p).exists())]:
        store = _open(store) if isinstance(store, Path) else store
        if name in store.subjects:
            return store.read("subject/rest_joints", store.subjects.index(name))
    return None


def _mesh_png(path: Path, rows, row_labels=None, col_labels=None, title=None) -> None:
    from hipnet.viz.render import mesh_grid_png

    mesh_grid_png(path, [[(m.vertices, m.faces) for m in row] for row in rows], row_labels, col_labels, title)


def _fail(e: Exception):
    raise click.ClickException(str(e)) from e


# ---------------------------------------------------------------------------------------------------- hipnet-fit


def observed_points(store, i: int, n: int, front_only: bool, seed: int) -> np.ndarray:
    """``n`` surface points of frame ``i``'s ground-truth mesh (canonical): uniform over the area, or only where a
    camera in front of the body sees the surface."""
    from hipnet.model.apps import front_camera, front_visible
    from hipnet.pipeline.stages.surface import sample_surface

    if "mesh" not in store.sections:
        raise ValueError(f"{store.path}: no ground-truth meshes (a training store?); use an evaluation store")
    v, f = store.read("mesh/vertices", i), store.read("mesh/faces")
    rng = np.random.default_rng([seed, i])
    if not front_only:
        return sample_surface(v, f, n, rng).points
    s = sample_surface(v, f, 8 * n, rng)
    seen = front_visible(v, f, s.points, s.normals, front_camera(v))
    if seen.sum() < n:
        raise ValueError(f"{store.path}: frame {i} shows only {seen.sum()} of {8 * n} samples to the front camera")
    return s.points[seen][:n]


def score_code(model, store, i: int, code, device: str) -> dict:
    """Uniform and near-surface IoU of frame ``i`` with subject ``code``, when the store has evaluation points."""
    from hipnet.model.evaluate import iou, model_sdf

    if "eval" not in store.sections:
        return {}
    sdf = model_sdf(model, store.read("pose/joint_transforms", i), code, device)
    out = {}
    for kind in ("uniform", "near"):
        pts = store.read(f"eval/{kind}_points", i)
        pred = np.concatenate([sdf(pts[s : s + 65_536]) for s in range(0, len(pts), 65_536)]) < 0
        out[f"{kind}_iou"] = iou(pred, store.read(f"eval/{kind}_occupancy", i))
    return out


FIGURE6 = (("0 (mean code)", 0, False), ("1k", 1000, False), ("5k", 5000, False), ("10k", 10_000, False),
           ("1k front-only", 1000, True))


@click.command(context_settings=CONTEXT)
@CHECKPOINT
@click.option("--points", "cloud", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Observed point cloud (PLY/OBJ/XYZ: points or a mesh's vertices), canonical frame unless --world.")
@click.option("--pose", default=None, help="With --points: the pose, STORE:FRAME (its joint transforms).")
@click.option("--world", is_flag=True, help="With --points: the cloud is in the source frame of the --pose frame.")
@click.option("--store", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="An evaluation store (e.g. heldout.zarr): points are sampled on --frame's ground-truth mesh.")
@click.option("--frame", default=None, help="With --store: frame index or SUBJECT/SEQUENCE/INDEX.")
@click.option("--n-points", default=10_000, show_default=True, help="Points to fit to (0: the mean code only).")
@click.option("--front-only", is_flag=True, help="Only points a camera in front of the body sees (ray casting).")
@click.option("--iters", default=100, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--protocol", type=click.Choice(["figure6"]), default=None,
              help="figure6: on the first frame of each subject of --store, fit from 0, 1k, 5k, 10k and 1k front-only "
                   "points; write a table and a picture row per subject like the paper's figure 6.")
@click.option("--frames-per-subject", default=1, show_default=True, help="With --protocol: frames per subject.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default: RUN/fit).")
@click.option("--seed", default=0, show_default=True)
@RESOLUTION
@DEVICE
def fit_main(checkpoint, cloud, pose, world, store, frame, n_points, front_only, iters, lr, protocol,
             frames_per_subject, out, seed, resolution, device) -> None:
    """Fit a subject code to an observed point cloud with the network frozen (the paper's test-time optimisation:
    start from the mean training code, minimise mean |F(x)| over the points, 100 iterations at lr 1e-3). Writes
    code.npy, the mesh (PLY), fit.json (losses; uniform/near-surface IoU when the store has ground truth) and a
    picture."""
    from hipnet.model.apps import fit_code, posed_mesh
    from hipnet.model.meshing import save_mesh

    try:
        ck, model = _load(checkpoint, device)
        out = out or checkpoint.parent / "fit"
        out.mkdir(parents=True, exist_ok=True)
        if protocol == "figure6":
            if store is None:
                raise ValueError("--protocol figure6 needs --store (an evaluation store of held-out subjects)")
            _figure6(model, _open(store), out, frames_per_subject, iters, lr, resolution, seed, device)
            return
        if (cloud is None) == (store is None):
            raise ValueError("give either --points CLOUD (with --pose) or --store S --frame I")
        t0 = time.time()
        if cloud is not None:
            import trimesh

            if pose is None:
                raise ValueError("--points needs --pose STORE:FRAME: the pose the cloud was observed in")
            if front_only:
                raise ValueError("--front-only selects from a ground-truth mesh: use it with --store")
            pose_store, i = frame_of(pose)
            points = np.asarray(trimesh.load(cloud, process=False).vertices, dtype=np.float64)
            if world:
                m = pose_store.read("pose/world_from_canonical", i).astype(np.float64)
                points = (points - m[:3, 3]) @ m[:3, :3]
            if n_points and len(points) > n_points:
                points = points[np.random.default_rng(seed).choice(len(points), n_points, replace=False)]
            jt, source, truth = pose_store.read("pose/joint_transforms", i), str(cloud), None
        else:
            src, i = frame_of(f"{store}:{frame if frame is not None else 0}")
            points = observed_points(src, i, n_points, front_only, seed) if n_points else np.zeros((0, 3))
            jt, source = src.read("pose/joint_transforms", i), f"{store}:{src.frame_key(i)}"
        result = fit_code(model, points, jt, iters if len(points) else 0, lr, device=device)
        mesh = posed_mesh(model, jt, result.code, resolution, device=device)
        np.save(out / "code.npy", result.code.cpu().numpy())
        save_mesh(out / "mesh.ply", mesh)
        report = {"source": source, "points": len(points), "front_only": front_only, "iters": iters, "lr": lr,
                  "loss_first": result.losses[0] if result.losses else None,
                  "loss_last": result.losses[-1] if result.losses else None, "wall_s": round(time.time() - t0, 1)}
        rows = [[mesh]]
        if store is not None:
            report |= score_code(model, src, i, result.code, device)
            if "mesh" in src.sections:
                from hipnet.model.meshing import Mesh

                truth = Mesh(src.read("mesh/vertices", i), src.read("mesh/faces"))
                rows = [[truth, mesh]]
        (out / "fit.json").write_text(json.dumps(report, indent=2) + "\n")
        _mesh_png(out / "fit.png", rows, col_labels=["ground truth", "fitted"] if len(rows[0]) == 2 else ["fitted"])
        ious = "; ".join(f"{k} {100 * v:.2f}%" for k, v in report.items() if k.endswith("_iou"))
        click.echo(f"fitted to {len(points)} points in {report['wall_s']} s: loss {report['loss_first']} -> "
                   f"{report['loss_last']}{'; ' + ious if ious else ''}; {out}/code.npy, mesh.ply, fit.json, fit.png")
    except (ValueError, OSError) as e:
        _fail(e)


def _figure6(model, store, out: Path, per_subject: int, iters: int, lr: float, resolution: int, seed: int,
             device: str) -> None:
    from tqdm import tqdm

    from hipnet.model.apps import fit_code, posed_mesh
    from hipnet.model.meshing import Mesh, save_mesh

    if "eval" not in store.sections or "mesh" not in store.sections:
        raise ValueError(f"{store.path}: figure 6 needs ground-truth meshes and evaluation points (an evaluation store)")
    subj = store.read("frame/subject")
    frames = []
    for s in sorted(set(subj.tolist())):
        mine = np.flatnonzero(subj == s)
        frames += [int(mine[round(k * (len(mine) - 1) / max(1, per_subject - 1))]) for k in range(per_subject)]
    rows, labels, table = [], [], []
    with tqdm(total=len(frames) * len(FIGURE6), desc="figure6", unit="fit") as bar:
        for i in frames:
            jt = store.read("pose/joint_transforms", i)
            truth = Mesh(store.read("mesh/vertices", i), store.read("mesh/faces"))
            row = [truth]
            for name, n, front in FIGURE6:
                points = observed_points(store, i, n, front, seed) if n else np.zeros((0, 3))
                result = fit_code(model, points, jt, iters if n else 0, lr, device=device)
                scores = score_code(model, store, i, result.code, device)
                mesh = posed_mesh(model, jt, result.code, resolution, device=device)
                save_mesh(out / f"{store.frame_key(i).replace('/', '_')}_{name.split()[0]}{'_front' if front else ''}.ply",
                          mesh)
                row.append(mesh)
                table.append({"frame": store.frame_key(i), "setting": name, **scores,
                              "loss": result.losses[-1] if result.losses else None})
                bar.update(1)
            rows.append(row)
            labels.append(store.frame_key(i))
    names = [name for name, _, _ in FIGURE6]
    mean = {name: {k: float(np.mean([t[k] for t in table if t["setting"] == name])) for k in ("uniform_iou", "near_iou")}
            for name in names}
    (out / "figure6.json").write_text(json.dumps({"store": str(store.path), "iters": iters, "lr": lr,
                                                  "frames": table, "mean": mean}, indent=2) + "\n")
    lines = ["# Test-time fitting of held-out subjects (seed 000, figure 6)", "",
             f"Store `{store.path}`, {len(frames)} frames; code from the mean training code, {iters} iterations of "
             f"Adam at lr {lr}, loss mean |F| over the points.", "",
             "| points | uniform mIoU (%) | near-surface mIoU (%) |", "|---|---|---|"]
    lines += [f"| {name} | {100 * mean[name]['uniform_iou']:.2f} | {100 * mean[name]['near_iou']:.2f} |" for name in names]
    (out / "figure6.md").write_text("\n".join(lines) + "\n")
    _mesh_png(out / "figure6.png", rows, labels, ["ground truth", *names], "test-time fitting (figure 6)")
    click.echo("\n".join(lines[-len(names) - 2:]))
    click.echo(f"{out}/figure6.md, figure6.json, figure6.png")


# ---------------------------------------------------------------------------------------------------- hipnet-sample


@click.command(context_settings=CONTEXT)
@CHECKPOINT
@click.option("--n", "n", default=8, show_default=True, help="New subjects to draw.")
@click.option("--pose", default=None, help="STORE:FRAME to show them in (default: the first training frame).")
@click.option("--shrinkage", default=0.05, show_default=True,
              help="Added to the covariance: this x the mean code variance x identity (keeps it full rank).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default: RUN/samples).")
@click.option("--seed", default=0, show_default=True)
@RESOLUTION
@DEVICE
def sample_main(checkpoint, n, pose, shrinkage, out, seed, resolution, device) -> None:
    """Draw new subjects: fit a multivariate Gaussian with full covariance to the trained subject codes (GLO) and
    sample it (the paper's figure 5). Writes codes.npy, one mesh per sample and samples.png, all in one pose."""
    import torch
    from tqdm import tqdm

    from hipnet.model.apps import CodeGaussian, code_table, posed_mesh
    from hipnet.model.meshing import save_mesh

    try:
        ck, model = _load(checkpoint, device)
        out = out or checkpoint.parent / "samples"
        out.mkdir(parents=True, exist_ok=True)
        store, i = frame_of(pose or default_pose(ck))
        jt = store.read("pose/joint_transforms", i)
        gauss = CodeGaussian.fit(code_table(model).cpu().numpy(), shrinkage)
        codes = gauss.sample(n, seed)
        np.save(out / "codes.npy", codes)
        meshes = []
        for k, code in enumerate(tqdm(codes, desc="samples", unit="mesh")):
            mesh = posed_mesh(model, jt, torch.as_tensor(code, dtype=torch.float32), resolution, device=device)
            save_mesh(out / f"sample_{k:02d}.ply", mesh)
            meshes.append(mesh)
        cols = min(n, 8)
        rows = [meshes[r : r + cols] for r in range(0, n, cols)]
        _mesh_png(out / "samples.png", rows, title=f"{n} new subjects in pose {store.frame_key(i)}")
    except (ValueError, OSError, np.linalg.LinAlgError) as e:
        _fail(e)
    click.echo(f"{n} subjects from N(mean, full covariance) of {len(code_table(model))} codes: {out}/samples.png, "
               "sample_*.ply, codes.npy")


# ---------------------------------------------------------------------------------------------------- hipnet-animate


@click.command(context_settings=CONTEXT)
@CHECKPOINT
@click.option("--subject", default=None, help="The subject to animate (a training subject's name).")
@click.option("--motion", default=None, help="Retarget: STORE:SUBJECT/SEQUENCE, another subject's motion.")
@click.option("--every", default=1, show_default=True, help="With --motion: every k-th frame.")
@click.option("--interpolate", nargs=2, default=None, metavar="POSE_A POSE_B",
              help="Keyframes STORE:FRAME STORE:FRAME: in-betweens in the learnt pose space and, for comparison, "
                   "by slerp of joint rotations.")
@click.option("--blend", nargs=2, default=None, metavar="SUBJECT_A SUBJECT_B", help="Blend two subjects' codes.")
@click.option("--pose", default=None, help="With --blend: STORE:FRAME (default: the first training frame).")
@click.option("--steps", default=5, show_default=True, help="With --interpolate/--blend: frames including both ends.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default: RUN/animate).")
@RESOLUTION
@DEVICE
def animate_main(checkpoint, subject, motion, every, interpolate, blend, pose, steps, out, resolution, device) -> None:
    """Retarget a motion onto a subject (that subject's code and bone lengths, the other sequence's joint
    rotations), interpolate between keyframe poses (carried onto the subject's bone lengths), or blend two subjects
    (codes and bone lengths). Writes a mesh per frame (PLY) and a picture strip."""
    from tqdm import tqdm

    from hipnet.model.apps import interpolate_phi, interpolate_rotations, posed_mesh, retarget, subject_code
    from hipnet.model.meshing import Mesh, save_mesh
    from hipnet.pipeline.stages.canonical import to_world

    try:
        if sum(x is not None for x in (motion, interpolate, blend)) != 1:
            raise ValueError("choose one of --motion, --interpolate, --blend")
        ck, model = _load(checkpoint, device)
        names, parents = list(ck["subjects"]), model.skeleton.parents
        out = out or checkpoint.parent / "animate"
        out.mkdir(parents=True, exist_ok=True)
        t = np.linspace(0.0, 1.0, steps)
        if blend is None and subject is None:
            raise ValueError("--motion and --interpolate need --subject NAME")
        if motion is not None:
            store, frames = motion_of(motion)
            frames = frames[::every]
            code = subject_code(model, names, subject)
            rest = rest_joints_of(ck, subject, [store])
            if rest is None:
                click.echo(f"warning: no store here has {subject}'s rest joints; keeping the motion's bone lengths")
            meshes = []
            for k, i in enumerate(tqdm(frames, desc="retarget", unit="frame")):
                jt = store.read("pose/joint_transforms", i)
                jt = retarget(jt, parents, rest) if rest is not None else jt
                mesh = posed_mesh(model, jt, code, resolution, device=device)
                world = store.read("pose/world_from_canonical", i)
                save_mesh(out / f"{subject}_{k:04d}.ply", Mesh(to_world(mesh.vertices, world).astype("float32"),
                                                               mesh.faces))
                meshes.append(mesh)
            _mesh_png(out / "retarget.png", [meshes[:: max(1, len(meshes) // 8)]], [subject],
                      title=f"{subject} performing {motion.rpartition(':')[2]}")
            click.echo(f"{len(meshes)} frames: {out}/{subject}_*.ply (source frame of the motion), retarget.png")
        elif interpolate is not None:
            (sa, ia), (sb, ib) = frame_of(interpolate[0]), frame_of(interpolate[1])
            ja, jb = sa.read("pose/joint_transforms", ia), sb.read("pose/joint_transforms", ib)
            code = subject_code(model, names, subject)
            rest = rest_joints_of(ck, subject, [sa, sb])
            if rest is not None:  # keyframes of other subjects: the subject's own bone lengths
                ja, jb = retarget(ja, parents, rest), retarget(jb, parents, rest)
            naive = interpolate_rotations(ja, jb, parents, t)
            phis = interpolate_phi(model, ja, jb, t)
            rows = [[], []]
            for k in tqdm(range(steps), desc="interpolate", unit="pose"):
                learnt = posed_mesh(model, naive[k], code, resolution, phi=phis[k], device=device)
                plain = posed_mesh(model, naive[k], code, resolution, device=device)
                save_mesh(out / f"phi_{k:02d}.ply", learnt)
                save_mesh(out / f"rotations_{k:02d}.ply", plain)
                rows[0].append(learnt)
                rows[1].append(plain)
            _mesh_png(out / "interpolate.png", rows, ["pose encoding", "joint rotations"],
                      [f"t = {x:.2f}" for x in t], f"{subject}: {sa.frame_key(ia)} -> {sb.frame_key(ib)}")
            click.echo(f"{steps} in-betweens: {out}/phi_*.ply, rotations_*.ply, interpolate.png")
        else:
            a, b = (subject_code(model, names, s) for s in blend)
            store, i = frame_of(pose or default_pose(ck))
            jt = store.read("pose/joint_transforms", i)
            rests = [rest_joints_of(ck, s, [store]) for s in blend]
            meshes = []
            for k, w in enumerate(tqdm(t, desc="blend", unit="mesh")):
                if all(r is not None for r in rests):  # bone lengths blend with the codes
                    jt = retarget(jt, parents, (1 - w) * rests[0] + w * rests[1])
                mesh = posed_mesh(model, jt, (1 - w) * a + w * b, resolution, device=device)
                save_mesh(out / f"blend_{k:02d}.ply", mesh)
                meshes.append(mesh)
            _mesh_png(out / "blend.png", [meshes], col_labels=[f"{1 - w:.2f} {blend[0]}" for w in t],
                      title=f"{blend[0]} -> {blend[1]} in pose {store.frame_key(i)}")
            click.echo(f"{steps} blends: {out}/blend_*.ply, blend.png")
    except (ValueError, OSError) as e:
        _fail(e)


if __name__ == "__main__":
    sys.exit(fit_main())
