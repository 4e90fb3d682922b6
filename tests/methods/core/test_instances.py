"""detections_to_instance_map: the painting rule, on hand-made detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.core.instances import detections_to_instance_map


def _box_mask(shape, y0, y1, x0, x1, value=1.0):
    m = np.zeros(shape, np.float32)
    m[y0:y1, x0:x1] = value
    return m


def test_single_detection_is_kept_as_id_1():
    # the BASS code writes the top detection with id 0 (dropped); we must not
    m = _box_mask((20, 20), 2, 8, 2, 8)[None]
    out = detections_to_instance_map(m, [0.9])
    assert out.dtype == np.int32
    assert (out == 1).sum() == 36
    assert set(np.unique(out)) == {0, 1}


def test_higher_score_wins_overlap_and_gets_id_1():
    a = _box_mask((20, 20), 0, 10, 0, 10)   # low score
    b = _box_mask((20, 20), 5, 15, 5, 15)   # high score
    out = detections_to_instance_map(np.stack([a, b]), np.array([0.6, 0.95]))
    assert out[7, 7] == 1                    # overlap pixel belongs to the best detection
    assert (out == 1).sum() == 100           # b fully visible
    assert (out == 2).sum() == 100 - 25      # a lost the overlap
    # reversed input order gives the same map
    out2 = detections_to_instance_map(np.stack([b, a]), np.array([0.95, 0.6]))
    np.testing.assert_array_equal(out, out2)


def test_score_and_mask_thresholds():
    soft = _box_mask((10, 10), 0, 4, 0, 4, 0.7) + _box_mask((10, 10), 0, 4, 4, 8, 0.3)
    out = detections_to_instance_map(soft[None], [0.8], mask_thresh=0.5)
    assert (out == 1).sum() == 16
    out = detections_to_instance_map(soft[None], [0.8], mask_thresh=0.25)
    assert (out == 1).sum() == 32
    out = detections_to_instance_map(soft[None], [0.4], score_thresh=0.5)
    assert out.max() == 0
    out = detections_to_instance_map(soft[None], [0.4], score_thresh=0.3)
    assert out.max() == 1


def test_min_area_drops_occluded_remnants_and_relabels():
    big = _box_mask((20, 20), 0, 10, 0, 10)
    small = _box_mask((20, 20), 0, 10, 0, 11)  # lower score, only a 10x1 sliver stays visible
    other = _box_mask((20, 20), 15, 19, 15, 19)
    out = detections_to_instance_map(np.stack([big, small, other]), [0.9, 0.8, 0.7], min_area=11)
    assert sorted(np.unique(out)) == [0, 1, 2]  # sliver (10 px) removed, ids stay consecutive
    assert (out == 2).sum() == 16
    assert out[5, 10] == 0
    out = detections_to_instance_map(np.stack([big, small, other]), [0.9, 0.8, 0.7], min_area=5)
    assert out[5, 10] == 2 and (out == 3).sum() == 16


def test_dilate_option_grows_masks():
    m = _box_mask((20, 20), 8, 10, 8, 10)[None]
    assert (detections_to_instance_map(m, [0.9], min_area=1) > 0).sum() == 4
    assert (detections_to_instance_map(m, [0.9], min_area=1, dilate=1) > 0).sum() == 4 + 8


def test_accepts_torch_n1hw_and_empty():
    m = torch.zeros((2, 1, 12, 12))
    m[0, 0, :5, :5] = 0.9
    m[1, 0, 6:, 6:] = 0.9
    out = detections_to_instance_map(m, torch.tensor([0.7, 0.8]))
    assert out[0, 0] == 2 and out[11, 11] == 1
    empty = detections_to_instance_map(torch.zeros((0, 1, 12, 12)), torch.zeros(0))
    assert empty.shape == (12, 12) and empty.max() == 0
    empty = detections_to_instance_map(np.zeros((0,)), np.zeros(0), shape=(7, 9))
    assert empty.shape == (7, 9)


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="scores"):
        detections_to_instance_map(np.zeros((2, 5, 5)), [0.9])
