"""Dataset evaluation in the reset / process / evaluate style (like detectron2's ``DatasetEvaluator``).

The evaluator is unit-agnostic: feed it 256×256 test patches (paper protocol, ``protocol="patch"``)
or stitched whole images (``protocol="image"``); the protocol is only recorded. Per-unit raw counts are
kept, so every aggregate can be recomputed later from :meth:`InstanceEvaluator.table` with
:func:`summarize` -- this is what reports should use::

    ev = InstanceEvaluator(protocol="patch")
    for batch in loader:
        ev.process(batch.ids, batch.trues, batch.preds)
    result = ev.evaluate()            # {"mean": {...}, "aggregated": {...}, "protocol": "patch", ...}
    ev.table().to_csv("per_image.csv", index=False)
    summarize(pd.read_csv("per_image.csv"), mode="aggregated")

Two aggregations (see :func:`benchmark.metrics.aggregate`): ``"mean"`` (default; per-image mean,
HoVer-Net convention) and ``"aggregated"`` (Σ counts over images, BASS/tiseg "m" metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from benchmark.metrics import (
    AGGREGATION_MODES,
    COUNT_FIELDS,
    METRIC_NAMES,
    InstanceCounts,
    aggregate,
    instance_counts,
    scores_from_counts,
)

__all__ = ["PROTOCOLS", "TABLE_COLUMNS", "InstanceEvaluator", "evaluate_patches", "summarize"]

#: Accepted ``protocol`` values: metrics per test patch, or per stitched whole image.
PROTOCOLS = ("patch", "image")

_INT_FIELDS = tuple(f for f in COUNT_FIELDS if f not in ("iou_sum", "match_iou"))

#: Columns of :meth:`InstanceEvaluator.table`, in order.
TABLE_COLUMNS = ("image_id", *METRIC_NAMES, *COUNT_FIELDS, "protocol")


class InstanceEvaluator:
    """Accumulates per-image instance counts and reports Dice, AJI, AJI+, DQ, SQ, PQ.

    Args:
        protocol: ``"patch"`` (metrics per test patch, the paper's protocol) or ``"image"`` (metrics
            per stitched whole image). Recorded in outputs only; nothing is cropped or stitched here.
        match_iou: PQ matching threshold (``IoU > match_iou``).
    """

    def __init__(self, protocol: str = "patch", match_iou: float = 0.5) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self.match_iou = float(match_iou)
        self._ids: list[str] = []
        self._counts: list[InstanceCounts] = []
        self._seen: set[str] = set()

    def reset(self) -> None:
        """Forget every processed image."""
        self._ids = []
        self._counts = []
        self._seen = set()

    def __len__(self) -> int:
        return len(self._ids)

    def process(self, image_ids: Sequence[Any], trues: Sequence[Any], preds: Sequence[Any]) -> None:
        """Score a batch of images.

        Args:
            image_ids: one identifier per image (stored as ``str``; must be unique over the whole run).
            trues: ground-truth integer instance maps (a sequence, or an ``(N, H, W)`` array).
            preds: predicted integer instance maps, same length and per-image shapes as ``trues``.

        Raises:
            ValueError: lengths differ, an id repeats, or a map pair is invalid (see
                :func:`benchmark.metrics.instance_counts`). A failing batch adds nothing.
        """
        ids = [str(i) for i in image_ids]
        if not (len(ids) == len(trues) == len(preds)):
            raise ValueError(
                f"image_ids, trues and preds must have the same length, got {len(ids)}, {len(trues)} "
                f"and {len(preds)}"
            )
        dup = sorted({i for i in ids if i in self._seen or ids.count(i) > 1})
        if dup:
            raise ValueError(f"image ids already processed or repeated: {dup[:5]}")
        new: list[InstanceCounts] = []
        for image_id, t, p in zip(ids, trues, preds):
            try:
                new.append(instance_counts(t, p, match_iou=self.match_iou))
            except ValueError as err:
                raise ValueError(f"image {image_id!r}: {err}") from err
        self._ids.extend(ids)
        self._counts.extend(new)
        self._seen.update(ids)

    def evaluate(self) -> dict[str, Any]:
        """Dataset scores in both aggregations.

        Returns:
            ``{"protocol": str, "match_iou": float, "n_images": int,
            "mean": {metric: float}, "aggregated": {metric: float}}`` with metrics
            ``dice, aji, aji_plus, dq, sq, pq``. ``"mean"`` is the default reporting mode.

        Raises:
            ValueError: nothing was processed.
        """
        if not self._counts:
            raise ValueError("evaluate() called before any image was processed")
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "match_iou": self.match_iou,
            "n_images": len(self._counts),
        }
        for mode in AGGREGATION_MODES:
            scores = aggregate(self._counts, mode=mode)
            scores.pop("n_images")
            out[mode] = scores
        return out

    def table(self) -> pd.DataFrame:
        """One row per processed image, in processing order.

        Returns:
            DataFrame with columns :data:`TABLE_COLUMNS`: ``image_id``; the per-image scores
            ``dice, aji, aji_plus, dq, sq, pq``; every :class:`~benchmark.metrics.InstanceCounts`
            field (``dice_intersection, dice_total, aji_intersection, aji_union, ajip_intersection,
            ajip_union, tp, fp, fn, iou_sum, n_true, n_pred, match_iou``); and ``protocol``.
        """
        rows = []
        for image_id, c in zip(self._ids, self._counts):
            row: dict[str, Any] = {"image_id": image_id}
            row.update(scores_from_counts(c))
            row.update({f: getattr(c, f) for f in COUNT_FIELDS})
            row["protocol"] = self.protocol
            rows.append(row)
        df = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
        return df.astype({f: "int64" for f in _INT_FIELDS} | {"iou_sum": "float64", "match_iou": "float64"})


def summarize(table: pd.DataFrame, mode: str = "mean") -> dict[str, float]:
    """Recompute dataset scores from a stored per-image table (e.g. read back from CSV).

    Only the raw count columns are used (the stored per-image scores are ignored), so the result is
    exact whatever was rounded in the score columns.

    Args:
        table: rows as produced by :meth:`InstanceEvaluator.table`; needs the count columns
            (``dice_intersection`` … ``n_pred``); ``match_iou`` defaults to 0.5 when absent. Filter rows
            first to summarise a subset (e.g. one image's patches).
        mode: ``"mean"`` (default, per-image mean) or ``"aggregated"`` (Σ counts over rows).

    Returns:
        ``{"dice", "aji", "aji_plus", "dq", "sq", "pq"}`` → float, plus ``"n_images"`` → int.

    Raises:
        ValueError: missing columns, empty table, unknown mode, or mixed ``match_iou``.
    """
    missing = [c for c in COUNT_FIELDS if c != "match_iou" and c not in table.columns]
    if missing:
        raise ValueError(f"table lacks count columns {missing}")
    if len(table) == 0:
        raise ValueError("summarize() needs at least one row")
    match = table["match_iou"] if "match_iou" in table.columns else pd.Series(0.5, index=table.index)
    records = table[[c for c in COUNT_FIELDS if c != "match_iou"]].to_dict("records")
    counts = [
        InstanceCounts(**{f: int(r[f]) for f in _INT_FIELDS}, iou_sum=float(r["iou_sum"]), match_iou=float(m))
        for r, m in zip(records, match.tolist())
    ]
    return aggregate(counts, mode=mode)


def evaluate_patches(patches: Sequence[Any], preds: Sequence[Any], protocol: str = "patch") -> pd.DataFrame:
    """Per-unit table (:data:`TABLE_COLUMNS`) of predictions against labeled patches.

    Args:
        patches: objects with ``id`` and ``label`` (e.g. :class:`benchmark.api.Patch`), e.g. the
            validation patches of a split; may be empty.
        preds: one predicted instance map per patch, same order.
        protocol: recorded in the table.

    Returns:
        :meth:`InstanceEvaluator.table` of the patches; an empty table (same columns) without patches.
    """
    if len(patches) != len(preds):
        raise ValueError(f"{len(preds)} predictions for {len(patches)} patches")
    ev = InstanceEvaluator(protocol=protocol)
    if not len(patches):
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    ev.process([p.id for p in patches], [p.label for p in patches], list(preds))
    return ev.table()
