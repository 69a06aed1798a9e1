"""The fixed evaluation of every variant: the same test frames and points, the training curve's points, the final
scores, and the fits of the held-out subjects."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.harness.variants import Budget, depth_sensor


def finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def spaced(n: int, k: int) -> list[int]:
    return sorted({round(t) for t in np.linspace(0, n - 1, min(k, n))})


class Evaluator:
    """The fixed evaluation of every variant: the same frames and points for all."""

    def __init__(self, stores: dict[str, Path], budget: Budget) -> None:
        from hipnet.pipeline.store.reading import Store

        self.budget = budget
        self.test, self.heldout = Store.open(stores["test"]), Store.open(stores["heldout"])
        self.final_frames = spaced(self.test.n_frames, budget.final_frames)
        self.mesh_frames = [self.final_frames[k] for k in spaced(len(self.final_frames), budget.mesh_frames)]
        self.curve_frames = spaced(self.test.n_frames, budget.curve_frames)
        self.curve_set = {i: {kind: (self.test.read(f"eval/{kind}_points", i)[: budget.curve_points],
                                     self.test.read(f"eval/{kind}_occupancy", i)[: budget.curve_points])
                              for kind in ("uniform", "near")} for i in self.curve_frames}

    def sdf_of(self, model, names: list[str], store):
        from hipnet.model.query import model_sdf

        codes = model.codes.weight.detach() if model.codes is not None else None
        jts, subj = store.read("pose/joint_transforms"), store.read("frame/subject")

        def sdf(i: int):
            code = None
            if codes is not None:
                name = store.subjects[int(subj[i])]
                code = codes[names.index(name)] if name in names else codes.mean(0)
            return model_sdf(model, jts[i], code)

        return sdf

    def curve_point(self, model, names: list[str]) -> dict:
        from hipnet.model.evaluate import iou

        sdf_of = self.sdf_of(model, names, self.test)
        scores = {"uniform": [], "near": []}
        for i, sets in self.curve_set.items():
            sdf = sdf_of(i)
            for kind, (points, occupancy) in sets.items():
                scores[kind].append(iou(sdf(points) < 0, occupancy))
        return {f"{k}_miou": 100 * float(np.mean(v)) for k, v in scores.items()}

    def final(self, model, names: list[str]) -> dict:
        from hipnet.model.evaluate import evaluate_store

        b = self.budget
        ev = evaluate_store(self.test, self.sdf_of(model, names, self.test), self.final_frames, self.mesh_frames,
                            b.resolution, b.chamfer_points)
        s = ev.summary(self.test.skeleton.names)
        empty = sum(1 for pred, _ in ev.meshes.values() if len(pred.faces) == 0)
        out = {"uniform_miou": 100 * s["uniform_miou"], "near_miou": 100 * s["near_miou"],
               "per_joint_near_iou": {k: finite(100 * v) for k, v in s["per_joint_near_iou"].items()},
               "chamfer_x1e4": None, "chamfer_mm": None, "normal_consistency": None, "frames": s["frames"],
               "mesh_frames": s.get("mesh_frames", 0), "empty_meshes": empty}
        if not empty:  # an empty extraction has no Chamfer distance: counted, never averaged in as infinity
            out |= {"chamfer_x1e4": s.get("chamfer_l1_x1e4"), "chamfer_mm": s.get("chamfer_mm"),
                    "normal_consistency": s.get("normal_consistency")}
        return out

    def identity(self, model, names: list[str]) -> dict:
        """Subject identity on the final test frames (uniform points): occupancy IoU with the subject's own code
        against the mean code on the same poses, and the spread of body volume across subjects (coefficient of
        variation of the per-subject mean volume; volume = inside fraction x the frame's sampling box) of the
        ground truth, the model with own codes and the model with the mean code, with the per-subject Pearson
        correlation of predicted and true volume."""
        from hipnet.model.evaluate import iou
        from hipnet.model.query import model_sdf
        from hipnet.pipeline.stages.evalpoints import stretched_bbox

        if model.codes is None:
            return {"identity": None}
        codes = model.codes.weight.detach()
        jts, subj = self.test.read("pose/joint_transforms"), self.test.read("frame/subject")
        rows = []
        for i in self.final_frames:
            name = self.test.subjects[int(subj[i])]
            if name not in names:
                continue
            points, inside = self.test.read("eval/uniform_points", i), self.test.read("eval/uniform_occupancy", i)
            lo, hi = stretched_bbox(self.test.read("mesh/vertices", i))
            box = float(np.prod(hi - lo))
            own = model_sdf(model, jts[i], codes[names.index(name)])(points) < 0
            mean = model_sdf(model, jts[i], codes.mean(0))(points) < 0
            rows.append((name, iou(own, inside), iou(mean, inside), box * inside.mean(), box * own.mean(),
                         box * mean.mean()))
        subjects = sorted({r[0] for r in rows})
        vol = np.array([[np.mean([r[k] for r in rows if r[0] == s]) for k in (3, 4, 5)] for s in subjects])

        def cv(v: np.ndarray) -> float:
            return float(v.std() / v.mean())

        return {"identity": {
            "frames": len(rows), "subjects": len(subjects),
            "iou_own_code": 100 * float(np.mean([r[1] for r in rows])),
            "iou_mean_code": 100 * float(np.mean([r[2] for r in rows])),
            "volume_cv_gt": cv(vol[:, 0]), "volume_cv_own_code": cv(vol[:, 1]), "volume_cv_mean_code": cv(vol[:, 2]),
            "volume_corr": float(np.corrcoef(vol[:, 0], vol[:, 1])[0, 1]) if len(subjects) > 2 else None}}

    def fit(self, model) -> dict:
        """Held-out subjects fitted from ``fit_points`` surface points (figure 6): the first frame of each."""
        from hipnet.model.apps import fit_code
        from hipnet.model.fitting import observed_points, score_code

        if model.codes is None:
            return {"fit_1k_uniform_miou": None, "fit_1k_near_miou": None, "fit_note": "no subject codes"}
        frames = self.heldout_frames()
        scores = []
        for i in frames:
            points = observed_points(self.heldout, i, self.budget.fit_points, False, seed=0)
            fit = fit_code(model, points, self.heldout.read("pose/joint_transforms", i), self.budget.fit_iters, 1e-3)
            scores.append(score_code(model, self.heldout, i, fit.code))
        return {"fit_1k_uniform_miou": 100 * float(np.mean([s["uniform_iou"] for s in scores])),
                "fit_1k_near_miou": 100 * float(np.mean([s["near_iou"] for s in scores])), "fit_frames": len(frames)}

    def heldout_frames(self) -> list[int]:
        subj = self.heldout.read("frame/subject")
        return [int(np.flatnonzero(subj == s)[0]) for s in sorted(set(subj.tolist()))]

    def depth_observations(self) -> list[tuple[int, np.ndarray, int]]:
        """(frame, ``fit_points`` points, depth points seen) of one front depth view of each held-out subject's
        first frame: its mesh rendered by the depth stage (the depth1 rig, noise seeded by the frame key) in the
        store's canonical frame, back-projected, then ``fit_points`` of them drawn without replacement (seeded), so
        only the observation differs from the 1k-point fit, not the number of points."""
        if getattr(self, "_depth_obs", None) is None:
            from hipnet.pipeline.runner.depthstores import sensor_rng
            from hipnet.pipeline.stages.depth import render_depth

            sensor = depth_sensor(1, self.budget.tiny)
            faces, obs = self.heldout.read("mesh/faces"), []
            for i in self.heldout_frames():
                view = render_depth(self.heldout.read("mesh/vertices", i), faces, sensor,
                                    sensor_rng(sensor, "heldout", self.heldout.frame_key(i)))
                rng = np.random.default_rng([0, i])
                pick = rng.choice(len(view.points), min(self.budget.fit_points, len(view.points)), replace=False)
                obs.append((i, view.points[np.sort(pick)].astype(np.float32), len(view.points)))
            self._depth_obs = obs
        return self._depth_obs

    def fit_depth(self, model) -> dict:
        """Held-out subjects fitted from one front depth view of their first frame (``depth_observations``): the
        same ``fit_code`` (iterations, learning rate, mean-code start) and scoring as ``fit``."""
        from hipnet.model.apps import fit_code
        from hipnet.model.fitting import score_code

        if model.codes is None:
            return {"fit_depth1_uniform_miou": None, "fit_depth1_near_miou": None}
        scores, seen = [], []
        for i, points, n in self.depth_observations():
            fit = fit_code(model, points, self.heldout.read("pose/joint_transforms", i), self.budget.fit_iters, 1e-3)
            scores.append(score_code(model, self.heldout, i, fit.code))
            seen.append(n)
        return {"fit_depth1_uniform_miou": 100 * float(np.mean([s["uniform_iou"] for s in scores])),
                "fit_depth1_near_miou": 100 * float(np.mean([s["near_iou"] for s in scores])),
                "fit_depth1_points_seen": int(np.mean(seen))}
