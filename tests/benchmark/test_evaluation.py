"""Tests of benchmark.evaluation: evaluator life cycle, per-image table, summaries from stored tables."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation import TABLE_COLUMNS, InstanceEvaluator, summarize
from benchmark.metrics import aggregate, instance_counts

# Same hand cases as test_metrics.py (arithmetic there).
# Case A: Dice 14/16, AJI 7/9 (I 7, U 9), PQ: TP 2, ΣIoU 3/4 + 4/5.
A_TRUE = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]], dtype=np.int32)
A_PRED = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 3, 3], [0, 3, 3, 3]], dtype=np.int32)
# Case B: Dice 24/31, AJI 12/29, AJI+ 8/23, PQ: TP 1, FP 2, FN 3, ΣIoU 2/3.
B_TRUE = np.array(
    [[1, 1, 0, 2, 2, 0], [1, 1, 0, 2, 2, 0], [0, 0, 0, 0, 0, 0],
     [3, 3, 3, 0, 0, 0], [3, 3, 3, 0, 4, 0], [0, 0, 0, 0, 0, 0]], dtype=np.int32)
B_PRED = np.array(
    [[5, 5, 5, 5, 5, 0], [5, 5, 5, 5, 5, 0], [0, 0, 0, 0, 0, 0],
     [7, 7, 0, 0, 0, 0], [7, 7, 0, 0, 0, 9], [0, 0, 0, 0, 0, 9]], dtype=np.int32)


def _filled() -> InstanceEvaluator:
    ev = InstanceEvaluator(protocol="patch")
    ev.process(["a"], [A_TRUE], [A_PRED])
    ev.process(["b"], [B_TRUE], [B_PRED])
    return ev


def test_evaluate_both_aggregations_hand_values():
    out = _filled().evaluate()
    assert out["protocol"] == "patch" and out["n_images"] == 2 and out["match_iou"] == 0.5
    assert out["mean"]["aji"] == pytest.approx((7 / 9 + 12 / 29) / 2)
    assert out["mean"]["dice"] == pytest.approx((14 / 16 + 24 / 31) / 2)
    assert out["aggregated"]["aji"] == pytest.approx(19 / 38)  # (7 + 12) / (9 + 29)
    assert out["aggregated"]["aji_plus"] == pytest.approx(15 / 32)  # (7 + 8) / (9 + 23)
    assert out["aggregated"]["dice"] == pytest.approx(38 / 47)
    assert out["aggregated"]["dq"] == pytest.approx(6 / 11)  # TP 3 / (3 + 2/2 + 3/2)
    assert set(out["mean"]) == {"dice", "aji", "aji_plus", "dq", "sq", "pq"}
    counts = [instance_counts(A_TRUE, A_PRED), instance_counts(B_TRUE, B_PRED)]
    for mode in ("mean", "aggregated"):
        expected = aggregate(counts, mode)
        expected.pop("n_images")
        assert out[mode] == expected


def test_table_rows_and_columns():
    df = _filled().table()
    assert list(df.columns) == list(TABLE_COLUMNS)
    assert df["image_id"].tolist() == ["a", "b"]
    assert df.loc[1, "aji"] == pytest.approx(12 / 29)
    assert df.loc[1, "aji_plus"] == pytest.approx(8 / 23)
    assert df.loc[0, ["aji_intersection", "aji_union", "tp", "fp", "fn"]].tolist() == [7, 9, 2, 0, 0]
    assert df.loc[1, ["dice_intersection", "dice_total", "n_true", "n_pred"]].tolist() == [12, 31, 4, 3]
    assert df["tp"].dtype == np.int64 and df["iou_sum"].dtype == np.float64
    assert (df["protocol"] == "patch").all()


@pytest.mark.parametrize("mode", ["mean", "aggregated"])
def test_summarize_recomputes_from_stored_table(mode):
    ev = _filled()
    ev.process(["empty"], [np.zeros((3, 3), np.int32)], [np.zeros((3, 3), np.int32)])
    buf = io.StringIO()
    ev.table().to_csv(buf, index=False)
    buf.seek(0)
    stored = pd.read_csv(buf)
    s = summarize(stored, mode=mode)
    out = ev.evaluate()
    assert s["n_images"] == 3
    assert {k: s[k] for k in out[mode]} == pytest.approx(out[mode])
    # score columns are ignored: only counts matter
    stored["aji"] = 0.0
    assert summarize(stored, mode=mode) == s
    # a subset (e.g. one image's patches) is summarised by filtering rows
    assert summarize(stored[stored.image_id == "a"], mode)["aji"] == pytest.approx(7 / 9)


def test_summarize_default_mode_and_errors():
    df = _filled().table()
    assert summarize(df) == summarize(df, "mean")
    with pytest.raises(ValueError, match="count columns.*aji_union"):
        summarize(df.drop(columns=["aji_union"]))
    with pytest.raises(ValueError, match="at least one row"):
        summarize(df.iloc[:0])
    with pytest.raises(ValueError, match="mode"):
        summarize(df, mode="median")
    assert summarize(df.drop(columns=["match_iou"])) == summarize(df)  # defaults to 0.5


def test_reset_and_batches_and_protocol():
    ev = InstanceEvaluator(protocol="image", match_iou=0.3)
    stack_t = np.stack([A_TRUE, A_TRUE])
    stack_p = np.stack([A_PRED, np.zeros_like(A_PRED)])
    ev.process([10, 11], stack_t, stack_p)  # an (N, H, W) array works; ids are stored as str
    assert len(ev) == 2
    out = ev.evaluate()
    assert out["protocol"] == "image" and out["match_iou"] == 0.3
    assert out["mean"]["aji"] == pytest.approx((7 / 9 + 0.0) / 2)
    assert ev.table()["image_id"].tolist() == ["10", "11"]
    assert (ev.table()["match_iou"] == 0.3).all()
    ev.reset()
    assert len(ev) == 0 and ev.table().empty
    ev.process(["10"], [A_TRUE], [A_PRED])  # ids may be reused after reset
    assert ev.evaluate()["n_images"] == 1


def test_process_errors_leave_state_unchanged():
    ev = _filled()
    with pytest.raises(ValueError, match="same length"):
        ev.process(["c", "d"], [A_TRUE], [A_PRED])
    with pytest.raises(ValueError, match="already processed or repeated.*'a'"):
        ev.process(["a"], [A_TRUE], [A_PRED])
    with pytest.raises(ValueError, match="repeated"):
        ev.process(["z", "z"], [A_TRUE, A_TRUE], [A_PRED, A_PRED])
    with pytest.raises(ValueError, match=r"image 'bad'.*true \(4, 4\) and pred \(6, 6\)"):
        ev.process(["ok", "bad"], [A_TRUE, A_TRUE], [A_PRED, B_PRED])
    assert len(ev) == 2 and ev.table()["image_id"].tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="protocol"):
        InstanceEvaluator(protocol="tile")
    with pytest.raises(ValueError, match="before any image"):
        InstanceEvaluator().evaluate()


def test_evaluate_patches_table_and_empty():
    from types import SimpleNamespace

    from benchmark.evaluation import TABLE_COLUMNS, evaluate_patches

    gt = np.zeros((8, 8), np.int32)
    gt[2:5, 2:5] = 1
    patches = [SimpleNamespace(id="v@0_0", label=gt), SimpleNamespace(id="v@0_128", label=gt)]
    table = evaluate_patches(patches, [gt, np.zeros_like(gt)])
    assert list(table.columns) == list(TABLE_COLUMNS) and table.aji.tolist() == [1.0, 0.0]
    empty = evaluate_patches([], [])
    assert len(empty) == 0 and list(empty.columns) == list(TABLE_COLUMNS)
    with pytest.raises(ValueError, match="1 predictions for 2 patches"):
        evaluate_patches(patches, [gt])
