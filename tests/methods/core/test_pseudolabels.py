"""Count-matched box threshold, pseudo-label maps, teacher detections with TTA, option parsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.core.pseudolabels import (
    CANDIDATE_THRESHOLDS,
    count_curve,
    load_detections,
    match_count_threshold,
    pseudo_label_map,
    save_detections,
    teacher_detections,
    tta_views,
)


def test_candidates_are_the_papers_91_values():
    assert len(CANDIDATE_THRESHOLDS) == 91
    assert CANDIDATE_THRESHOLDS[0] == 0.10 and CANDIDATE_THRESHOLDS[-1] == 1.00
    assert CANDIDATE_THRESHOLDS[28] == 0.38
    assert np.allclose(np.diff(CANDIDATE_THRESHOLDS), 0.01)


def test_count_curve_uses_strictly_greater():
    scores = [np.array([0.95, 0.85, 0.45, 0.15]), np.array([0.9, 0.5, 0.35])]
    totals = count_curve(scores, [0.10, 0.15, 0.35, 0.36, 0.90, 1.0])
    assert totals.tolist() == [7, 6, 5, 5, 1, 0]


def test_count_matching_exact_hit_picks_the_lowest_matching_threshold():
    # labeled: 3 and 2 nuclei -> 2.5 per patch -> 5 detections over the 2 unlabeled patches.
    # score > t keeps 7 for t < 0.15, 6 for t in [0.15, 0.35), 5 for t in [0.35, 0.45): first is 0.35.
    scores = [np.array([0.95, 0.85, 0.45, 0.15]), np.array([0.9, 0.5, 0.35])]
    m = match_count_threshold(scores, [3, 2])
    assert m.threshold == 0.35 and m.target_mean == 2.5
    assert m.mean_counts[m.index] == 2.5
    assert len(m.mean_counts) == 91 and m.mean_counts[0] == 3.5


def test_count_matching_equal_distance_tie_goes_to_the_first_candidate():
    # target 2 per patch; the curve jumps from 3 per patch (t < 0.6) to 1 per patch (t in [0.6, 0.8)):
    # both are 1 away. Ties go to the first minimiser in candidate order (ascending -> 0.10).
    scores = [np.array([0.9, 0.6, 0.6]), np.array([0.8, 0.6, 0.6])]
    assert match_count_threshold(scores, [1, 3]).threshold == 0.10
    # the documented rule is "first in the order given": descending candidates give 0.79
    desc = CANDIDATE_THRESHOLDS[::-1]
    assert match_count_threshold(scores, [1, 3], desc).threshold == 0.79


def test_count_matching_ties_are_exact_not_floating_point():
    # labeled mean 4/3; unlabeled means 5/3 (t < 0.3) and 3/3 (t in [0.3, 0.7)): both exactly 1/3 away,
    # which float arithmetic may not see as equal. Exact rule: tie -> the first candidate, 0.10.
    scores = [np.array([0.9, 0.3]), np.array([0.8, 0.3]), np.array([0.7])]
    assert match_count_threshold(scores, [1, 1, 2]).threshold == 0.10


def test_count_matching_needs_both_sides():
    with pytest.raises(ValueError, match="labeled and unlabeled"):
        match_count_threshold([], [3])
    with pytest.raises(ValueError, match="labeled and unlabeled"):
        match_count_threshold([np.array([0.5])], [])


def _det(boxes, scores, value=1.0, m=28):
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32),
        "masks": np.full((len(scores), m, m), value, np.float16),
    }


def test_pseudo_label_map_thresholds_and_paints():
    det = _det([[10, 10, 30, 30], [50, 50, 60, 70], [0, 0, 5, 5]], [0.9, 0.5, 0.45])
    lab = pseudo_label_map(det, (96, 96), box_threshold=0.45)  # 0.45 is not > 0.45
    assert lab.dtype == np.int32 and lab.shape == (96, 96)
    assert sorted(np.unique(lab).tolist()) == [0, 1, 2]
    assert lab[20, 20] == 1 and lab[60, 55] == 2 and lab[2, 2] == 0
    assert 350 <= int((lab == 1).sum()) <= 450  # ~20x20 box filled
    # pixel threshold: masks of probability 0.4 vanish at v_p = 0.5 and stay at v_p = 0.3
    soft = _det([[10, 10, 30, 30]], [0.9], value=0.4)
    assert not pseudo_label_map(soft, (64, 64), box_threshold=0.5, pixel_threshold=0.5).any()
    assert pseudo_label_map(soft, (64, 64), box_threshold=0.5, pixel_threshold=0.3).any()
    assert not pseudo_label_map(det, (96, 96), box_threshold=0.95).any()


def test_detection_cache_round_trip(tmp_path):
    dets = [_det([[1, 2, 3, 4]], [0.7]), _det(np.zeros((0, 4)), [])]
    path = tmp_path / "d.npz"
    save_detections(path, ["a", "b"], dets, "k1")
    ids, back = load_detections(path, "k1")
    assert ids == ["a", "b"] and len(back[1]["scores"]) == 0
    np.testing.assert_array_equal(back[0]["boxes"], dets[0]["boxes"])
    assert load_detections(path, "other") is None


def test_tta_views():
    assert tta_views(False, ("h",), (0.5,)) == [("", 1.0)]
    v = tta_views(True, ("h", "v"), (1.0, 1.5))
    assert v[0] == ("", 1.0) and len(v) == 6 and ("h", 1.5) in v
    with pytest.raises(ValueError, match="flip"):
        tta_views(True, ("x",), (1.0,))


def test_teacher_detections_tta_keeps_boxes_and_averages(synthetic_small):
    from benchmark.profiles import PROFILES
    from methods.core.model import build_model

    profile = PROFILES["smoke"].replace(input_size=128, rpn_post_nms_top_n_test=64, detections_per_img=20,
                                        box_head_dim=64, mask_head_channels=32)
    torch.manual_seed(0)
    model = build_model(profile)
    images = [im for im, _ in synthetic_small[:2]]
    plain = teacher_detections(model, images)
    ident = teacher_detections(model, images, tta=True, tta_flips=(), tta_scales=(1.0,))
    tta = teacher_detections(model, images, tta=True, tta_flips=("h",), tta_scales=(1.0, 1.5))
    assert len(plain) == 2 and plain[0]["masks"].shape[1:] == (28, 28) and len(plain[0]["scores"]) > 0
    for a, b, c in zip(plain, ident, tta):
        np.testing.assert_array_equal(a["scores"], b["scores"])  # identity-only TTA is a no-op
        assert sorted(map(tuple, a["boxes"].tolist())) == sorted(map(tuple, c["boxes"].tolist()))
        assert np.all((c["scores"] >= 0) & (c["scores"] <= 1)) and np.all(np.diff(c["scores"]) <= 0)
    assert not np.allclose(np.sort(plain[0]["scores"]), np.sort(tta[0]["scores"]))


@pytest.fixture(scope="module")
def synthetic_small():
    from benchmark.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(n_images=1, size=256, seed=0)
    r = ds.load(ds.image_names()[0])
    return [(r.image[:128, :128].copy(), r.label[:128, :128].copy()), (r.image[128:, 128:].copy(), r.label[128:, 128:].copy())]


def test_method_option_parsing():
    from methods.bass.method import BassCodeMethod, BassMethod

    m = BassMethod(box_threshold="0.38", weight_decay="1e-4", tta_flips="h", tta_scales="1,1.5")
    c = m.config()
    assert c["box_threshold"] == 0.38 and c["weight_decay"] == 1e-4
    assert c["tta_flips"] == ["h"] and c["tta_scales"] == [1.0, 1.5]
    assert BassMethod().config()["box_threshold"] == "auto" and BassMethod().config()["weight_decay"] is None
    assert BassCodeMethod(weight_decay="profile").config()["weight_decay"] is None
    with pytest.raises(ValueError, match="box_threshold"):
        BassMethod(box_threshold="high")
    with pytest.raises(ValueError, match="no option"):
        BassMethod(gamma=1)
    with pytest.raises(ValueError, match="student_init"):
        BassMethod(student_init="imagenet")
