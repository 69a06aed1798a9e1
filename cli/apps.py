"""``hipnet-fit``, ``hipnet-sample``, ``hipnet-animate``: the applications of a trained model (seed 000, section 5.1).

Poses and motions are named in stores: ``STORE:I`` (frame index) or ``STORE:SUBJECT/SEQUENCE/INDEX`` for one pose,
``STORE:SUBJECT/SEQUENCE`` for a motion (``hipnet.model.specs``); every store is checked against the checkpoint
(``hipnet.model.compat``). Everything is in the stores' canonical frame (the body faces +Z). The work is done in
``hipnet.model``: ``fitting`` and ``figure6`` (hipnet-fit), ``apps`` (hipnet-sample), ``animate``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
import numpy as np

from hipnet.cli.params import config_options
from hipnet.model.config import FitConfig

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
CHECKPOINT = click.option("--checkpoint", required=True,
                          help="RUN/ckpt.pt written by hipnet-train, or a bundled pretrained model's name (anny).")
RESOLUTION = config_options(FitConfig, ("resolution",))
DEVICE = click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")


def _load(checkpoint: str, device: str):
    """(checkpoint dict, model, a store opener that refuses stores incompatible with the checkpoint, the folder
    outputs go to by default: next to a run's checkpoint, runs/pretrained_NAME for a bundled model)."""
    from hipnet.model.api import is_pretrained, resolve_checkpoint
    from hipnet.model.compat import StoreOpener
    from hipnet.model.specs import APP_ARRAYS
    from hipnet.model.train import load_checkpoint, model_from_checkpoint

    path = resolve_checkpoint(checkpoint)
    ck = load_checkpoint(path)
    home = Path("runs") / f"pretrained_{path.stem}" if is_pretrained(path) else path.parent
    return ck, model_from_checkpoint(ck, path).to(device).eval(), StoreOpener(ck, path, APP_ARRAYS), home


def _fail(e: Exception) -> NoReturn:
    raise click.ClickException(str(e)) from e


# ---------------------------------------------------------------------------------------------------- hipnet-fit


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
@config_options(FitConfig, ("iters", "lr"))
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
    from tqdm import tqdm

    from hipnet.model.figure6 import SETTINGS, figure6_frames, run_figure6, write_figure6
    from hipnet.model.fitting import fit_observation, observe_cloud, observe_store, write_fit
    from hipnet.model.specs import frame_of

    try:
        if protocol == "figure6" and store is None:
            raise ValueError("--protocol figure6 needs --store (an evaluation store of held-out subjects)")
        if protocol is None and (cloud is None) == (store is None):
            raise ValueError("give either --points CLOUD (with --pose) or --store S --frame I")
        if cloud is not None and pose is None:
            raise ValueError("--points needs --pose STORE:FRAME: the pose the cloud was observed in")
        if cloud is not None and front_only:
            raise ValueError("--front-only selects from a ground-truth mesh: use it with --store")
        _, model, open_store, home = _load(checkpoint, device)
        out = out or home / "fit"
        if protocol == "figure6":
            src = open_store(store)
            with tqdm(total=len(figure6_frames(src, frames_per_subject)) * len(SETTINGS), desc="figure6",
                      unit="fit") as bar:
                fig = run_figure6(model, src, frames_per_subject, iters, lr, resolution, seed, device, bar.update)
            click.echo("\n".join(write_figure6(out, fig)))
            click.echo(f"{out}/figure6.md, figure6.json, figure6.png")
            return
        if cloud is not None:
            obs = observe_cloud(cloud, *frame_of(pose, open_store), world, n_points, seed)
        else:
            obs = observe_store(*frame_of(f"{store}:{frame if frame is not None else 0}", open_store), n_points,
                                front_only, seed)
        fit = fit_observation(model, obs, iters, lr, resolution, front_only, device)
        write_fit(out, fit)
    except (ValueError, OSError) as e:
        _fail(e)
    r = fit.report
    ious = "; ".join(f"{k} {100 * v:.2f}%" for k, v in r.items() if k.endswith("_iou"))
    click.echo(f"fitted to {r['points']} points in {r['wall_s']} s: loss {r['loss_first']} -> {r['loss_last']}"
               f"{'; ' + ious if ious else ''}; {out}/code.npy, mesh.ply, fit.json, fit.png")


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
    from hipnet.model.report import mesh_rows_png
    from hipnet.model.specs import pose_of

    try:
        ck, model, open_store, home = _load(checkpoint, device)
        jt, where = pose_of(pose, ck, open_store)
        codes = CodeGaussian.fit(code_table(model).cpu().numpy(), shrinkage).sample(n, seed)
        meshes = [posed_mesh(model, jt, torch.as_tensor(code, dtype=torch.float32), resolution, device=device)
                  for code in tqdm(codes, desc="samples", unit="mesh")]
        out = out or home / "samples"
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "codes.npy", codes)
        for k, mesh in enumerate(meshes):
            save_mesh(out / f"sample_{k:02d}.ply", mesh)
        cols = min(n, 8)
        mesh_rows_png(out / "samples.png", [meshes[r : r + cols] for r in range(0, n, cols)],
                      title=f"{n} new subjects in pose {where}")
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

    from hipnet.model.animate import interpolate_keyframes, retarget_motion
    from hipnet.model.apps import subject_code
    from hipnet.model.data import read_finite
    from hipnet.model.meshing import save_mesh
    from hipnet.model.report import mesh_rows_png
    from hipnet.model.specs import frame_of, motion_of, rest_joints_of

    try:
        if sum(x is not None for x in (motion, interpolate, blend)) != 1:
            raise ValueError("choose one of --motion, --interpolate, --blend")
        if blend is None and subject is None:
            raise ValueError("--motion and --interpolate need --subject NAME")
        ck, model, open_store, home = _load(checkpoint, device)
        names = list(ck["subjects"])
        out = out or home / "animate"
        t = np.linspace(0.0, 1.0, steps)
        if motion is not None:
            store, frames = motion_of(motion, open_store)
            code = subject_code(model, names, subject)
            rest = rest_joints_of(ck, subject, [store], open_store)
            if rest is None:
                click.echo(f"warning: no store here has {subject}'s rest joints; keeping the motion's bone lengths")
            with tqdm(total=len(frames[::every]), desc="retarget", unit="frame") as bar:
                meshes, source = retarget_motion(model, store, frames[::every], code, rest, resolution, device,
                                                 bar.update)
            out.mkdir(parents=True, exist_ok=True)
            for k, mesh in enumerate(source):
                save_mesh(out / f"{subject}_{k:04d}.ply", mesh)
            mesh_rows_png(out / "retarget.png", [meshes[:: max(1, len(meshes) // 8)]], [subject],
                          title=f"{subject} performing {motion.rpartition(':')[2]}")
            click.echo(f"{len(meshes)} frames: {out}/{subject}_*.ply (source frame of the motion), retarget.png")
        elif interpolate is not None:
            (sa, ia), (sb, ib) = frame_of(interpolate[0], open_store), frame_of(interpolate[1], open_store)
            code = subject_code(model, names, subject)
            rest = rest_joints_of(ck, subject, [sa, sb], open_store)
            with tqdm(total=steps, desc="interpolate", unit="pose") as bar:
                rows = interpolate_keyframes(model, read_finite(sa, "pose/joint_transforms", ia),
                                             read_finite(sb, "pose/joint_transforms", ib), code, rest, t, resolution,
                                             device, bar.update)
            out.mkdir(parents=True, exist_ok=True)
            for k, (learnt, plain) in enumerate(zip(rows.learnt, rows.rotations, strict=True)):
                save_mesh(out / f"phi_{k:02d}.ply", learnt)
                save_mesh(out / f"rotations_{k:02d}.ply", plain)
            mesh_rows_png(out / "interpolate.png", [rows.learnt, rows.rotations], ["pose encoding", "joint rotations"],
                          [f"t = {x:.2f}" for x in t], f"{subject}: {sa.frame_key(ia)} -> {sb.frame_key(ib)}")
            click.echo(f"{steps} in-betweens: {out}/phi_*.ply, rotations_*.ply, interpolate.png")
        else:
            _blend(ck, model, open_store, blend, pose, t, out, resolution, device)
    except (ValueError, OSError) as e:
        _fail(e)


def _blend(ck, model, open_store, blend: tuple[str, str], pose: str | None, t: np.ndarray, out: Path,
           resolution: int, device: str) -> None:
    """``hipnet-animate --blend``: two subjects' codes and bone lengths blended at ``t``, in one pose (the bundled
    model's example pose, or the first training frame, when none is named)."""
    from tqdm import tqdm

    from hipnet.model.animate import blend_subjects
    from hipnet.model.apps import subject_code
    from hipnet.model.meshing import save_mesh
    from hipnet.model.report import mesh_rows_png
    from hipnet.model.specs import pose_of, rest_joints_of, split_spec

    codes = tuple(subject_code(model, list(ck["subjects"]), s) for s in blend)
    jt, where = pose_of(pose, ck, open_store)
    extra = [open_store(split_spec(pose)[0])] if pose else []
    rests = tuple(rest_joints_of(ck, s, extra, open_store) for s in blend)
    with tqdm(total=len(t), desc="blend", unit="mesh") as bar:
        meshes = blend_subjects(model, jt, codes, rests, t, resolution, device, bar.update)
    out.mkdir(parents=True, exist_ok=True)
    for k, mesh in enumerate(meshes):
        save_mesh(out / f"blend_{k:02d}.ply", mesh)
    mesh_rows_png(out / "blend.png", [meshes], col_labels=[f"{1 - w:.2f} {blend[0]}" for w in t],
                  title=f"{blend[0]} -> {blend[1]} in pose {where}")
    click.echo(f"{len(t)} blends: {out}/blend_*.ply, blend.png")


if __name__ == "__main__":
    sys.exit(fit_main())
