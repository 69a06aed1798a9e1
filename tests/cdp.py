"""A headless Chromium driven over the DevTools protocol (a websocket; ``websockets`` comes with viser), for the
viewer's browser test: open a page, evaluate JavaScript, click, take a screenshot. Uses the Debian ``chromium``
binary; nothing is downloaded."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str | None:
    return next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)


class Browser:
    """``with Browser() as b: b.open(url); b.text(); b.screenshot(path)``."""

    def __init__(self, width: int = 1400, height: int = 900, port: int = 9339) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("no chromium on PATH: apt-get install -y chromium (make test-browser does)")
        self.profile = tempfile.mkdtemp(prefix="hipnet-cdp-")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
             f"--remote-debugging-port={port}", f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "--no-first-run", "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                page = next(t for t in targets if t["type"] == "page")
                break
            except (OSError, StopIteration):
                if time.time() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("chromium did not start its DevTools endpoint") from None
                time.sleep(0.2)
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def eval(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text(self) -> str:
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, predicate, timeout: float = 60.0, every: float = 0.5):
        """Poll ``predicate()`` until it is truthy; its last value (falsy on timeout)."""
        deadline = time.time() + timeout
        while True:
            value = predicate()
            if value or time.time() > deadline:
                return value
            time.sleep(every)

    def click_text(self, text: str) -> bool:
        """Click (mouse press and release at its centre) the first button or tab whose text is ``text``."""
        box = self.eval(
            "(() => { const t = " + json.dumps(text) + "; const el = [...document.querySelectorAll("
            "'button, [role=tab]')].find(e => e.innerText.trim() === t); if (!el) return null; "
            "const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        if not box:
            return False
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
        return True

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        Path(path).write_bytes(data)
        return data

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
