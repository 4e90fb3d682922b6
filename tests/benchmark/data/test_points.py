"""Points (centroids) and boxes derived from instance maps."""

from __future__ import annotations

import numpy as np

from benchmark.data.points import instance_boxes, instance_points


def test_points_and_boxes():
    lab = np.zeros((20, 30), np.int32)
    lab[2:5, 3:9] = 1  # rows 2..4, cols 3..8
    lab[10:20, 20:30] = 4  # id gap allowed
    pts = instance_points(lab)
    assert pts.dtype == np.float32 and pts.shape == (2, 2)
    np.testing.assert_allclose(pts, [[3.0, 5.5], [14.5, 24.5]])
    boxes = instance_boxes(lab)
    assert boxes.dtype == np.float32 and boxes.shape == (2, 4)
    np.testing.assert_array_equal(boxes, [[3, 2, 9, 5], [20, 10, 30, 20]])  # x1, y1, x2, y2 (exclusive)


def test_empty():
    z = np.zeros((5, 5), np.int32)
    assert instance_points(z).shape == (0, 2)
    assert instance_boxes(z).shape == (0, 4)
