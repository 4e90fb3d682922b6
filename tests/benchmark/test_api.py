"""benchmark.api: the data a method's fit receives."""

import numpy as np
import pytest

from benchmark.api import Patch, TrainData


def _patch(pid: str, labeled: bool, points=None) -> Patch:
    img = np.zeros((8, 8, 3), np.uint8)
    label = np.zeros((8, 8), np.int32) if labeled else None
    return Patch(id=pid, image=img, label=label, points=points)


def test_require_returns_labeled_patches_and_unlabeled_list():
    data = TrainData(labeled=[_patch("a", True), _patch("b", True)], unlabeled=(_patch("u", False),))
    labeled, unlabeled = data.require("m")
    assert [p.id for p in labeled] == ["a", "b"] and [p.id for p in unlabeled] == ["u"]
    assert isinstance(unlabeled, list)


def test_require_without_labels_names_the_method():
    with pytest.raises(ValueError, match="my-method: no labeled patches"):
        TrainData(labeled=[]).require("my-method")


def test_require_weak_labels_names_the_patch_and_the_need():
    pts = np.array([[1.0, 2.0]])
    ok = TrainData(labeled=[_patch("a", True)], unlabeled=[_patch("u1", False, pts)])
    assert len(ok.require("m", "points")[1]) == 1
    bad = TrainData(labeled=[_patch("a", True)], unlabeled=[_patch("u1", False, pts), _patch("u2", False)])
    with pytest.raises(ValueError, match="'u2' has no points"):
        bad.require("m", "points")
    with pytest.raises(ValueError, match="unknown need"):
        ok.require("m", "scribbles")
