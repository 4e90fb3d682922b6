"""Tests of benchmark.metrics: hand-counted maps, edge cases, the tie rule, properties, a slow reference."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import linear_sum_assignment

from benchmark.metrics import (
    COUNT_FIELDS,
    InstanceCounts,
    aggregate,
    aji,
    aji_plus,
    dice,
    instance_counts,
    match_instances,
    pq,
    scores_from_counts,
)
from benchmark.metrics import instance as instance_mod

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------------
# Hand-counted maps
# ---------------------------------------------------------------------------------------------------

# Case A (4x4): two true nuclei, each matched by one slightly wrong prediction.
CASE_A_TRUE = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 2, 2],
        [0, 0, 2, 2],
    ]
)
CASE_A_PRED = np.array(
    [
        [1, 1, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 3, 3],
        [0, 3, 3, 3],
    ]
)
# T1 = 4 px; P1 = 3 px, all inside T1      -> I = 3, U = 4 + 3 - 3 = 4, IoU = 3/4
# T2 = 4 px; P3 = 5 px, 4 of them on T2    -> I = 4, U = 4 + 5 - 4 = 5, IoU = 4/5
# Dice = 2 * (3 + 4) / (8 + 8) = 14/16
# AJI = AJI+ = (3 + 4) / (4 + 5) = 7/9 (nothing unpaired)
# PQ: both IoU > 0.5 -> TP 2, FP 0, FN 0; DQ 1, SQ (3/4 + 4/5)/2 = 31/40, PQ 31/40

# Case B (6x6): a merge (P5 covers T1 and T2), a miss (T4), a false positive (P9).
CASE_B_TRUE = np.array(
    [
        [1, 1, 0, 2, 2, 0],
        [1, 1, 0, 2, 2, 0],
        [0, 0, 0, 0, 0, 0],
        [3, 3, 3, 0, 0, 0],
        [3, 3, 3, 0, 4, 0],
        [0, 0, 0, 0, 0, 0],
    ]
)
CASE_B_PRED = np.array(
    [
        [5, 5, 5, 5, 5, 0],
        [5, 5, 5, 5, 5, 0],
        [0, 0, 0, 0, 0, 0],
        [7, 7, 0, 0, 0, 0],
        [7, 7, 0, 0, 0, 9],
        [0, 0, 0, 0, 0, 9],
    ]
)
# Areas: T1 4, T2 4, T3 6, T4 1 (|T| = 15); P5 10, P7 4, P9 2 (|P| = 16).
# Overlaps: T1-P5 I 4, U 4+10-4 = 10 (IoU .4); T2-P5 I 4, U 10 (IoU .4); T3-P7 I 4, U 6+4-4 = 6 (IoU 2/3).
# T4 at (4,4) touches nothing; P9 at (4,5),(5,5) touches nothing.
# Dice = 2 * 12 / (15 + 16) = 24/31
# AJI: T1->P5 (4, 10), T2->P5 (4, 10), T3->P7 (4, 6); unpaired T4 (+1), unpaired P9 (+2)
#      = 12 / (10 + 10 + 6 + 1 + 2) = 12/29
# AJI+: P5 can serve only one of T1/T2: (4, 10) + (4, 6); unpaired T (4) + T4 (1) + P9 (2)
#      = 8 / (10 + 6 + 4 + 1 + 2) = 8/23
# PQ@0.5: only T3-P7 (2/3 > .5): TP 1, FP 2 (P5, P9), FN 3 (T1, T2, T4)
#      DQ = 1 / (1 + 1 + 1.5) = 2/7, SQ = 2/3, PQ = 4/21
# PQ@0.3 (Hungarian): T1|T2-P5 (.4) and T3-P7 (2/3): TP 2, FP 1 (P9), FN 2
#      DQ = 2 / (2 + .5 + 1) = 4/7, SQ = (2/5 + 2/3)/2 = 8/15, PQ = 32/105

# Case C (4x4, no background): one true nucleus, split into two halves.
CASE_C_TRUE = np.ones((4, 4), dtype=np.int32)
CASE_C_PRED = np.array([[1, 1, 2, 2]] * 4, dtype=np.int32)
# T1 16 px; P1 8 px, P2 8 px; each I 8, U 16, IoU 1/2 (complete tie: same I and U).
# Dice = 2 * 16 / 32 = 1
# AJI: T1 -> P1 (lowest id on a complete tie), P2 unpaired: 8 / (16 + 8) = 1/3; AJI+ likewise 1/3.
# PQ@0.5: IoU 1/2 is not > 1/2 -> TP 0, FP 2, FN 1 -> 0.  PQ@0.4: TP 1, FP 1, FN 0:
#      DQ = 1 / 1.5 = 2/3, SQ = 1/2, PQ = 1/3


def test_case_a_counts_and_scores():
    c = instance_counts(CASE_A_TRUE, CASE_A_PRED)
    assert c == InstanceCounts(
        dice_intersection=7, dice_total=16, aji_intersection=7, aji_union=9, ajip_intersection=7,
        ajip_union=9, tp=2, fp=0, fn=0, iou_sum=pytest.approx(0.75 + 0.8), n_true=2, n_pred=2, match_iou=0.5,
    )
    assert dice(CASE_A_TRUE, CASE_A_PRED) == pytest.approx(14 / 16)
    assert aji(CASE_A_TRUE, CASE_A_PRED) == pytest.approx(7 / 9)
    assert aji_plus(CASE_A_TRUE, CASE_A_PRED) == pytest.approx(7 / 9)
    r = pq(CASE_A_TRUE, CASE_A_PRED)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert r.dq == pytest.approx(1.0)
    assert r.sq == pytest.approx(31 / 40)
    assert r.pq == pytest.approx(31 / 40)
    s = scores_from_counts(c)
    assert s == pytest.approx({"dice": 14 / 16, "aji": 7 / 9, "aji_plus": 7 / 9, "dq": 1, "sq": 31 / 40, "pq": 31 / 40})


def test_case_b_merge_miss_false_positive():
    t, p = CASE_B_TRUE, CASE_B_PRED
    assert dice(t, p) == pytest.approx(24 / 31)
    assert aji(t, p) == pytest.approx(12 / 29)
    assert aji_plus(t, p) == pytest.approx(8 / 23)
    r = pq(t, p)
    assert (r.tp, r.fp, r.fn) == (1, 2, 3)
    assert (r.dq, r.sq, r.pq) == pytest.approx((2 / 7, 2 / 3, 4 / 21))
    r3 = pq(t, p, match_iou=0.3)
    assert (r3.tp, r3.fp, r3.fn) == (2, 1, 2)
    assert (r3.dq, r3.sq, r3.pq) == pytest.approx((4 / 7, 8 / 15, 32 / 105))
    c = instance_counts(t, p)
    assert (c.aji_intersection, c.aji_union, c.ajip_intersection, c.ajip_union) == (12, 29, 8, 23)
    assert (c.dice_intersection, c.dice_total, c.n_true, c.n_pred) == (12, 31, 4, 3)
    # AJI lets P5 serve T1 and T2; AJI+ does not
    m = match_instances(t, p, rule="aji")
    assert m.true_ids.tolist() == [1, 2, 3] and m.pred_ids.tolist() == [5, 5, 7]
    mp = match_instances(t, p, rule="aji_plus")
    assert len(set(mp.pred_ids.tolist())) == len(mp.pred_ids) == 2
    mq = match_instances(t, p, rule="pq")
    assert mq.true_ids.tolist() == [3] and mq.pred_ids.tolist() == [7]
    assert mq.iou.tolist() == pytest.approx([2 / 3])


def test_case_c_no_background_and_complete_tie():
    t, p = CASE_C_TRUE, CASE_C_PRED
    assert dice(t, p) == 1.0
    assert aji(t, p) == pytest.approx(1 / 3)
    assert aji_plus(t, p) == pytest.approx(1 / 3)
    assert match_instances(t, p, rule="aji").pred_ids.tolist() == [1]  # complete tie: lowest id
    r = pq(t, p)
    assert (r.tp, r.fp, r.fn, r.pq) == (0, 2, 1, 0.0)  # IoU must be strictly > 0.5
    r4 = pq(t, p, match_iou=0.4)
    assert (r4.tp, r4.fp, r4.fn) == (1, 1, 0)
    assert (r4.dq, r4.sq, r4.pq) == pytest.approx((2 / 3, 1 / 2, 1 / 3))
    # maps without background scored against themselves
    full = np.arange(16).reshape(4, 4) + 1
    expected = {k: 1.0 for k in ("dice", "aji", "aji_plus", "dq", "sq", "pq")}
    assert scores_from_counts(instance_counts(full, full)) == expected


# Tie rule: one true nucleus T (4 px), two predictions with the same IoU 1/4 but different unions.
#   true            pred (a, b = ids)
#   1 1 0 0         a b b b
#   1 1 0 0         0 b b b
# Pa = 1 px inside T:                      I 1, U 4 + 1 - 1 = 4, IoU 1/4
# Pb = 2 px inside T + 4 px outside (6 px): I 2, U 4 + 6 - 2 = 8, IoU 2/8 = 1/4
# I / (U + 1e-6) favours the larger union -> T pairs with Pb:
#   AJI = 2 / (8 + 1 [Pa unpaired]) = 2/9   (pairing with Pa would give 1 / (4 + 6) = 1/10)
TIE_TRUE = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])


@pytest.mark.parametrize("a, b", [(1, 2), (2, 1), (7, 2**31 - 1), (2**31 - 1, 7)])
def test_tie_larger_union_wins(a, b):
    pred = np.array([[a, b, b, b], [0, b, b, b]], dtype=np.int64)
    assert aji(TIE_TRUE, pred) == pytest.approx(2 / 9)
    assert aji_plus(TIE_TRUE, pred) == pytest.approx(2 / 9)
    assert match_instances(TIE_TRUE, pred, rule="aji").pred_ids.tolist() == [b]
    assert match_instances(TIE_TRUE, pred, rule="aji_plus").pred_ids.tolist() == [b]
    c = instance_counts(TIE_TRUE, pred)
    assert (c.aji_intersection, c.aji_union, c.ajip_intersection, c.ajip_union) == (2, 9, 2, 9)


def test_tie_rule_in_hungarian_between_two_matchings():
    # An exact tie in total IoU between two one-to-one matchings; the reference objective
    # Σ I / (U + 1e-6) decides (it equals Σ IoU - 1e-6 · Σ I/U² to first order).
    #   true        pred
    #   0 2 2 0     0 1 2 2
    #   1 1 1 2     2 0 2 2
    #   2 2 0 0     2 2 2 2
    # T1 = (1,0),(1,1),(1,2): 3 px.  T2 = (0,1),(0,2),(1,3),(2,0),(2,1): 5 px (one id, two pieces).
    # P1 = (0,1): 1 px.  P2 = the 9 other non-zero pixels.
    # T1-P2: I 2 ((1,0),(1,2)), U 3 + 9 - 2 = 10, IoU 1/5      T1-P1: no overlap
    # T2-P1: I 1 ((0,1)),       U 5 + 1 - 1 = 5,  IoU 1/5
    # T2-P2: I 4 ((0,2),(1,3),(2,0),(2,1)), U 5 + 9 - 4 = 10, IoU 2/5
    # Ma = {T2-P2}: ΣIoU 2/5, score 4/(10+ε) = 0.4 - 4e-8
    # Mb = {T1-P2, T2-P1}: ΣIoU 1/5 + 1/5 = 2/5 (tie), score 2/(10+ε) + 1/(5+ε) = 0.4 - 6e-8
    # -> Ma: AJI+ = 4 / (10 + 3 [T1] + 1 [P1]) = 4/14   (Mb would give (2 + 1) / (10 + 5) = 1/5)
    true = np.array([[0, 2, 2, 0], [1, 1, 1, 2], [2, 2, 0, 0]])
    pred = np.array([[0, 1, 2, 2], [2, 0, 2, 2], [2, 2, 2, 2]])
    assert aji_plus(true, pred) == pytest.approx(4 / 14)
    m = match_instances(true, pred, rule="aji_plus")
    assert (m.true_ids.tolist(), m.pred_ids.tolist()) == ([2], [2])
    # AJI: T1 -> P2 (its only overlap), T2 -> P2 (2/5 > 1/5); P1 unpaired:
    #   (2 + 4) / (10 + 10 + 1) = 6/21
    assert aji(true, pred) == pytest.approx(6 / 21)
    assert slow_reference(true, pred)["ajip"] == (4, 14)


# ---------------------------------------------------------------------------------------------------
# Edge cases and input validation
# ---------------------------------------------------------------------------------------------------

ALL_METRICS = ("dice", "aji", "aji_plus", "dq", "sq", "pq")


@pytest.mark.parametrize("shape", [(4, 4), (0, 0), (3,), (2, 3, 4)])
def test_both_empty_is_one(shape):
    z = np.zeros(shape, dtype=np.int32)
    assert scores_from_counts(instance_counts(z, z)) == {k: 1.0 for k in ALL_METRICS}
    assert dice(z, z) == aji(z, z) == aji_plus(z, z) == pq(z, z).pq == 1.0
    r = pq(z, z)
    assert (r.dq, r.sq, r.tp, r.fp, r.fn) == (1.0, 1.0, 0, 0, 0)


@pytest.mark.parametrize("which", ["true", "pred"])
def test_exactly_one_empty_is_zero(which):
    z = np.zeros_like(CASE_B_TRUE)
    t, p = (z, CASE_B_PRED) if which == "true" else (CASE_B_TRUE, z)
    assert scores_from_counts(instance_counts(t, p)) == {k: 0.0 for k in ALL_METRICS}
    assert dice(t, p) == aji(t, p) == aji_plus(t, p) == pq(t, p).pq == 0.0
    c = instance_counts(t, p)
    # the whole non-empty map goes to the AJI union
    assert c.aji_union == c.ajip_union == (16 if which == "true" else 15)
    assert (c.tp, c.fp, c.fn) == ((0, 3, 0) if which == "true" else (0, 0, 4))


def test_no_overlap_at_all():
    t = np.array([[1, 1, 0, 0]])
    p = np.array([[0, 0, 3, 3]])
    c = instance_counts(t, p)
    # nothing paired: AJI = 0 / (2 + 2)
    assert (c.aji_intersection, c.aji_union, c.ajip_union, c.tp, c.fp, c.fn) == (0, 4, 4, 0, 1, 1)
    s = scores_from_counts(c)
    assert s == {k: 0.0 for k in ALL_METRICS}


def _relabel(x, mapping, dtype):
    out = np.zeros(x.shape, dtype=dtype)
    for old, new in mapping.items():
        out[x == old] = new
    return out


@pytest.mark.parametrize("dtype, big", [(np.int32, 2**31 - 1), (np.int64, 2**62 + 3), (np.uint64, 2**64 - 1),
                                         (np.uint32, 2**32 - 1), (np.uint16, 65535)])
def test_gaps_and_huge_ids(dtype, big):
    t = _relabel(CASE_B_TRUE, {1: big, 2: 5, 3: 1000, 4: 77}, dtype)
    p = _relabel(CASE_B_PRED, {5: 3, 7: big, 9: 1}, dtype)
    assert t.max() == big and p.max() == big
    assert instance_counts(t, p) == instance_counts(CASE_B_TRUE, CASE_B_PRED)
    assert match_instances(t, p, rule="pq").pred_ids.tolist() == [big]


def test_small_dtypes_and_bool():
    assert instance_counts(CASE_A_TRUE.astype(np.uint8), CASE_A_PRED.astype(np.int8)) == instance_counts(
        CASE_A_TRUE, CASE_A_PRED
    )
    t = CASE_A_TRUE > 0
    p = CASE_A_PRED > 0
    # bool maps: one instance each. I 7, |T| 8, |P| 8, U 9 -> AJI 7/9, IoU 7/9 > .5
    assert dice(t, p) == pytest.approx(14 / 16)
    assert aji(t, p) == pytest.approx(7 / 9)
    assert pq(t, p).sq == pytest.approx(7 / 9)
    # nested lists are accepted too
    assert dice(CASE_A_TRUE.tolist(), CASE_A_PRED.tolist()) == pytest.approx(14 / 16)


@pytest.mark.parametrize("fn", [dice, aji, aji_plus, pq, instance_counts, match_instances])
def test_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError, match=r"true \(4, 4\) and pred \(4, 5\)"):
        fn(np.zeros((4, 4), int), np.zeros((4, 5), int))


@pytest.mark.parametrize("fn", [dice, aji, aji_plus, pq, instance_counts])
def test_non_integer_and_negative_rejected(fn):
    with pytest.raises(ValueError, match="pred must be an integer instance map.*float64"):
        fn(CASE_A_TRUE, CASE_A_PRED.astype(np.float64))
    with pytest.raises(ValueError, match="true must be an integer instance map"):
        fn(CASE_A_TRUE.astype(np.float32), CASE_A_PRED)
    neg = CASE_A_TRUE.copy()
    neg[0, 0] = -1
    with pytest.raises(ValueError, match="true must not contain negative ids, found -1"):
        fn(neg, CASE_A_PRED)


@pytest.mark.parametrize("m", [-0.1, 1.5, float("nan")])
def test_bad_match_iou(m):
    with pytest.raises(ValueError, match="match_iou"):
        pq(CASE_A_TRUE, CASE_A_PRED, match_iou=m)
    with pytest.raises(ValueError, match="match_iou"):
        instance_counts(CASE_A_TRUE, CASE_A_PRED, match_iou=m)


def test_bad_rule():
    with pytest.raises(ValueError, match="rule"):
        match_instances(CASE_A_TRUE, CASE_A_PRED, rule="dice")


def test_metrics_module_does_not_import_torch():
    code = (
        "import sys; import benchmark.metrics, benchmark.stats, benchmark.evaluation; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO)})


# ---------------------------------------------------------------------------------------------------
# Aggregation modes (hand values from cases A and B)
# ---------------------------------------------------------------------------------------------------


def test_aggregate_modes_hand_values():
    ca = instance_counts(CASE_A_TRUE, CASE_A_PRED)
    cb = instance_counts(CASE_B_TRUE, CASE_B_PRED)
    mean = aggregate([ca, cb], mode="mean")
    assert mean["n_images"] == 2
    assert mean["dice"] == pytest.approx((14 / 16 + 24 / 31) / 2)
    assert mean["aji"] == pytest.approx((7 / 9 + 12 / 29) / 2)
    assert mean["aji_plus"] == pytest.approx((7 / 9 + 8 / 23) / 2)
    assert mean["dq"] == pytest.approx((1 + 2 / 7) / 2)
    assert mean["sq"] == pytest.approx((31 / 40 + 2 / 3) / 2)
    assert mean["pq"] == pytest.approx((31 / 40 + 4 / 21) / 2)  # mean of PQs, not mean DQ * mean SQ
    agg = aggregate([ca, cb], mode="aggregated")
    # Dice: 2 (7 + 12) / (16 + 31) = 38/47; AJI: (7 + 12) / (9 + 29) = 1/2; AJI+: (7 + 8) / (9 + 23) = 15/32
    # PQ: TP 3, FP 2, FN 3 -> DQ 3 / 5.5 = 6/11; ΣIoU = 3/4 + 4/5 + 2/3 = 133/60; SQ = 133/180
    assert agg["dice"] == pytest.approx(38 / 47)
    assert agg["aji"] == pytest.approx(0.5)
    assert agg["aji_plus"] == pytest.approx(15 / 32)
    assert agg["dq"] == pytest.approx(6 / 11)
    assert agg["sq"] == pytest.approx(133 / 180)
    assert agg["pq"] == pytest.approx(float(Fraction(6, 11) * Fraction(133, 180)))
    assert aggregate([ca, cb]) == mean  # default mode is "mean"


def test_aggregate_empty_images():
    z = np.zeros((4, 4), int)
    ce = instance_counts(z, z)
    ca = instance_counts(CASE_A_TRUE, CASE_A_PRED)
    # mean: the empty/empty image scores 1.0 and counts; aggregated: it adds nothing to the sums
    assert aggregate([ca, ce], "mean")["aji"] == pytest.approx((7 / 9 + 1) / 2)
    assert aggregate([ca, ce], "aggregated")["aji"] == pytest.approx(7 / 9)
    assert aggregate([ce, ce], "aggregated") == {**{k: 1.0 for k in ALL_METRICS}, "n_images": 2}
    # an image with only a missed nucleus: mean 0 for it; aggregated adds its area to the union
    cm = instance_counts(CASE_A_TRUE, z)
    assert aggregate([ca, cm], "aggregated")["aji"] == pytest.approx(7 / (9 + 8))
    # SQ with no TP anywhere but some instances -> 0
    assert aggregate([cm], "aggregated")["sq"] == 0.0


def test_aggregate_errors():
    ca = instance_counts(CASE_A_TRUE, CASE_A_PRED)
    with pytest.raises(ValueError, match="mode"):
        aggregate([ca], mode="median")
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
    with pytest.raises(ValueError, match="match_iou"):
        aggregate([ca, instance_counts(CASE_A_TRUE, CASE_A_PRED, match_iou=0.3)])


def test_counts_are_frozen_and_plain_python():
    c = instance_counts(CASE_B_TRUE, CASE_B_PRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.tp = 3  # type: ignore[misc]
    for f in COUNT_FIELDS:
        assert type(getattr(c, f)) in (int, float)


# ---------------------------------------------------------------------------------------------------
# Slow reference (literal HoVer-Net-style: dense pairwise matrices, one mask per instance)
# ---------------------------------------------------------------------------------------------------


def slow_reference(true, pred, match_iou=0.5):
    """Returns dict with dice, aji (num, den), ajip (num, den), tp, fp, fn, iou_sum, hungarian optimum."""
    true = np.asarray(true)
    pred = np.asarray(pred)
    t_ids = [i for i in np.unique(true) if i != 0]
    p_ids = [i for i in np.unique(pred) if i != 0]
    t_area = np.array([np.sum(true == i) for i in t_ids], dtype=float)
    p_area = np.array([np.sum(pred == j) for j in p_ids], dtype=float)
    inter = np.zeros((len(t_ids), len(p_ids)))
    for a, i in enumerate(t_ids):
        for b, j in enumerate(p_ids):
            inter[a, b] = np.sum((true == i) & (pred == j))
    union = t_area[:, None] + p_area[None, :] - inter
    out = {
        "dice_intersection": int(np.sum((true > 0) & (pred > 0))),
        "dice_total": int(np.sum(true > 0) + np.sum(pred > 0)),
    }
    score = np.where(inter > 0, inter / (union + 1e-6), 0.0)

    def aji_from(rows, cols):
        num = inter[rows, cols].sum()
        den = union[rows, cols].sum()
        den += t_area[np.setdiff1d(np.arange(len(t_ids)), rows)].sum()
        den += p_area[np.setdiff1d(np.arange(len(p_ids)), cols)].sum()
        return int(num), int(den)

    if len(t_ids) and len(p_ids):
        best = np.argmax(score, axis=1)
        rows = np.nonzero(score.max(axis=1) > 0)[0]
        out["aji"] = aji_from(rows, best[rows])
        r, c = linear_sum_assignment(-score)
        keep = score[r, c] > 0
        out["ajip"] = aji_from(r[keep], c[keep])
        iou = inter / union
        if match_iou >= 0.5:
            paired = iou[iou > match_iou]
            out["hung_opt"] = None
        else:
            r, c = linear_sum_assignment(-iou)
            out["hung_opt"] = float(iou[r, c].sum())
            paired = iou[r, c][iou[r, c] > match_iou]
        out["tp"] = len(paired)
        out["iou_sum"] = float(paired.sum())
    else:
        e = (0, int(t_area.sum() + p_area.sum()))
        out.update(aji=e, ajip=e, tp=0, iou_sum=0.0, hung_opt=0.0)
    out["fp"] = len(p_ids) - out["tp"]
    out["fn"] = len(t_ids) - out["tp"]
    return out


def random_map_pair(seed, size=48, n=12):
    """Discs on a grid; pred = shifted/resized discs with misses, splits and merges, gappy ids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    true = np.zeros((size, size), np.int64)
    pred = np.zeros((size, size), np.int64)
    next_id = 1
    for k in range(1, n + 1):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(2, 7)
        true[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
        u = rng.random()
        if u < 0.1:
            continue  # miss
        cy2, cx2, r2 = cy + rng.normal(0, 1), cx + rng.normal(0, 1), r * rng.uniform(0.7, 1.3)
        disc = (yy - cy2) ** 2 + (xx - cx2) ** 2 <= r2 * r2
        if u < 0.25:  # split
            pred[disc & (xx < cx2)] = next_id
            pred[disc & (xx >= cx2)] = next_id + 1
            next_id += 2
        elif u < 0.35 and next_id > 1:  # merge with the previous prediction
            pred[disc] = next_id - 1
        else:
            pred[disc] = next_id
            next_id += 1
    ids = np.zeros(next_id + 1, np.int64)
    ids[1:] = rng.choice(np.arange(1, 10**6), next_id, replace=False)
    return true, ids[pred]


def _check_against_reference(true, pred, match_iou=0.5):
    ref = slow_reference(true, pred, match_iou)
    c = instance_counts(true, pred, match_iou=match_iou)
    assert (c.dice_intersection, c.dice_total) == (ref["dice_intersection"], ref["dice_total"])
    assert (c.aji_intersection, c.aji_union) == ref["aji"]
    assert (c.ajip_intersection, c.ajip_union) == ref["ajip"]
    if match_iou >= 0.5:
        assert (c.tp, c.fp, c.fn) == (ref["tp"], ref["fp"], ref["fn"])
        assert c.iou_sum == pytest.approx(ref["iou_sum"], abs=1e-9)
    elif match_iou == 0.0:
        # every Hungarian pair with IoU > 0 counts: ΣIoU must be the optimum (TP may differ on ties)
        assert c.iou_sum == pytest.approx(ref["hung_opt"], abs=1e-9)
    # the wrappers agree with the one-pass counts
    s = scores_from_counts(c)
    assert dice(true, pred) == pytest.approx(s["dice"], abs=1e-12)
    assert aji(true, pred) == pytest.approx(s["aji"], abs=1e-12)
    assert aji_plus(true, pred) == pytest.approx(s["aji_plus"], abs=1e-12)
    assert pq(true, pred, match_iou).pq == pytest.approx(s["pq"], abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_slow_reference_on_random_maps(seed):
    true, pred = random_map_pair(seed)
    _check_against_reference(true, pred, 0.5)
    _check_against_reference(true, pred, 0.0)
    _check_against_reference(true, pred, 0.75)


@pytest.mark.parametrize("seed", range(4))
def test_sparse_table_path_equals_dense(seed, monkeypatch):
    true, pred = random_map_pair(seed, size=64, n=20)
    dense = instance_counts(true, pred, match_iou=0.3)
    monkeypatch.setattr(instance_mod, "_DENSE_TABLE_MAX", 0)
    monkeypatch.setattr(instance_mod, "_DENSE_TABLE_CAP", 0)
    assert instance_counts(true, pred, match_iou=0.3) == dense


def test_many_tiny_instances_use_sparse_path():
    # every pixel its own instance (n = 4096, dense table would be 16.7M cells): pred = permuted ids
    rng = np.random.default_rng(0)
    true = np.arange(1, 64 * 64 + 1).reshape(64, 64)
    perm = rng.permutation(64 * 64) + 10
    pred = perm[true - 1]
    assert scores_from_counts(instance_counts(true, pred)) == {k: 1.0 for k in ALL_METRICS}
    # (the dense table would need n_true * n_pred cells: far above both limits, so np.unique runs)
    assert 4096 * 2048 > max(instance_mod._DENSE_TABLE_MAX, min(4 * 4096, instance_mod._DENSE_TABLE_CAP))
    # dominoes: pred instance k covers true pixels 2k-1 and 2k (n_pred = 2048, 8.4M cells -> sparse path)
    # each pair: I 1, U 2, IoU 1/2 (not > 1/2: TP 0). AJI: every true pairs with its domino:
    # 4096 / (4096 * 2) = 1/2. AJI+: one true per domino: 2048 / (2048 * 2 + 2048 unpaired) = 1/3
    domino = (true + 1) // 2 + 7
    c = instance_counts(true, domino)
    assert (c.tp, c.fp, c.fn, c.dice_intersection) == (0, 2048, 4096, 4096)
    assert (c.aji_intersection, c.aji_union) == (4096, 8192)
    assert (c.ajip_intersection, c.ajip_union) == (2048, 6144)


# ---------------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------------

small_maps = hnp.arrays(
    dtype=np.int64,
    shape=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    elements=st.integers(0, 5),
)


@st.composite
def map_pairs(draw):
    t = draw(small_maps)
    p = draw(hnp.arrays(dtype=np.int64, shape=t.shape, elements=st.integers(0, 5)))
    return t, p


PROP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROP
@given(small_maps)
def test_map_against_itself_is_one(t):
    assert scores_from_counts(instance_counts(t, t)) == {k: 1.0 for k in ALL_METRICS}


def _relabel_with(x, new_ids):
    return np.where(x > 0, np.array([0, *new_ids], dtype=np.int64)[x], 0)


def _has_complete_tie(t, p):
    """Some true instance overlaps two predictions with identical (I, U): AJI's choice then follows ids."""
    for i in np.unique(t[t > 0]):
        seen = set()
        for j in np.unique(p[(t == i) & (p > 0)]):
            inter = int(np.sum((t == i) & (p == j)))
            union = int(np.sum((t == i) | (p == j)))
            if (inter, union) in seen:
                return True
            seen.add((inter, union))
    return False


def _ajip_objective(t, p):
    m = match_instances(t, p, rule="aji_plus")
    return float(np.sum(m.intersection / (m.union + 1e-6)))


@PROP
@given(map_pairs(), st.randoms(use_true_random=False))
def test_relabelling_ids_changes_nothing(pair, rnd):
    t, p = pair
    # order-preserving relabelling (gaps, huge ids): identical counts, ties included
    t2 = _relabel_with(t, sorted(rnd.sample(range(1, 2**40), 5)))
    p2 = _relabel_with(p, sorted(rnd.sample(range(1, 2**31 - 1), 5)))
    assert instance_counts(t2, p2) == instance_counts(t, p)
    assert instance_counts(t2, p2, match_iou=0.2) == instance_counts(t, p, match_iou=0.2)
    # arbitrary permutation of ids: everything but tie-breaking is invariant. On a complete tie (a
    # true instance overlapping two predictions with the same I and U) the reference picks the lowest
    # pred id, so AJI may then legitimately change; the AJI+ objective (optimal Σ score) may not.
    t3 = _relabel_with(t, rnd.sample(range(1, 2**40), 5))
    p3 = _relabel_with(p, rnd.sample(range(1, 2**31 - 1), 5))
    c, c3 = instance_counts(t, p), instance_counts(t3, p3)
    keys = ("dice_intersection", "dice_total", "tp", "fp", "fn", "n_true", "n_pred")
    assert [getattr(c3, k) for k in keys] == [getattr(c, k) for k in keys]
    assert c3.iou_sum == pytest.approx(c.iou_sum, abs=1e-12)
    assert _ajip_objective(t3, p3) == pytest.approx(_ajip_objective(t, p), abs=1e-12)
    if not _has_complete_tie(t, p):
        assert (c3.aji_intersection, c3.aji_union) == (c.aji_intersection, c.aji_union)


@PROP
@given(map_pairs(), st.sampled_from([0.0, 0.25, 0.5, 0.7]))
def test_pairings_are_valid(pair, m):
    t, p = pair
    mp = match_instances(t, p, rule="aji_plus")
    assert len(set(mp.true_ids.tolist())) == len(mp.true_ids)  # one-to-one
    assert len(set(mp.pred_ids.tolist())) == len(mp.pred_ids)
    assert np.all(mp.intersection > 0)
    ma = match_instances(t, p, rule="aji")
    assert len(set(ma.true_ids.tolist())) == len(ma.true_ids)  # one prediction per true instance
    mq = match_instances(t, p, rule="pq", match_iou=m)
    assert len(set(mq.pred_ids.tolist())) == len(mq.pred_ids)
    assert len(set(mq.true_ids.tolist())) == len(mq.true_ids)
    assert np.all(mq.iou > m)
    c = instance_counts(t, p, match_iou=m)
    assert c.tp == len(mq.true_ids) and c.iou_sum == pytest.approx(float(mq.iou.sum()))
    assert c.ajip_intersection == int(mp.intersection.sum())
    assert c.aji_intersection == int(ma.intersection.sum())
    for v in scores_from_counts(c).values():
        assert 0.0 <= v <= 1.0


@PROP
@given(map_pairs())
def test_agrees_with_slow_reference_property(pair):
    t, p = pair
    _check_against_reference(t, p, 0.5)
    _check_against_reference(t, p, 0.0)


@PROP
@given(map_pairs())
def test_dice_depends_on_foreground_only(pair):
    t, p = pair
    assert dice(t, p) == dice((t > 0).astype(np.int8), (p > 0).astype(np.int8))
    assert math.isclose(dice(t, p), dice(p, t))
