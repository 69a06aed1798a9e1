"""The model tabs of ``hipnet-view`` (``viz/viewer.py``): **Run** (training curves, the model's surface for the store
frame beside the ground truth, error colouring) and **Pose** (subject blend, per-joint rotations, PLY export), and the
worker thread that extracts the surfaces.

A surface is first extracted at the interactive resolution; when no newer request for the same view has come for
``REST_S`` seconds it is extracted again at the refined resolution (``MeshWorker``). One worker serves both tabs: on
a 2-core CPU two extractions at once would only slow each other down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import trimesh

from hipnet.model.compat import check_store_compatible
from hipnet.model.meshing import save_mesh
from hipnet.viz.posing import Surface, blend, edit_pose, model_surface, rest_from_pose, title_position
from hipnet.viz.scene import (
    MODEL_COLOR,
    OFFSET,
    FrameData,
    Node,
    error_colors,
    error_legend_html,
    loss_terms,
    skeleton_segments,
    surface_distance,
)
from hipnet.viz.sources import RunSource, StoreSource

if TYPE_CHECKING:
    from hipnet.viz.viewer import Viewer

REST_S = 0.8  # seconds without a newer request before a surface is refined
RESOLUTIONS = ("24", "48", "96", "192")  # 12 x a power of two (posing.START)


@dataclass
class Request:
    job: Callable[[int], Surface]  # resolution -> surface
    show: Callable[[Surface, bool], None]  # (surface, refined)
    coarse: int
    fine: int
    serial: int


class MeshWorker:
    """One thread extracting surfaces; per view only the latest request counts."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.pending: dict[str, Request] = {}
        self.serial = 0
        self.busy = False
        self.cond = threading.Condition()
        threading.Thread(target=self._loop, daemon=True).start()

    def request(self, view: str, job, show, coarse: int, fine: int) -> None:
        with self.cond:
            self.serial += 1
            self.pending[view] = Request(job, show, coarse, fine, self.serial)
            self.cond.notify_all()

    def idle(self) -> bool:
        with self.cond:
            return not self.pending and not self.busy

    def _newer(self, view: str, serial: int) -> bool:
        r = self.pending.get(view)
        return r is not None and r.serial > serial

    def _loop(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.pending)
                view = min(self.pending, key=lambda v: self.pending[v].serial)
                req = self.pending.pop(view)
                self.busy = True
            try:
                self._serve(view, req)
            except Exception as e:  # noqa: BLE001 - a failed extraction is a message; the worker goes on
                self.report(f"{view} surface: {' '.join(str(e).split()) or type(e).__name__}")
            finally:
                with self.cond:
                    self.busy = False

    def _serve(self, view: str, req: Request) -> None:
        req.show(req.job(req.coarse), req.fine <= req.coarse)
        if req.fine <= req.coarse:
            return
        with self.cond:  # wait for the controls to rest
            if self.cond.wait_for(lambda: self._newer(view, req.serial), timeout=REST_S):
                return
        surface = req.job(req.fine)
        with self.cond:
            if self._newer(view, req.serial):
                return
        req.show(surface, True)


def _resolution_controls(gui, coarse: int, fine: int):
    c = gui.add_dropdown("interactive resolution", RESOLUTIONS, initial_value=str(coarse),
                         hint="marching-cubes grid of a mesh update")
    f = gui.add_dropdown("refined resolution", RESOLUTIONS, initial_value=str(fine),
                         hint="the grid once the controls rest")
    return c, f


def _timing(surface: Surface, refined: bool) -> str:
    kind = "refined" if refined else "interactive"
    return (f"{kind} {surface.resolution}^3: {surface.seconds:.2f} s, {surface.queries:,} SDF queries, "
            f"{len(surface.mesh.vertices):,} vertices")


class RunPanel:
    """Training curves of the chosen run; with a checkpoint, the model's surface for the store frame shown in the
    Store tab, OFFSET metres to the right of the ground truth, coloured by its distance to it."""

    def __init__(self, viewer: Viewer, tab, coarse: int, fine: int) -> None:
        self.viewer = viewer
        self.frame: tuple[StoreSource, FrameData] | None = None
        self.compatible: dict[tuple[str, str], str | None] = {}
        gui, runs = viewer.server.gui, viewer.sources.runs
        with tab:
            self.run = gui.add_dropdown("run", [str(r.path) for r in runs], visible=len(runs) > 1)
            self.info = gui.add_markdown("")
            self.plot_box = gui.add_folder("training curves")
            self.plot = None
            self.surface = gui.add_checkbox("model surface", True, hint="the model for the Store tab's frame")
            self.errors = gui.add_checkbox("error colours", True, hint="distance of each vertex to the ground truth")
            self.scale = gui.add_number("error scale (mm)", 20.0, min=1.0, max=500.0, step=1.0)
            self.coarse, self.fine = _resolution_controls(gui, coarse, fine)
            self.legend = gui.add_html(error_legend_html(20.0))
            self.status = gui.add_markdown("")
        g = viewer.guarded("run view")
        self.run.on_update(g(lambda _: (self._curves(), self.request())))
        for control in (self.surface, self.errors, self.scale, self.coarse, self.fine):
            control.on_update(g(lambda _: self.request()))
        self._curves()

    @property
    def source(self) -> RunSource:
        return next(r for r in self.viewer.sources.runs if str(r.path) == self.run.value)

    def _curves(self) -> None:
        run = self.source
        if self.plot is not None:
            self.plot.remove()
            self.plot = None
        ck = run.ckpt
        self.info.content = (f"**{run.name}**: " + (f"checkpoint at step {ck['step']}, {len(ck['subjects'])} subjects"
                                                    if ck else "no readable checkpoint"))
        if run.log is None or not len(run.log["step"]):
            self.info.content += "; no training log"
            return
        terms = loss_terms(run.log)
        values = [np.nan_to_num(run.log[k], nan=np.nan) for k in terms]
        positive = all(np.all(v[np.isfinite(v)] > 0) for v in values)
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
        series = ({"label": "step"},) + tuple({"label": k, "stroke": palette[n % len(palette)], "width": 1.5}
                                              for n, k in enumerate(terms))
        with self.plot_box:
            self.plot = self.viewer.server.gui.add_uplot(
                (run.log["step"], *values), series, title="loss terms (log.csv)", aspect=1.3,
                scales={"x": {"time": False}, "y": {"distr": 3 if positive else 1}})

    def frame_changed(self, source: StoreSource, frame: FrameData) -> None:
        self.frame = (source, frame)
        self.request()

    def _problem(self, run: RunSource, source: StoreSource) -> str | None:
        key = (str(run.path), str(source.path))
        if key not in self.compatible:
            try:
                check_store_compatible(run.ckpt, run.checkpoint, source.path, source.store.attrs)
                self.compatible[key] = None
            except ValueError as e:
                self.compatible[key] = str(e)
        return self.compatible[key]

    def request(self) -> None:
        run = self.source
        if not self.surface.value or run.model is None or self.frame is None:
            self.viewer.draw("/model", [])
            return
        source, frame = self.frame
        problem = self._problem(run, source)
        if problem:
            self.viewer.draw("/model", [])
            self.status.content = f"no model surface: {problem}"
            return
        code, note = run.code(frame.subject)
        jt, errors, vmax = frame.joint_transforms, self.errors.value, float(self.scale.value)
        self.legend.content = error_legend_html(vmax) if errors else ""

        def job(resolution: int) -> Surface:
            return model_surface(run.model, jt, code, resolution)

        def show(surface: Surface, refined: bool) -> None:
            mesh = surface.mesh
            text = [f"step {run.ckpt['step']}, {frame.subject}/{frame.sequence}/{frame.index} ({note})",
                    _timing(surface, refined)]
            if not len(mesh.vertices):
                self.viewer.draw("/model", [])
                self.status.content = "  \n".join(text + ["the model has no surface in this box"])
                return
            if errors:
                gt = (frame.vertices, frame.faces) if frame.vertices is not None else (frame.points, None)
                d = surface_distance(mesh.vertices, *gt)
                colors = np.concatenate([error_colors(d, vmax / 1000), np.full((len(d), 1), 255, np.uint8)], 1)
                node = Node("/model/mesh", "trimesh",
                            {"mesh": trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)})
                text.append(f"distance to the ground truth {'mesh' if gt[1] is not None else 'samples'}: mean "
                            f"{1000 * d.mean():.1f} mm, 95th percentile {1000 * np.percentile(d, 95):.1f} mm")
            else:
                node = Node("/model/mesh", "mesh", {"vertices": mesh.vertices, "faces": mesh.faces,
                                                    "color": MODEL_COLOR})
            title = Node("/model/title", "label", {"text": f"model, step {run.ckpt['step']}",
                                                   "position": title_position(jt)})
            self.viewer.draw("/model", [node, title], position=(OFFSET, 0, 0))
            self.status.content = "  \n".join(text)

        self.viewer.worker.request("run", job, show, int(self.coarse.value), int(self.fine.value))


class PosePanel:
    """A subject (or a blend of two) in a pose edited joint by joint, OFFSET metres left of the ground truth."""

    def __init__(self, viewer: Viewer, tab, runs: list[RunSource], coarse: int, fine: int) -> None:
        self.viewer, self.runs = viewer, runs
        self.surface: Surface | None = None
        gui = viewer.server.gui
        run = runs[0]
        names = run.model.skeleton.names
        self.extra = np.zeros((len(names), 3))
        self.parents = run.model.skeleton.parents
        self.start, self.start_rest, self.start_text = self._rest_pose()
        subjects = list(run.ckpt["subjects"])
        shown = viewer.store.current[1].subject if viewer.store is not None and viewer.store.current else None
        first = shown if shown in subjects else subjects[0]
        with tab:
            self.model = gui.add_dropdown("model", [str(r.checkpoint) for r in runs], visible=len(runs) > 1)
            self.show_pose = gui.add_checkbox("posed model", True)
            self.a = gui.add_dropdown("subject", subjects, initial_value=first, disabled=run.model.codes is None)
            self.b = gui.add_dropdown("blend with", subjects, initial_value=next((s for s in subjects if s != first), first),
                                      disabled=run.model.codes is None)
            self.t = gui.add_slider("blend", 0.0, 1.0, 0.05, 0.0, hint="0: the subject, 1: the other; codes and "
                                    "bone lengths interpolated")
            self.from_store = gui.add_button("start from the store frame", disabled=viewer.store is None,
                                             hint="the pose of the frame shown in the Store tab")
            self.joint = gui.add_dropdown("joint", list(names))
            self.rx = gui.add_slider("rotate x (deg)", -180.0, 180.0, 1.0, 0.0)
            self.ry = gui.add_slider("rotate y (deg)", -180.0, 180.0, 1.0, 0.0)
            self.rz = gui.add_slider("rotate z (deg)", -180.0, 180.0, 1.0, 0.0)
            self.reset_joint = gui.add_button("reset joint")
            self.reset_all = gui.add_button("reset pose")
            self.coarse, self.fine = _resolution_controls(gui, coarse, fine)
            self.export = gui.add_button("export PLY", hint="the refined mesh, canonical frame, to the export folder "
                                         "and as a download")
            self.status = gui.add_markdown(self.start_text)
        self._quiet = False
        g = viewer.guarded("pose")
        for control in (self.show_pose, self.a, self.b, self.t, self.coarse, self.fine):
            control.on_update(g(lambda _: self.update()))
        for k, slider in enumerate((self.rx, self.ry, self.rz)):
            slider.on_update(g(lambda _, k=k, s=slider: self._rotate(k, s.value)))
        self.joint.on_update(g(lambda _: self._sync_sliders()))
        self.reset_joint.on_click(g(lambda _: self._reset(False)))
        self.reset_all.on_click(g(lambda _: self._reset(True)))
        self.from_store.on_click(g(lambda _: self._take_store_frame()))
        self.export.on_click(g(lambda event: self._export(event.client)))
        self.model.on_update(g(lambda _: self.update()))

    @property
    def run(self) -> RunSource:
        return next(r for r in self.runs if str(r.checkpoint) == self.model.value)

    def _rest_pose(self) -> tuple[np.ndarray, np.ndarray, str]:
        """(start pose, its rest joints, text): the Store tab's frame when there is one, else the first subject's
        rest pose from a store that has it (joint transforms [I | rest joints])."""
        store = self.viewer.store
        if store is not None and store.current is not None:
            frame = store.current[1]
            return frame.joint_transforms, self._rest_of(frame.subject, frame.joint_transforms), (
                f"start: {frame.subject}/{frame.sequence}/{frame.index}")
        for source in self.viewer.sources.stores:
            for name in source.store.subjects:
                rest = source.store.read("subject/rest_joints", source.store.subjects.index(name))
                jt = np.tile(np.eye(4, dtype=np.float32), (len(rest), 1, 1))
                jt[:, :3, 3] = rest
                return jt, rest, f"start: the rest pose of {name}"
        raise ValueError("posing needs a store (for a pose to start from): name one on the command line")

    def _rest_of(self, subject: str, jt: np.ndarray) -> np.ndarray:
        """Rest joints of ``subject`` from an open store, else the bones of the pose ``jt`` itself."""
        for source in self.viewer.sources.stores:
            if subject in source.store.subjects:
                return source.store.read("subject/rest_joints", source.store.subjects.index(subject))
        return rest_from_pose(jt, self.parents)

    def _take_store_frame(self) -> None:
        self.start, self.start_rest, self.start_text = self._rest_pose()
        self.update()

    def _sync_sliders(self) -> None:
        j = list(self.joint.options).index(self.joint.value)
        self._quiet = True
        self.rx.value, self.ry.value, self.rz.value = (float(x) for x in self.extra[j])
        self._quiet = False

    def _rotate(self, axis: int, value: float) -> None:
        if self._quiet:
            return
        self.extra[list(self.joint.options).index(self.joint.value), axis] = value
        self.update()

    def _reset(self, everything: bool) -> None:
        if everything:
            self.extra[:] = 0
        else:
            self.extra[list(self.joint.options).index(self.joint.value)] = 0
        self._sync_sliders()
        self.update()

    def pose(self) -> tuple[np.ndarray, object, str]:
        """(joint transforms, code, text) of the current controls."""
        run, t = self.run, float(self.t.value)
        parents = self.parents
        if run.model.codes is None:
            return edit_pose(self.start, parents, self.start_rest, self.extra), None, "single-subject model"
        subjects = run.ckpt["subjects"]
        codes = run.model.codes.weight.detach()
        ca, cb = codes[subjects.index(self.a.value)], codes[subjects.index(self.b.value)]
        ra, rb = (self._rest_of(s, self.start) for s in (self.a.value, self.b.value))
        jt = edit_pose(self.start, parents, blend(ra, rb, t), self.extra)
        who = self.a.value if t == 0 or self.a.value == self.b.value else f"{1 - t:.2f} {self.a.value} + " \
            f"{t:.2f} {self.b.value}"
        return jt, blend(ca, cb, t), who

    def update(self) -> None:
        if not self.show_pose.value:
            self.viewer.draw("/pose", [])
            return
        jt, code, who = self.pose()
        run = self.run
        def job(resolution: int) -> Surface:
            return model_surface(run.model, jt, code, resolution)

        def show(surface: Surface, refined: bool) -> None:
            self.surface = surface if refined else self.surface
            nodes = [Node("/pose/bones", "segments", {"points": skeleton_segments(jt, run.model.skeleton.parents),
                                                      "colors": np.array([20, 20, 20], np.uint8)})]
            if len(surface.mesh.vertices):
                nodes.append(Node("/pose/mesh", "mesh", {"vertices": surface.mesh.vertices,
                                                         "faces": surface.mesh.faces, "color": MODEL_COLOR}))
            self.viewer.draw("/pose", nodes, position=(-OFFSET, 0, 0))
            self.status.content = f"{self.start_text}  \n{who}  \n{_timing(surface, refined)}"

        self.viewer.worker.request("pose", job, show, int(self.coarse.value), int(self.fine.value))

    def _export(self, client) -> None:
        if self.surface is None or not len(self.surface.mesh.vertices):
            raise ValueError("no refined mesh yet: wait for the posed model to be refined, then export")
        self.viewer.export_dir.mkdir(parents=True, exist_ok=True)
        name = f"pose_{self.a.value}_{self.b.value}_t{float(self.t.value):.2f}.ply".replace("/", "_")
        path = self.viewer.export_dir / name
        save_mesh(path, self.surface.mesh)
        self.viewer.console(f"hipnet-view: wrote {path}")
        self.status.content += f"  \nwrote {path}"
        if client is not None:
            client.send_file_download(name, path.read_bytes())

