import numpy as np
import pytest

from hipnet.pipeline.core.io import npz_bytes, read_npz, write_npz
from hipnet.pipeline.core.skeleton import SMPL22, Skeleton


def test_smpl22_levels_and_descendants():
    levels = SMPL22.levels()
    assert [lvl.tolist() for lvl in levels[:3]] == [[0], [1, 2, 3], [4, 5, 6]]
    assert sorted(np.concatenate(levels).tolist()) == list(range(22))
    assert SMPL22.descendants(SMPL22.index("L_elbow")) == [SMPL22.index("L_wrist")]
    assert Skeleton.from_attrs(SMPL22.to_attrs()) == SMPL22


def test_skeleton_rejects_bad_parents():
    with pytest.raises(ValueError, match="parents must precede"):
        Skeleton(("a", "b"), (-1, 1))


def test_npz_is_byte_deterministic_and_checked(tmp_path):
    a = {"x": np.arange(12, dtype=np.float32).reshape(4, 3), "f": np.zeros((2, 3), np.int32)}
    assert npz_bytes(a) == npz_bytes(dict(reversed(list(a.items()))))
    write_npz(tmp_path / "a.npz", a)
    back = read_npz(tmp_path / "a.npz", {"x": (None, 3)})
    np.testing.assert_array_equal(back["x"], a["x"])
    with pytest.raises(ValueError, match="a.npz.*'x' has shape"):
        read_npz(tmp_path / "a.npz", {"x": (None, 4)})
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: cannot read"):
        read_npz(tmp_path / "bad.npz")
