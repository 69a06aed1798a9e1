"""``hipnet-data families``: a picture of the pose families of the embedded dataset (one posed frame per family)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np


def family_frames(body, seed: int = 0, n_frames: int = 16, key_every: int = 8) -> dict[str, np.ndarray]:
    """One posed mesh (V, 3) per pose family: the default subject at the sequence's middle key (always a
    family pose), turned to face +Z and seen from 30 degrees to its left, pelvis at the origin."""
    from hipnet.pipeline.embedded.families import ALL_FAMILIES, family_motion
    from hipnet.pipeline.embedded.generate import pose_sequence, sequence_seed
    from hipnet.pipeline.stages.canonical import canonicalise, yaw_matrix

    rest = body.rest_shape({})
    out = {}
    for family in ALL_FAMILIES:
        rng = np.random.default_rng(sequence_seed(seed, "picture", family))
        motion = family_motion(rng, family, n_frames, key_every, rest.joints)
        verts, jt = pose_sequence(rest.vertices, rest.joints, body.skinning_weights, motion)
        canon = canonicalise(verts[key_every], jt[key_every])
        out[family] = canon.vertices @ yaw_matrix(np.radians(30.0)).T
    return out


@click.command("families")
@click.option("--png", type=click.Path(path_type=Path), required=True, help="Picture to write.")
@click.option("--topology", default="full", show_default=True, help="Anny mesh topology (full or a low-poly one).")
@click.option("--seed", default=0, show_default=True, help="Seed of the sequences drawn.")
def families_cmd(png: Path, topology: str, seed: int) -> None:
    """A picture of the pose families (pipeline/embedded/families.py): one frame of each, Anny's default body."""
    from hipnet.pipeline.embedded.body import AnnyBody
    from hipnet.viz.render import mesh_grid_png

    body = AnnyBody(topology)
    frames = family_frames(body, seed)
    png.parent.mkdir(parents=True, exist_ok=True)
    mesh_grid_png(png, [[(v, body.faces) for v in frames.values()]], col_labels=list(frames),
                  title="Pose families of the embedded dataset (hipnet-data anny --families)")
    click.echo(f"wrote {png}")
