"""Pictures live in hipnet.viz, usable from pipeline, model and cli, and never pull in the model code."""

import subprocess
import sys

from synthetic import capsule


def test_viz_imports_no_model_code():
    code = ("import sys, hipnet.viz.render; bad = [m for m in sys.modules if m.startswith('hipnet.model')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mesh_grid_png_writes_a_picture(tmp_path):
    from hipnet.viz.render import mesh_grid_png

    v, f, _ = capsule(8, 12)
    png = tmp_path / "grid.png"
    mesh_grid_png(png, [[(v, f), (v * 0.8, f)]], row_labels=["capsule"], col_labels=["a", "b"], title="test")
    assert png.read_bytes()[:4] == b"\x89PNG"
