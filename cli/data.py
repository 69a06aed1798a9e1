"""``hipnet-data``: build and look at datasets (the offline half of the toolkit)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from hipnet.pipeline.embedded.body import TOPOLOGIES


class _Group(click.Group):
    """Bad input (a missing file, a wrong shape, a refused overwrite) ends with one clear line and exit code 1,
    not a traceback; the message names the file and the problem."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ValueError, OSError) as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Datasets for HIPNet: generate the embedded Anny data, and (later stages) preprocess raw datasets into
    sharded Zarr stores of oriented surface points, joint transforms and geodesic joint labels."""


@main.command("anny")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Folder to write the raw dataset to.")
@click.option(
    "--manifest",
    default="anny",
    show_default=True,
    help="Manifest name in data_manifests/ or a YAML path: subjects, phenotypes, sequences and the split.",
)
@click.option(
    "--topology",
    type=click.Choice(sorted(TOPOLOGIES)),
    default=None,
    help="Override the manifest's mesh: 'full' (closed 13k-vertex body) or a low-poly retopology for fast tests.",
)
@click.option("--motions", type=click.Choice(["procedural", "deepmimic"]), default="procedural", show_default=True,
              help="procedural: random key poses within joint limits (redistributable). deepmimic: the 15 mocap "
                   "clips of the pybullet 3.2.7 wheel, research use only.")
@click.option("--png", type=click.Path(path_type=Path), default=None, help="Also write a subjects x poses picture.")
def anny_cmd(out: Path, manifest: str, topology: str | None, motions: str, png: Path | None) -> None:
    """Generate the embedded dataset: many Anny subjects in many poses, one watertight mesh per frame, with the
    22 SMPL joint transforms, rest joints and skinning weights (Y up, metres). Deterministic; resumable (files
    already written are kept); the first run builds Anny's model cache (about a minute)."""
    from tqdm import tqdm

    from hipnet.pipeline.embedded.generate import generate_dataset
    from hipnet.pipeline.manifest import load_manifest

    m = load_manifest(manifest)
    source = None
    if motions == "deepmimic":
        from hipnet.pipeline.embedded.deepmimic import deepmimic_manifest, deepmimic_motion_source

        m = deepmimic_manifest(m)
        source = deepmimic_motion_source()
    t0 = time.time()
    click.echo(f"building Anny body ({topology or m['generator']['topology']}); first run caches it ...", err=True)
    with tqdm(total=len(m["sequences"]), desc="sequences", unit="seq") as bar:
        summary = generate_dataset(m, out, topology=topology, motion_source=source, progress=bar.update)
    click.echo(
        f"wrote {summary['frames']} frames of {len(summary['subjects'])} subjects "
        f"({summary['num_vertices']} vertices each) to {out} in {time.time() - t0:.0f} s"
    )
    if png is not None:
        _preview(out, png)


@main.command("preview")
@click.option("--root", type=click.Path(path_type=Path, exists=True), required=True, help="A generated Anny dataset.")
@click.option("--png", type=click.Path(path_type=Path), required=True, help="Picture to write.")
@click.option("--subjects", "n_subjects", default=6, show_default=True, help="Rows: subjects.")
@click.option("--poses", "n_poses", default=6, show_default=True, help="Columns: poses (one per sequence).")
def preview_cmd(root: Path, png: Path, n_subjects: int, n_poses: int) -> None:
    """A picture grid of subjects x poses of a generated Anny dataset, each body turned to face the viewer."""
    _preview(root, png, n_subjects, n_poses)


def _preview(root: Path, png: Path, n_subjects: int = 6, n_poses: int = 6) -> None:
    from hipnet.pipeline.readers.anny import AnnyReader
    from hipnet.pipeline.render import heading_free_view, mesh_grid_png

    reader = AnnyReader(root)
    names = [s["name"] for s in reader.info["subjects"]]
    # Spread the rows over the subject list so the extremes at its end show up too.
    picks = sorted({names[round(i * (len(names) - 1) / max(1, n_subjects - 1))] for i in range(n_subjects)},
                   key=names.index)
    rows = []
    for name in picks:
        subj = reader.subject(name)
        seqs = [s["name"] for s in reader.info["sequences"] if s["subject"] == name][:n_poses]
        row = []
        for seq in seqs:
            data = reader.read_sequence(name, seq)
            t = len(data["vertices"]) // 2
            jt = data["joint_transforms"][t]
            v = heading_free_view(data["vertices"][t] - jt[0, :3, 3], jt[0, :3, :3])
            row.append((v, subj["faces"]))
        rows.append(row)
    png.parent.mkdir(parents=True, exist_ok=True)
    mesh_grid_png(png, rows, row_labels=picks, col_labels=[f"pose {i}" for i in range(n_poses)],
                  title=f"Anny dataset: {len(names)} subjects, {reader.info['frames']} frames")
    click.echo(f"wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
