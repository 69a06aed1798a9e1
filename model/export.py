"""Bundle a trained run as a pretrained model: ``python -m hipnet.model.export --run RUN --name NAME``.

Writes ``model/pretrained/NAME.pt`` and ``NAME.json``. The checkpoint keeps what every command reads (weights,
subjects, skeleton, config, schema version, step, the training stores' paths) and drops what only ``--resume``
needs (optimiser, loader state), so it is a fraction of the run's. It adds ``examples``: a few poses of the
evaluation store (the first frame of each of its first sequences) and every training subject's rest joints, so
meshes, samples and blends work with no store on disk.

``NAME.json`` records how the model was made (command, commit, machine, preset, steps, training time) and its
evaluation: the summary of ``RUN/eval/metrics.json`` and that file's per-frame scores, which
``tests/test_pretrained.py`` reproduces on frames it regenerates.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import torch

from hipnet.model.api import EXAMPLES, PRETRAINED_DIR
from hipnet.model.checkpoint import KEYS, load_checkpoint, save_checkpoint
from hipnet.pipeline.store.reading import Store


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def example_poses(store: Store, n: int) -> tuple[list[np.ndarray], list[str]]:
    """The first frame of each of the store's first ``n`` sequences (joint transforms, frame keys)."""
    seq = store.read("frame/sequence")
    subj = store.read("frame/subject")
    firsts, seen = [], set()
    for i in range(store.n_frames):
        pair = (int(subj[i]), int(seq[i]))
        if pair not in seen:
            seen.add(pair)
            firsts.append(i)
        if len(firsts) == n:
            break
    return [store.read("pose/joint_transforms", i).astype(np.float32) for i in firsts], \
        [store.frame_key(i) for i in firsts]


def bundle(ckpt: dict, train: Store, test: Store, n_poses: int = 8) -> dict:
    """The pretrained checkpoint dict: ``KEYS`` of ``ckpt`` plus ``examples``."""
    poses, keys = example_poses(test, n_poses)
    rest = {name: train.read("subject/rest_joints", k).astype(np.float32) for k, name in enumerate(train.subjects)}
    out = {k: ckpt[k] for k in KEYS}
    out[EXAMPLES] = {"poses": [torch.from_numpy(p) for p in poses], "pose_keys": keys,
                     "rest_joints": {k: torch.from_numpy(v) for k, v in rest.items()}}
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--run", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="A finished run: RUN/ckpt.pt and RUN/eval/metrics.json (hipnet-eval on the test store).")
@click.option("--name", default="anny", show_default=True, help="The bundled model's name (hipnet.load(NAME)).")
@click.option("--test-store", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="The evaluation store the run was scored on (its first frames become the example poses).")
@click.option("--command", "made_by", required=True, help="The command that trained and scored the run (recorded).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=PRETRAINED_DIR, show_default=True)
def main(run: Path, name: str, test_store: Path, made_by: str, out: Path) -> None:
    """Bundle RUN as the pretrained model NAME: NAME.pt (weights, subjects, example poses) and NAME.json (how it
    was made, what it scores)."""
    try:
        ckpt = load_checkpoint(run / "ckpt.pt")
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
        train = Store.open(Path(ckpt["stores"][0]), ["subject/rest_joints"])
        test = Store.open(test_store, ["pose/joint_transforms"])
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / f"{name}.pt", bundle(ckpt, train, test))
    log = run / "log.csv"
    train_s = None
    if log.is_file():
        rows = log.read_text().splitlines()
        header = rows[0].split(",")
        if "wall_s" in header and len(rows) > 1:
            train_s = float(rows[-1].split(",")[header.index("wall_s")])
    record = {
        "name": name,
        "command": made_by,
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "python": sys.version.split()[0],
                    "torch": torch.__version__},
        "preset": ckpt["config"],
        "step": ckpt["step"],
        "train_s": train_s,
        "subjects": ckpt["subjects"],
        "training_stores": ckpt["stores"],
        "test_store": str(test_store),
        "test_store_config": test.attrs["config"],
        "summary": metrics["summary"],
        "frames": [{k: f[k] for k in ("key", "subject", "sequence", "frame", "uniform_iou", "near_iou")}
                   for f in metrics["frames"]],
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    size = (out / f"{name}.pt").stat().st_size
    s = metrics["summary"]
    click.echo(f"{out}/{name}.pt ({size / 1e6:.2f} MB), {name}.json: {100 * s['uniform_miou']:.2f} / "
               f"{100 * s['near_miou']:.2f}% uniform / near-surface mIoU on {s['frames']} frames")


if __name__ == "__main__":
    main()
