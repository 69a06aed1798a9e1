"""The demo's record: the share of the learning-rate decay a run completed and its step time over the run."""

from __future__ import annotations

import pytest

from bench.demo_result import decay_done, step_windows
from hipnet.model.config import PRESETS


def provenance(schedule: dict | None, **config) -> dict:
    return {"config": PRESETS["fast"].to_dict() | config, "schedule": schedule}


def test_decay_done_is_one_at_the_plans_end_and_half_at_its_middle():
    fitted = {"planned": 1200, "fitted": True}
    assert decay_done(provenance(fitted), 1200) == 1.0
    assert decay_done(provenance(fitted), 600) == pytest.approx(0.5)  # the cosine's midpoint
    assert decay_done(provenance(fitted), 300) == pytest.approx(0.5 - 0.5 ** 0.5 / 2, abs=1e-4)
    assert decay_done(provenance(None), 1000) == 1.0  # no fitted plan: the config's steps (1,000)
    assert decay_done(provenance(None, lr_schedule="constant"), 1000) is None


def test_step_windows_are_the_mean_step_time_between_log_rows_100_steps_apart():
    rows = [{"step": str(s), "wall_s": str(w)} for s, w in ((10, 1.0), (100, 10.0), (150, 20.0), (200, 30.0),
                                                            (300, 60.0))]
    assert step_windows(rows) == [{"to_step": 100, "step_s": 0.1}, {"to_step": 200, "step_s": 0.2},
                                  {"to_step": 300, "step_s": 0.3}]
