"""The one connected-components routine (pipeline.core.components) on meshes whose parts are known by construction."""

import numpy as np
import pytest

from hipnet.pipeline.core.components import (
    connected_components,
    count_components,
    largest_component,
    largest_submesh,
)
from hipnet.pipeline.stages.geodesics import check_single_shell

OCTA_FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def octahedron(centre, r):
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float) * r + centre
    return v, OCTA_FACES.copy()


def icosphere():
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=1)
    return np.asarray(m.vertices), np.asarray(m.faces)


def test_one_piece_mesh_is_one_component():
    v, f = icosphere()
    c = connected_components(len(v), f)
    assert c.count == count_components(len(v), f) == 1
    assert (c.labels == 0).all()
    assert largest_component(len(v), f).all()
    sv, sf = largest_submesh(v, f)
    assert sv is v and sf is f
    check_single_shell(v, f, "icosphere")


def test_two_piece_mesh_splits_and_keeps_the_larger_part():
    small_v, small_f = octahedron(np.zeros(3), 0.1)  # 6 vertices, first in the vertex list
    big_v, big_f = icosphere()  # 42 vertices
    big_v = big_v + np.array([3.0, 0.0, 0.0])
    v = np.concatenate([small_v, [[9.0, 9.0, 9.0]], big_v])  # vertex 6: used by no face
    f = np.concatenate([small_f, big_f + len(small_v) + 1])
    c = connected_components(len(v), f)
    assert c.count == count_components(len(v), f) == 2
    np.testing.assert_array_equal(c.labels[:6], 0)  # numbered by first vertex
    assert c.labels[6] == -1
    np.testing.assert_array_equal(c.labels[7:], 1)
    keep = largest_component(len(v), f)
    np.testing.assert_array_equal(keep, np.arange(len(v)) >= 7)
    sv, sf = largest_submesh(v, f)
    np.testing.assert_array_equal(sv, big_v)
    np.testing.assert_array_equal(sf, big_f)
    assert sf.dtype == np.int32
    with pytest.raises(ValueError, match="two: mesh has 2 connected components"):
        check_single_shell(v, f, "two")


def test_parts_touching_at_one_vertex_are_one_component_and_no_faces_is_none():
    a, fa = octahedron(np.zeros(3), 1.0)
    b, fb = octahedron(np.array([2.0, 0.0, 0.0]), 1.0)  # b's vertex 1 is a's vertex 0
    v = np.concatenate([a, b])
    assert count_components(len(v), np.concatenate([fa, fb + 6])) == 2
    fb_shared = np.where(fb == 1, 0, fb + 6)
    assert count_components(len(v), np.concatenate([fa, fb_shared])) == 1
    empty = np.zeros((0, 3), dtype=np.int64)
    assert count_components(4, empty) == 0 and not largest_component(4, empty).any()
