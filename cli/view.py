"""``hipnet-view``: an interactive 3D viewer in the browser for stores, runs and models (``hipnet.viz.viewer``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from hipnet.cli.params import OUTPUT


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("paths", nargs=-1, required=True, type=OUTPUT)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; 0.0.0.0 for other machines (or keep it and use an SSH tunnel).")
@click.option("--port", default=8080, show_default=True, help="Port (the next free one if taken).")
@click.option("--export-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True,
              help="Where 'export PLY' writes meshes.")
@click.option("--resolution", default="48", show_default=True, type=click.Choice(["24", "48", "96"]),
              help="Marching-cubes grid of a model surface while controls move.")
@click.option("--refine", default="96", show_default=True, type=click.Choice(["48", "96", "192"]),
              help="The grid a surface is refined to once the controls rest.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--seconds", type=float, default=None, help="Serve this long, then stop (default: until Ctrl-C).")
def main(paths, host, port, export_dir, resolution, refine, device, seconds) -> None:
    """Serve a viewer for STORE.zarr folders and RUN folders (log.csv, ckpt.pt), checkpoint files or a bundled
    pretrained model's name (anny), and print its URL. Store tab: a frame at a time (mesh, labelled samples,
    normals, skeleton, evaluation points, facts). Run tab: training curves; the model's surface for the store frame
    beside the ground truth, coloured by its distance to it. Pose tab: subject blend, per-joint rotations, PLY
    export. Paths that cannot be read are reported here and in the page; the viewer serves the rest."""
    import viser

    from hipnet.viz.sources import load_sources
    from hipnet.viz.viewer import Viewer

    def console(line: str) -> None:
        click.echo(line, err=True)

    sources = load_sources(paths, device)
    server = viser.ViserServer(host=host, port=port, label="hipnet-view", verbose=False)
    Viewer(server, sources, export_dir, console, int(resolution), int(refine))
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    click.echo(f"hipnet-view: {len(sources.stores)} store(s), {len(sources.runs)} run(s), "
               f"{len(sources.problems)} problem(s); open http://{shown}:{server.get_port()}/ "
               f"(from another machine: ssh -L {server.get_port()}:localhost:{server.get_port()} HOST)")
    try:
        time.sleep(seconds) if seconds is not None else server.sleep_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
