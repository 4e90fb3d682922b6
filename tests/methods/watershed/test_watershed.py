"""The ``watershed`` reference method: contract, fitting, determinism and accuracy on synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.api import Patch, TrainData
from benchmark.data.synthetic import SyntheticDataset
from benchmark.metrics import aji, dice
from methods.watershed.method import WatershedMethod


def _crops(ds: SyntheticDataset, names: list[str]) -> list[Patch]:
    """The four 256x256 quadrants of each 512x512 image, labeled."""
    out = []
    for name in names:
        rec = ds.load(name)
        for y in (0, 256):
            for x in (0, 256):
                out.append(
                    Patch(
                        f"{name}@{y}_{x}",
                        rec.image[y : y + 256, x : x + 256],
                        rec.label[y : y + 256, x : x + 256],
                    )
                )
    return out


@pytest.fixture(scope="module")
def synth():
    ds = SyntheticDataset()
    names = ds.image_names()
    train = _crops(ds, names[:12])  # 48 labeled patches
    test = _crops(ds, names[24:])  # held-out images (the 6:2:2 test share)
    return train, test


def _fit(train, seed=0, unlabeled=(), **options) -> WatershedMethod:
    m = WatershedMethod(**options)
    m.fit(
        TrainData(labeled=train, unlabeled=unlabeled),
        profile=None,
        seed=seed,
        device="cpu",
        workdir=None,
        progress=False,
    )
    return m


@pytest.fixture(scope="module")
def fitted(synth) -> WatershedMethod:
    return _fit(synth[0])


def test_class_attributes_and_registry():
    from benchmark.catalog import get_method

    assert get_method("watershed") is WatershedMethod
    assert WatershedMethod.name == "watershed"
    assert WatershedMethod.description and "\n" not in WatershedMethod.description
    assert WatershedMethod.uses_unlabeled is False
    assert WatershedMethod.deep is False


def test_empty_labeled_raises_clear_error(synth):
    unl = [Patch(p.id, p.image) for p in synth[0][:2]]
    with pytest.raises(ValueError, match="data.labeled is empty"):
        WatershedMethod().fit(TrainData(labeled=[], unlabeled=unl), profile=None, seed=0, device="cpu",
                              workdir=None)


def test_bad_options_and_predict_before_fit():
    with pytest.raises(ValueError, match="no option"):
        WatershedMethod(threshold=3)
    with pytest.raises(ValueError, match="normalize"):
        WatershedMethod(normalize="zscore")
    with pytest.raises(RuntimeError, match="fit"):
        WatershedMethod().predict([np.zeros((8, 8, 3), np.uint8)])


def test_config_reports_fitted_values_only_after_fit(synth, fitted):
    assert "fitted" not in WatershedMethod().config()
    cfg = fitted.config()
    json.dumps(cfg)
    f = cfg["fitted"]
    assert set(f) >= {"threshold", "min_distance", "min_area", "od_floor"}
    assert f["min_distance"] >= 2 and f["min_area"] >= 4
    # the median nucleus radius is estimated from the labeled instances (~4-14 px nuclei)
    assert 4.0 < f["median_radius"] < 10.0
    # a fixed min_distance is used as given
    assert _fit(synth[0][:6], min_distance=7).fitted_["min_distance"] == 7


def test_predict_contract(synth, fitted):
    # the densest held-out patches (some synthetic patches are nearly empty), plus a non-square crop
    dense = sorted(synth[1], key=lambda p: -len(np.unique(p.label)))[:3]
    images = [p.image.copy() for p in dense] + [dense[0].image[:200, :232].copy()]
    originals = [im.copy() for im in images]
    preds = fitted.predict(images)
    assert isinstance(preds, list) and len(preds) == len(images)
    for im, p in zip(images, preds):
        assert p.dtype == np.int32 and p.shape == im.shape[:2]
        assert p.min() == 0 and p.max() > 0
        ids = np.unique(p[p > 0])
        assert np.array_equal(ids, np.arange(1, len(ids) + 1))
    for im, o in zip(images, originals):
        assert np.array_equal(im, o)
    assert fitted.predict([]) == []


def test_blank_images_give_no_instances(fitted):
    white = np.full((256, 256, 3), 255, np.uint8)
    pink = np.empty((256, 256, 3), np.uint8)
    pink[:] = (232, 168, 212)
    noise = np.random.default_rng(0).integers(200, 256, (256, 256, 3), dtype=np.uint8)
    for img in (white, pink, noise):
        (p,) = fitted.predict([img])
        assert p.dtype == np.int32 and p.shape == (256, 256)
        assert not p.any()


def test_deterministic_and_ignores_unlabeled(synth, fitted):
    unl = [Patch(p.id, p.image) for p in synth[1][:4]]
    other = _fit(synth[0], seed=0, unlabeled=unl)
    assert other.fitted_ == fitted.fitted_
    imgs = [p.image for p in synth[1][:4]]
    for a, b in zip(fitted.predict(imgs), other.predict(imgs)):
        assert np.array_equal(a, b)


def test_seed_only_picks_the_fit_subset(synth):
    a = _fit(synth[0], seed=0, max_fit_patches=10)
    b = _fit(synth[0], seed=0, max_fit_patches=10)
    c = _fit(synth[0], seed=1, max_fit_patches=10)
    assert a.fitted_ == b.fitted_
    assert a.fitted_["n_fit_patches"] == 10
    assert a.fitted_["threshold"] != c.fitted_["threshold"]


def test_reasonable_but_imperfect_on_held_out_synthetic(synth, fitted):
    test = synth[1]
    preds = fitted.predict([p.image for p in test])
    score = float(np.mean([aji(p.label, q) for p, q in zip(test, preds)]))
    fg_dice = float(np.mean([dice(p.label, q) for p, q in zip(test, preds)]))
    assert 0.3 < score < 0.85, score
    assert fg_dice > 0.75, fg_dice
    # it learns something: far above "the whole patch is one nucleus" ...
    one = float(np.mean([aji(p.label, np.ones_like(p.label)) for p in test]))
    assert score > one + 0.3, (score, one)
    # ... and the watershed split beats keeping each predicted connected blob whole
    from scipy import ndimage

    blobs = [ndimage.label(q > 0)[0].astype(np.int32) for q in preds]
    merged = float(np.mean([aji(p.label, b) for p, b in zip(test, blobs)]))
    assert score > merged, (score, merged)


def test_fitted_threshold_beats_a_wrong_one(synth, fitted):
    """The fitted threshold matters: forcing one far off it loses a lot of foreground Dice."""
    test = synth[1]
    good = float(np.mean([dice(p.label, q) for p, q in zip(test, fitted.predict([p.image for p in test]))]))
    bad = WatershedMethod()
    bad.fitted_ = dict(fitted.fitted_, threshold=fitted.fitted_["threshold"] + 0.15)
    worse = float(np.mean([dice(p.label, q) for p, q in zip(test, bad.predict([p.image for p in test]))]))
    assert good > worse + 0.1, (good, worse)


def test_passes_the_method_conformance_kit():
    from benchmark.check import check_method

    report = check_method(WatershedMethod)
    assert report.passed, report.format()
