"""hipnet-view in a real browser (``make test-browser``; marked ``browser``, not part of ``make test``): headless
Chromium from the Debian packages, driven over the DevTools protocol (tests/cdp.py), loads the viewer that the
``hipnet-view`` command serves for a tiny Anny store and a tiny checkpoint; the test waits for the scene and the
refined model surface, checks that the canvas is not blank and that the panel shows the frame's subject, and writes
the screenshots to docs/viewer.png (Store tab) and docs/viewer_run.png (Run tab). A second viewer, pointed at an
empty checkpoint and a missing store, must serve a page that names both problems."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cdp import Browser, chromium_binary

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_binary() is None, reason="no chromium (make test-browser installs it)")]
DOCS = Path(__file__).resolve().parent.parent / "docs"
PANEL_WIDTH = 400  # pixels of the control panel at the right of a 1400-pixel-wide page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_view_data(tmp_path_factory, tiny_raw):
    """(test store, run folder): the tiny Anny dataset's test split and a tiny model trained 60 steps on its train
    split."""
    from hipnet.model.config import PRESETS
    from hipnet.model.train import train
    from hipnet.pipeline.core.config import PreprocessConfig
    from hipnet.pipeline.readers.anny import AnnyReader
    from hipnet.pipeline.runner.driver import preprocess_split

    tmp = tmp_path_factory.mktemp("view_browser")
    cfg = PreprocessConfig(surface_points=6000, eval_points=4000, shard_frames=8, geodesics="per-template")
    stores = {s: preprocess_split(AnnyReader(tiny_raw, (s,)), tmp / "data", cfg, s).store for s in ("train", "test")}
    fast = PRESETS["fast"]
    tcfg = replace(fast, model=replace(fast.model, hidden=16, layers=4, skip=2, code_dim=8, pose_dim=8),
                   points_per_frame=300, eikonal_per_frame=300, steps=60, loader_workers=0, log_every=10)
    train([stores["train"]], tcfg, tmp / "run", progress=False)
    return stores["test"], tmp / "run"


class Served:
    """``hipnet-view ARGS`` in a subprocess, stopped (SIGINT, then kill) on exit."""

    def __init__(self, *args) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "hipnet.cli.view", *map(str, args), "--port",
                                      str(self.port), "--seconds", "600"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stdout.read()
                assert time.time() < deadline, "hipnet-view did not start serving within two minutes"
                time.sleep(0.5)

    def close(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


def _dismiss_notifications(b: Browser) -> None:
    b.eval("document.querySelectorAll('[class*=Notification-closeButton]').forEach(e => e.click())")


def _canvas_pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return rgb[:, : rgb.shape[1] - PANEL_WIDTH]  # the 3D view, left of the panel


def test_viewer_in_headless_chromium(tiny_view_data, tmp_path):
    from hipnet.pipeline.store.reading import Store

    store_path, run = tiny_view_data
    store = Store.open(store_path, arrays=["frame/subject", "frame/sequence", "frame/index"])
    served = Served(store_path, run, "--export-dir", tmp_path, "--resolution", "24", "--refine", "48")
    try:
        with Browser(1400, 900, port=_free_port()) as b:
            b.open(served.url)
            assert b.wait_for(lambda: "store frame" in b.text(), 120), b.text()
            facts = re.search(r"^subject (\S+)$", b.text(), re.M)  # the facts panel's line "subject NAME"
            assert facts and facts.group(1) in store.subjects, b.text()
            subject = facts.group(1)
            assert b.click_text("Run")
            assert b.wait_for(lambda: "refined 48^3" in b.text(), 180), b.text()
            assert "distance to the ground truth mesh" in b.text() and "loss terms" in b.text()
            _dismiss_notifications(b)
            time.sleep(2)
            run_png = b.screenshot(tmp_path / "run.png")
            assert b.click_text("Store")
            assert b.wait_for(lambda: f"subject {subject}" in b.text(), 30)
            time.sleep(3)  # let software WebGL draw the last frame
            png = b.screenshot(tmp_path / "store.png")
        pixels = _canvas_pixels(png)
        background = np.median(pixels.reshape(-1, 3), axis=0)
        drawn = np.abs(pixels - background).sum(axis=2) > 30
        assert drawn.mean() > 0.01, f"only {100 * drawn.mean():.2f}% of the canvas differs from the background"
        assert len(np.unique(pixels[drawn].reshape(-1, 3), axis=0)) > 100  # shaded mesh and label colours
        DOCS.mkdir(exist_ok=True)
        (DOCS / "viewer.png").write_bytes(png)
        (DOCS / "viewer_run.png").write_bytes(run_png)
    finally:
        out = served.close()
    assert "open http://localhost" in out and "Traceback" not in out, out


def test_bad_inputs_are_named_in_the_page_and_the_server_serves(tmp_path):
    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "ckpt.pt").write_bytes(b"")
    served = Served(empty, tmp_path / "missing.zarr")
    try:
        with Browser(1200, 800, port=_free_port()) as b:
            b.open(served.url)
            assert b.wait_for(lambda: "empty file" in b.text(), 60), b.text()
            text = b.text()
            assert "ckpt.pt: empty file (0 bytes)" in text and "missing.zarr: no such file or folder" in text
    finally:
        out = served.close()
    assert "ckpt.pt: empty file" in out and "missing.zarr: no such file" in out and "Traceback" not in out, out
    assert os.path.exists(empty / "ckpt.pt")
