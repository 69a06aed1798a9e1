"""``hipnet-view``: the interactive browser viewer (viser) for stores, runs and models.

The page has a tab per part: **Store** (a frame at a time: mesh, labelled samples, normals, skeleton, evaluation
points, facts), **Run** (training curves; the model's surface for the store frame beside the ground truth, coloured
by its distance to it) and **Pose** (subject blend, per-joint rotations, PLY export). The scene content comes from
the pure functions of ``viz/scene.py`` and ``viz/posing.py``; this module wires them to the controls.

Nothing that goes wrong after start-up stops the server: a failing control says what failed in the page (the
Messages box and a notification) and on the console (``report``), and the viewer keeps serving.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import viser

from hipnet.viz.panels import MeshWorker, PosePanel, RunPanel
from hipnet.viz.scene import (
    GT_COLOR,
    FrameData,
    Node,
    SceneOptions,
    frame_facts,
    frame_scene,
    label_legend_html,
    overlap_points,
    read_frame,
)
from hipnet.viz.sources import Sources, StoreSource

POINT_SIZE = 0.007  # metres
BONE_THICKNESS = 0.008


class Viewer:
    """The page for ``sources`` on ``server``; ``console`` prints a line on the terminal."""

    def __init__(self, server: viser.ViserServer, sources: Sources, export_dir: Path,
                 console: Callable[[str], None] = print, coarse: int = 48, fine: int = 96) -> None:
        self.server, self.sources, self.export_dir, self.console = server, sources, Path(export_dir), console
        self.shown: dict[str, set[str]] = {}
        self.messages: list[str] = []
        server.scene.set_up_direction("+y")
        server.initial_camera.position = (0.0, 0.3, 3.4)
        server.initial_camera.look_at = (0.0, 0.0, 0.0)
        self.message_box = server.gui.add_markdown(self._messages_text(), order=0)
        for problem in sources.problems:
            self.report(problem, notify=False)
        for note in sources.notes:
            console(f"hipnet-view: {note}")
        self.worker = MeshWorker(self.report)
        tabs = server.gui.add_tab_group(order=1)
        model_runs = [r for r in sources.runs if r.model is not None]
        store_tab = tabs.add_tab("Store") if sources.stores else None
        run_tab = tabs.add_tab("Run") if sources.runs else None
        pose_tab = tabs.add_tab("Pose") if model_runs else None
        self.store = StorePanel(self, store_tab) if store_tab else None
        self.run = RunPanel(self, run_tab, coarse, fine) if run_tab else None
        self.pose: PosePanel | None = None
        if self.store is not None:
            self.guarded("store view")(self.store.show)()
        if pose_tab is not None:  # after the first frame: posing starts from it
            self.pose = self.guarded("pose")(PosePanel)(self, pose_tab, model_runs, coarse, fine)
            if self.pose is not None:
                self.pose.update()

    # ------------------------------------------------------------------------------------------------ messages

    def _messages_text(self) -> str:
        if not self.messages:
            return "**hipnet-view**: no problems"
        return "**Messages**\n\n" + "\n".join(f"- {m}" for m in self.messages[-6:])

    def report(self, text: str, notify: bool = True) -> None:
        """A problem: on the console and in the page."""
        self.console(f"hipnet-view: {text}")
        self.messages.append(text)
        self.message_box.content = self._messages_text()
        if notify:
            for client in self.server.get_clients().values():
                client.add_notification("hipnet-view", text, color="red", auto_close_seconds=10.0)

    def guarded(self, what: str) -> Callable:
        """A callback wrapper: whatever the callback raises becomes a message; the server goes on."""

        def wrap(fn):
            @functools.wraps(fn)
            def run(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - the page and the console say what failed; never a dead server
                    self.report(f"{what}: {' '.join(str(e).split()) or type(e).__name__}")
                    return None

            return run

        return wrap

    # ------------------------------------------------------------------------------------------------ scene

    def draw(self, root: str, nodes: list[Node], position=(0.0, 0.0, 0.0)) -> None:
        """Show ``nodes`` (all under ``root``) translated by ``position``; nodes of ``root`` drawn before and not
        in ``nodes`` are removed."""
        scene = self.server.scene
        names = {n.name for n in nodes}
        for old in self.shown.get(root, set()) - names:
            scene.remove_by_name(old)
        pos = np.asarray(position, dtype=np.float64)
        for node in nodes:
            d = node.data
            if node.kind == "mesh":
                scene.add_mesh_simple(node.name, d["vertices"], d["faces"], color=d.get("color", GT_COLOR),
                                      side="double", position=pos)
            elif node.kind == "trimesh":
                scene.add_mesh_trimesh(node.name, d["mesh"], position=pos)
            elif node.kind == "points":
                scene.add_point_cloud(node.name, np.asarray(d["points"], np.float32), d["colors"],
                                      point_size=d.get("size", POINT_SIZE), point_shape="circle", position=pos)
            elif node.kind == "segments":
                scene.add_line_segments(node.name, d["points"], d["colors"], thickness=BONE_THICKNESS / 2,
                                        position=pos)
            elif node.kind == "label":
                scene.add_label(node.name, d["text"], position=pos + d["position"], font_screen_scale=0.7)
            else:
                raise ValueError(f"unknown node kind {node.kind!r}")
        self.shown[root] = names

    def frame_changed(self, source: StoreSource, frame: FrameData) -> None:
        if self.run is not None:
            self.run.frame_changed(source, frame)


class StorePanel:
    """Subject, sequence and frame controls with play; what to show; the frame's facts and the label legend."""

    def __init__(self, viewer: Viewer, tab) -> None:
        self.viewer = viewer
        self.lock = threading.RLock()
        self.current: tuple[StoreSource, FrameData] | None = None
        self.overlap_cache: dict[tuple[str, int, str], np.ndarray] = {}
        gui, guarded = viewer.server.gui, viewer.guarded
        stores = viewer.sources.stores
        with tab:
            self.store = gui.add_dropdown("store", [str(s.path) for s in stores], visible=len(stores) > 1)
            self.subject = gui.add_dropdown("subject", ["-"])
            self.sequence = gui.add_dropdown("sequence", ["-"])
            self.frame = gui.add_slider("frame", 0, 1, 1, 0, hint="position in the sequence")
            self.play = gui.add_checkbox("play", False, hint="step through the sequence, then the next one")
            self.fps = gui.add_number("frames/s", 4.0, min=0.5, max=30.0, step=0.5)
            with gui.add_folder("show"):
                self.mesh = gui.add_checkbox("mesh", True, hint="the ground-truth mesh (evaluation stores)")
                self.samples = gui.add_checkbox("surface samples", True, hint="coloured by geodesic joint label")
                self.normals = gui.add_checkbox("normals", False, hint="every 10th sample's normal, 2 cm")
                self.skeleton = gui.add_checkbox("skeleton", True)
                self.names = gui.add_checkbox("joint names", True)
                self.eval_set = gui.add_dropdown("evaluation points", ["none", "uniform", "near"],
                                                 hint="coloured by occupancy: blue inside, grey outside, red overlap")
                self.outside = gui.add_checkbox("outside points", False)
                self.overlap = gui.add_checkbox("self-overlap points", True,
                                                hint="points inside two parts (winding number 2), found per frame")
            self.facts = gui.add_markdown("")
            self.legend = gui.add_html("")
        self._quiet = False
        self.store.on_update(guarded("store")(lambda _: self._choose_store()))
        self.subject.on_update(guarded("subject")(lambda _: self._choose_subject()))
        self.sequence.on_update(guarded("sequence")(lambda _: self._choose_sequence()))
        for control in (self.frame, self.mesh, self.samples, self.normals, self.skeleton, self.names, self.eval_set,
                        self.outside, self.overlap):
            control.on_update(guarded("store view")(lambda _: self.show()))
        self._choose_store(draw=False)
        threading.Thread(target=self._player, daemon=True).start()

    @property
    def source(self) -> StoreSource:
        return next(s for s in self.viewer.sources.stores if str(s.path) == self.store.value)

    def _choose_store(self, draw: bool = True) -> None:
        with self.lock:
            self._quiet = True
            subjects = self.source.index.subjects()
            self.subject.options = subjects
            self.subject.value = subjects[0]
            self._quiet = False
            self._choose_subject(draw)

    def _choose_subject(self, draw: bool = True) -> None:
        if self._quiet:
            return
        with self.lock:
            self._quiet = True
            sequences = self.source.index.sequences(self.subject.value)
            self.sequence.options = sequences
            self.sequence.value = sequences[0]
            self._quiet = False
            self._choose_sequence(draw)

    def _choose_sequence(self, draw: bool = True) -> None:
        if self._quiet:
            return
        with self.lock:
            self._quiet = True
            n = len(self.source.index.frames[(self.subject.value, self.sequence.value)])
            self.frame.max = max(n - 1, 1)
            self.frame.value = 0
            self._quiet = False
        if draw:
            self.show()

    def options(self) -> SceneOptions:
        return SceneOptions(mesh=self.mesh.value, samples=self.samples.value, normals=self.normals.value,
                            skeleton=self.skeleton.value, joint_names=self.names.value, eval_set=self.eval_set.value,
                            outside=self.outside.value)

    def _overlap(self, source: StoreSource, frame: FrameData, options: SceneOptions) -> dict[str, np.ndarray] | None:
        e = options.eval_set
        if not self.overlap.value or e not in frame.eval_points or frame.vertices is None:
            return None
        key = (str(source.path), frame.frame, e)
        if key not in self.overlap_cache:
            self.overlap_cache[key] = overlap_points(frame.vertices, frame.faces, frame.eval_points[e])
        return {e: self.overlap_cache[key]}

    def show(self) -> None:
        """Read the chosen frame (only its chunks) and draw it."""
        if self._quiet:
            return
        with self.lock:
            source = self.source
            frames = source.index.frames[(self.subject.value, self.sequence.value)]
            i = frames[min(int(self.frame.value), len(frames) - 1)]
            options = self.options()
            frame = read_frame(source.store, i, eval_points=options.eval_set != "none")
            overlap = self._overlap(source, frame, options)
            skeleton = source.store.skeleton
            self.viewer.draw("/store", frame_scene(frame, skeleton, options, "/store", overlap))
            self.facts.content = frame_facts(frame, None if overlap is None else
                                             {e: int(m.sum()) for e, m in overlap.items()})
            self.legend.content = label_legend_html(skeleton.names, np.unique(frame.labels))
            self.current = (source, frame)
        self.viewer.frame_changed(source, frame)

    def _player(self) -> None:
        step = self.viewer.guarded("play")(self._advance)
        while True:
            time.sleep(1.0 / max(float(self.fps.value), 0.5))
            if self.play.value:
                step()

    def _advance(self) -> None:
        """The next frame; after the last, the next sequence of the subject (wrapping)."""
        if self.frame.value < self.frame.max:
            self.frame.value = int(self.frame.value) + 1
            return
        options = list(self.sequence.options)
        self.sequence.value = options[(options.index(self.sequence.value) + 1) % len(options)]
        if len(options) == 1:
            self.frame.value = 0
