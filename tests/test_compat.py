"""Store/checkpoint compatibility: what differs between two skeletons, said in one line, and the schema version."""

from __future__ import annotations

import pytest

from hipnet.model.compat import check_store_compatible, skeleton_difference
from hipnet.pipeline.core.skeleton import SMPL22

BASE = SMPL22.to_attrs()


def _edited(**changes):
    return {"names": changes.get("names", list(BASE["names"])), "parents": changes.get("parents", list(BASE["parents"]))}


def test_the_same_skeleton_has_no_difference():
    assert skeleton_difference(BASE, _edited()) is None


def test_names_say_which_joints_are_missing_or_new():
    names = list(BASE["names"])
    names[names.index("head")] = "skull"
    assert skeleton_difference(BASE, _edited(names=names)) == \
        "joint names differ: only the checkpoint has head; only the store has skull"
    fewer = _edited(names=list(BASE["names"])[:-2], parents=list(BASE["parents"])[:-2])
    assert skeleton_difference(BASE, fewer) == \
        "joint names differ: 22 vs 20 joints; only the checkpoint has L_wrist, R_wrist"


def test_order_says_the_first_position_that_differs():
    names = list(BASE["names"])
    names[4], names[5] = names[5], names[4]
    assert skeleton_difference(BASE, _edited(names=names)) == \
        "joint order differs from position 4: the checkpoint has L_knee, the store R_knee"


def test_parents_say_which_joints_moved():
    parents = list(BASE["parents"])
    parents[13], parents[14] = 6, 3  # the collars hang from spine2 and spine1 instead of spine3
    assert skeleton_difference(BASE, _edited(parents=parents)) == \
        "parents differ: L_collar (checkpoint spine3, store spine2), R_collar (checkpoint spine3, store spine1)"


def test_check_names_the_store_the_checkpoint_and_both_versions():
    ckpt = {"skeleton": BASE, "schema_version": 1}
    check_store_compatible(ckpt, "run/ckpt.pt", "test.zarr", {"skeleton": BASE, "schema_version": 1})
    with pytest.raises(ValueError) as e:
        check_store_compatible(ckpt, "run/ckpt.pt", "test.zarr", {"skeleton": BASE, "schema_version": 2})
    assert str(e.value).startswith("test.zarr: store schema_version 2 differs from checkpoint run/ckpt.pt's "
                                   "schema_version 1")
    names = list(BASE["names"])
    names[1], names[2] = names[2], names[1]
    with pytest.raises(ValueError, match=r"^test.zarr: skeleton differs from checkpoint run/ckpt.pt's: joint order "
                                         r"differs from position 1: the checkpoint has L_hip, the store R_hip$"):
        check_store_compatible(ckpt, "run/ckpt.pt", "test.zarr", {"skeleton": _edited(names=names), "schema_version": 1})
