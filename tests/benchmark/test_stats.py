"""Tests of benchmark.stats against scipy on known vectors and hand-computed corrections."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as sps

from benchmark.stats import (
    Comparison,
    PairedTestResult,
    adjust_pvalues,
    bootstrap_ci,
    compare_images,
    compare_to_reference,
    direction_marker,
    image_bootstrap,
    image_permutation_test,
    image_sums,
    paired_test,
    significance_marker,
    unit_image,
)

# per-image AJI of two methods on 12 images (no ties among |A - B|, so scipy's p is exact and fast)
_RNG = np.random.default_rng(42)
A = _RNG.uniform(0.5, 0.8, 12)
B = A - _RNG.normal(0.02, 0.03, 12)


# ---------------------------------------------------------------------------------------------------
# paired_test
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_wilcoxon_matches_scipy(alternative):
    r = paired_test(A, B, alternative=alternative)
    ref = sps.wilcoxon(A, B, alternative=alternative)
    assert r.test == "wilcoxon"
    assert r.statistic == pytest.approx(float(ref.statistic))
    assert r.p_value == pytest.approx(float(ref.pvalue))
    assert r.n == 12
    assert r.mean_diff == pytest.approx(float(np.mean(A - B)))
    assert r.note == ""


def test_wilcoxon_known_exact_values():
    # all 7 differences positive, distinct: W = 0, exact two-sided p = 2 / 2**7 = 0.015625
    a = np.arange(1, 8) / 10
    r = paired_test(a, np.zeros(7))
    assert r.statistic == 0.0
    assert r.p_value == pytest.approx(2 / 2**7)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_ttest_matches_scipy(alternative):
    r = paired_test(A, B, test="ttest", alternative=alternative)
    ref = sps.ttest_rel(A, B, alternative=alternative)
    assert r.test == "ttest"
    assert r.statistic == pytest.approx(float(ref.statistic))
    assert r.p_value == pytest.approx(float(ref.pvalue))
    # hand check of t: mean(d) / (sd(d) / sqrt(n))
    d = A - B
    assert r.statistic == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(d.size)))


@pytest.mark.parametrize("test", ["wilcoxon", "ttest"])
def test_identical_methods(test):
    r = paired_test(A, A.copy(), test=test)
    assert r == PairedTestResult(statistic=0.0, p_value=1.0, n=12, test=test, mean_diff=0.0,
                                 note="identical: all differences are zero")


def test_too_few_pairs_wilcoxon():
    a = [0.5, 0.6, 0.7, 0.8, 0.9]
    b = [0.4, 0.4, 0.4, 0.4, 0.4]
    r = paired_test(a, b)
    assert "n<6: too few pairs" in r.note
    assert r.p_value == pytest.approx(float(sps.wilcoxon(a, b).pvalue))
    assert r.p_value == pytest.approx(2 / 2**5)  # the smallest attainable two-sided p for n = 5
    assert r.n == 5


def test_ties_noted():
    a = np.array([0.3, 0.5, 0.7, 0.2, 0.9, 0.4, 0.8])
    b = a - np.array([0.1, 0.1, 0.2, -0.3, 0.4, 0.5, 0.6])  # |d| = 0.1 twice (up to fp)
    r = paired_test(a, b)
    assert r.p_value == pytest.approx(float(sps.wilcoxon(a, b).pvalue))
    if len(np.unique(np.abs(a - b))) < 7:
        assert "ties" in r.note


def test_zero_differences_dropped_and_counted_for_n6():
    # 7 pairs but one zero difference: 6 non-zero -> no n<6 note, exact p = 2 / 2**6
    a = np.array([1, 2, 3, 4, 0, 6, 7], float)
    r = paired_test(a, np.zeros(7))
    assert "1 zero difference(s) dropped" in r.note
    assert "n<6" not in r.note
    assert r.p_value == pytest.approx(float(sps.wilcoxon(a, np.zeros(7)).pvalue))
    # only 4 non-zero differences among 7 pairs -> n<6 note
    r = paired_test([1, 2, 3, 4, 0, 0, 0], np.zeros(7))
    assert "n<6: too few pairs" in r.note


def test_nans_dropped_pairwise():
    a = A.copy()
    b = B.copy()
    a[2] = np.nan
    b[5] = np.nan
    r = paired_test(a, b)
    keep = np.ones(12, bool)
    keep[[2, 5]] = False
    ref = sps.wilcoxon(A[keep], B[keep])
    assert r.n == 10
    assert r.p_value == pytest.approx(float(ref.pvalue))
    assert "dropped 2 pair(s) with NaN" in r.note
    assert r.mean_diff == pytest.approx(float(np.mean(A[keep] - B[keep])))


@pytest.mark.parametrize("test", ["wilcoxon", "ttest"])
def test_all_nan_gives_nan_result(test):
    r = paired_test([np.nan, 1.0], [0.5, np.nan], test=test)
    assert r.n == 0 and math.isnan(r.p_value) and math.isnan(r.mean_diff)
    assert "no pairs" in r.note and "dropped 2" in r.note


def test_ttest_degenerate():
    r = paired_test([0.5], [0.4], test="ttest")
    assert r.n == 1 and math.isnan(r.p_value) and "n<2" in r.note
    r = paired_test([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], test="ttest")  # constant difference 0.1 (up to fp)
    d = np.array([0.5, 0.6, 0.7]) - np.array([0.4, 0.5, 0.6])
    if np.all(d == d[0]):
        assert r.statistic == math.inf and r.p_value == 0.0 and "zero variance" in r.note
    assert "n<6" in r.note
    r = paired_test([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], test="ttest", alternative="greater")
    assert r.statistic == -math.inf and r.p_value == 1.0


def test_paired_test_errors():
    with pytest.raises(ValueError, match="same length.*3 and 4"):
        paired_test([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="test must be"):
        paired_test(A, B, test="sign")
    with pytest.raises(ValueError, match="alternative"):
        paired_test(A, B, alternative="bigger")
    with pytest.raises(ValueError, match="one-dimensional"):
        paired_test(np.ones((2, 3)), np.ones((2, 3)))


def test_result_is_frozen():
    r = paired_test(A, B)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.p_value = 0.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------
# markers and corrections
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, marker",
    [(0.0, "†"), (0.0009, "†"), (0.001, "‡"), (0.01, "‡"), (0.0499, "‡"), (0.05, ""), (0.7, ""),
     (float("nan"), "")],
)
def test_significance_marker(p, marker):
    assert significance_marker(p) == marker


def test_holm_hand_values():
    # sorted: .005 (x4), .01 (x3), .03 (x2), .04 (x1) -> .02, .03, .06, .04 -> running max .02 .03 .06 .06
    p = [0.01, 0.04, 0.03, 0.005]
    assert adjust_pvalues(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # sorted .01 (x3), .04 (x2), .045 (x1) -> .03, .08, .045 -> running max .03 .08 .08
    assert adjust_pvalues([0.04, 0.01, 0.045], "holm") == pytest.approx([0.08, 0.03, 0.08])
    # capped at 1: .5 x2 = 1, .6 -> max(1, .6) = 1
    assert adjust_pvalues([0.5, 0.6], "holm") == pytest.approx([1.0, 1.0])


def test_bh_hand_values():
    # m/j * p: 4/1*.005 = .02, 4/2*.01 = .02, 4/3*.03 = .04, 4/4*.04 = .04 -> running min from the top
    p = [0.01, 0.04, 0.03, 0.005]
    assert adjust_pvalues(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # 3/1*.01 = .03, 3/2*.04 = .06, 3/3*.045 = .045 -> min from the top: .03, .045, .045
    assert adjust_pvalues([0.04, 0.01, 0.045], "bh") == pytest.approx([0.045, 0.03, 0.045])
    # 2/1*.5 = 1, 2/2*.6 = .6 -> .6, .6
    assert adjust_pvalues([0.5, 0.6], "bh") == pytest.approx([0.6, 0.6])


def test_adjust_nan_none_and_errors():
    out = adjust_pvalues([0.01, np.nan, 0.04], "holm")  # NaN kept, m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert adjust_pvalues([0.01, 0.04], None) == pytest.approx([0.01, 0.04])
    assert adjust_pvalues([], "bh").size == 0
    with pytest.raises(ValueError, match="method"):
        adjust_pvalues([0.1], "bonferroni")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([0.1, 1.2], "holm")


def test_adjust_properties_random():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.2, 30)
    holm = adjust_pvalues(p, "holm")
    bh = adjust_pvalues(p, "bh")
    assert np.all(holm >= p - 1e-15) and np.all(bh >= p - 1e-15)
    assert np.all(bh <= holm + 1e-15)  # BH is never more conservative than Holm
    order = np.argsort(p)
    assert np.all(np.diff(holm[order]) >= -1e-15) and np.all(np.diff(bh[order]) >= -1e-15)


# ---------------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------------


def test_bootstrap_seeded_and_sane():
    rng = np.random.default_rng(0)
    v = rng.normal(0.6, 0.1, 400)
    lo, hi = bootstrap_ci(v, n_boot=4000, seed=3)
    assert (lo, hi) == bootstrap_ci(v, n_boot=4000, seed=3)
    assert (lo, hi) != bootstrap_ci(v, n_boot=4000, seed=4)
    assert lo < v.mean() < hi
    # normal approximation: half width ≈ 1.96 sd / sqrt(n)
    half = 1.96 * v.std(ddof=1) / math.sqrt(v.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    lo90, hi90 = bootstrap_ci(v, n_boot=4000, ci=0.9, seed=3)
    assert lo <= lo90 and hi90 <= hi


def test_bootstrap_edge_cases():
    assert bootstrap_ci([0.5] * 7, n_boot=100) == (0.5, 0.5)
    assert bootstrap_ci([0.3], n_boot=100) == (0.3, 0.3)
    lo, hi = bootstrap_ci([np.nan, np.nan])
    assert math.isnan(lo) and math.isnan(hi)
    assert bootstrap_ci([0.2, np.nan, 0.4], n_boot=500) == bootstrap_ci([0.2, 0.4], n_boot=500)
    with pytest.raises(ValueError, match="ci"):
        bootstrap_ci([0.1, 0.2], ci=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([0.1, 0.2], n_boot=0)


# ---------------------------------------------------------------------------------------------------
# compare_to_reference
# ---------------------------------------------------------------------------------------------------


def test_compare_to_reference():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.5, 0.7, 40)
    values = {"bass": ref, "worse": ref - 0.05 - rng.uniform(0, 0.01, 40), "same": ref.copy(),
              "noise": ref + rng.normal(0, 0.01, 40)}
    rows = compare_to_reference(values, reference="bass")
    assert [r.method for r in rows] == ["worse", "same", "noise"]
    assert all(isinstance(r, Comparison) and r.reference == "bass" for r in rows)
    raw = [r.result.p_value for r in rows]
    assert [r.p_adjusted for r in rows] == pytest.approx(adjust_pvalues(raw, "holm").tolist())
    worse, same, _ = rows
    assert worse.marker == "†" and worse.result.mean_diff < 0
    assert same.result.p_value == 1.0 and same.marker == ""
    assert worse.result.p_value == pytest.approx(float(sps.wilcoxon(values["worse"], ref).pvalue))
    unadjusted = compare_to_reference(values, reference="bass", adjust=None, test="ttest")
    assert [r.p_adjusted for r in unadjusted] == pytest.approx([r.result.p_value for r in unadjusted])
    with pytest.raises(ValueError, match="reference"):
        compare_to_reference(values, reference="missing")


# ------------------------------------------------------------------------------ image-level inference


def test_unit_image_and_image_sums_hand_case():
    assert unit_image("a@0_128") == "a" and unit_image("whole") == "whole" and unit_image("x@y@0_0") == "x@y"
    S, C, names = image_sums([[1.0, 2.0, 3.0], [0.0, 1.0, 1.0]], ["a", "b", "a"])
    assert names == ["a", "b"]
    assert S.tolist() == [[4.0, 2.0], [1.0, 1.0]] and C.tolist() == [2.0, 1.0]


def test_permutation_exact_hand_case():
    # T = (1, 2, 3): the 8 sign flips give |sum| in {6, 4, 2, 0, 0, 2, 4, 6}; |obs| = 6 -> p = 2/8
    assert image_permutation_test([[1.0, 2.0, 3.0]], [1, 1, 1]) == pytest.approx(0.25)
    # 6 images all in one direction: the smallest possible p is 2 / 2**6 = 1/32 > 0.001
    assert image_permutation_test([[0.1] * 6], [49] * 6) == pytest.approx(1 / 32)
    assert image_permutation_test([[0.0, 0.0]], [1, 1]) == 1.0


def test_permutation_monte_carlo_is_seeded():
    rng = np.random.default_rng(3)
    S = rng.normal(0.05, 0.1, size=(1, 20))  # 20 images: Monte Carlo
    p1, p2 = image_permutation_test(S, np.ones(20), seed=1), image_permutation_test(S, np.ones(20), seed=1)
    assert p1 == p2 and 0 < p1 <= 1
    # a one-sample t-test gives a close p on a near-normal sample
    assert p1 == pytest.approx(sps.ttest_1samp(S[0], 0).pvalue, abs=0.05)


def test_image_bootstrap_reproducible_and_resamples_whole_images():
    S = np.array([[2.0, -1.0, 4.0, 0.5, 1.0, -0.2, 3.0, 0.0]])
    C = np.array([2.0, 1.0, 2.0, 1.0, 1.0, 1.0, 3.0, 1.0])
    a = image_bootstrap(S, C, n_boot=2000, seed=7)
    assert a == image_bootstrap(S, C, n_boot=2000, seed=7)
    assert a != image_bootstrap(S, C, n_boot=2000, seed=8)
    # every resample is a ratio of image sums: Δ* lies within the per-image means [-1, 2]
    assert -1.0 <= a[0] < S.sum() / C.sum() < a[1] <= 2.0
    # with all images identical the interval collapses onto the image mean
    assert image_bootstrap([[1.0, 1.0]], [2, 2], n_boot=50) == pytest.approx((0.5, 0.5))


def test_image_bootstrap_resamples_seeds_too():
    # same images, seeds that disagree: the interval must cover the spread of the seeds
    S = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    low, high = image_bootstrap(S, np.ones(3), n_boot=4000, seed=0)
    assert low == pytest.approx(-1.0) and high == pytest.approx(1.0)
    one_seed = image_bootstrap(S.mean(axis=0, keepdims=True), np.ones(3), n_boot=100)
    assert one_seed == pytest.approx((0.0, 0.0))


def _patchwise_but_not_imagewise():
    """6 images x 49 patches: 5 images +0.01 per patch, one image -0.10 (with tiny jitter)."""
    rng = np.random.default_rng(0)
    units = [f"im{i}@{r}_0" for i in range(6) for r in range(49)]
    diff = np.concatenate([np.full(49, 0.01)] * 5 + [np.full(49, -0.10)]) + rng.uniform(0, 1e-4, 294)
    ref = np.full(294, 0.5)
    return ref + diff, ref, units


def test_patch_wilcoxon_significant_but_image_ci_contains_zero_gives_no_marker():
    a, b, units = _patchwise_but_not_imagewise()
    patch = compare_images(a[None], b[None], units, test="wilcoxon-patch")
    assert patch.p_value < 0.001 and direction_marker(patch.delta, patch.p_value) == "†"
    default = compare_images(a[None], b[None], units)
    assert default.n_images == 6 and default.n_units == 294 and default.n_seeds == 1
    assert default.ci_low < 0 < default.ci_high
    assert default.p_value > 0.05 and direction_marker(default.delta, default.p_value) == ""


def test_compare_images_delta_and_notes():
    a = np.array([[0.6, 0.7, 0.8], [0.5, 0.6, 0.7]])
    b = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    res = compare_images(a, b, ["x@0_0", "x@0_1", "y"])
    assert res.delta == pytest.approx(np.mean(a - b))
    assert res.n_images == 2 and res.n_seeds == 2 and "almost no power" in res.note
    with pytest.raises(ValueError, match="pair up"):
        compare_images(a, b[:, :2], ["x", "y", "z"])
    with pytest.raises(ValueError, match="permutation"):
        compare_images(a, b, ["x", "y", "z"], test="ttest")


@pytest.mark.parametrize("delta,p,marker", [
    (-0.1, 0.0005, "†"), (-0.1, 0.01, "‡"), (0.1, 0.0005, "⇑"), (0.1, 0.01, "↑"),
    (0.1, 0.05, ""), (0.0, 0.0, ""), (0.1, float("nan"), ""), (None, 0.01, ""),
])
def test_direction_marker(delta, p, marker):
    assert direction_marker(delta, p) == marker
