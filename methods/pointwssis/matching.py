"""Point-to-detection matching and pseudo-label painting (pure numpy; see :func:`match_points`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from methods.core.targets import instance_masks

#: how a point got its pseudo mask (codes in :class:`PointMatch`)
NONE, VIA_MASK, VIA_BOX = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class PointMatch:
    """Result of :func:`match_points`.

    Attributes:
        detection: ``int64 (P,)`` index of the detection selected for each point, ``-1`` = none.
        via: ``int8 (P,)`` :data:`VIA_MASK` (the mask contains the point), :data:`VIA_BOX` (only the box
            does) or :data:`NONE`.
    """

    detection: np.ndarray
    via: np.ndarray


def _point_pixels(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel (row, col) of each ``(row, col)`` point, clipped into the image."""
    h, w = shape
    r = np.clip(np.floor(points[:, 0] + 0.5).astype(np.int64), 0, h - 1)
    c = np.clip(np.floor(points[:, 1] + 0.5).astype(np.int64), 0, w - 1)
    return r, c


def match_points(
    points: np.ndarray, boxes: np.ndarray, scores: np.ndarray, masks: np.ndarray
) -> PointMatch:
    """Select at most one detection per point and at most one point per detection.

    Args:
        points: ``(P, 2)`` point coordinates ``(row, col)`` in pixels (pixel ``(r, c)`` is the point
            ``(r, c)``; centroids may be fractional).
        boxes: ``(N, 4)`` detection boxes ``(x1, y1, x2, y2)`` in continuous pixel coordinates (pixel
            ``(r, c)`` covers ``[c, c+1) x [r, r+1)``; x2/y2 exclusive as in :mod:`benchmark.data.points`).
        scores: ``(N,)`` detection scores.
        masks: ``bool (N, H, W)`` binary detection masks (only their values at the points are read).

    Returns:
        a :class:`PointMatch`. Rule (module doc, step 3): candidate pairs are (point, detection) with the
        detection's mask containing the point's pixel (tier "mask") or else its box containing the point's
        pixel centre (tier "box"); pairs are taken greedily in the order (tier, -score, distance from the
        point to the box centre, detection index, point index) whenever both sides are still free.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    masks = np.asarray(masks)
    n_p, n_d = len(points), len(boxes)
    if len(scores) != n_d or (n_d and (masks.ndim != 3 or masks.shape[0] != n_d)):
        raise ValueError(
            f"match_points: {n_d} boxes, {len(scores)} scores and masks of shape {masks.shape} do not agree"
        )
    det = np.full(n_p, -1, dtype=np.int64)
    via = np.zeros(n_p, dtype=np.int8)
    if n_p == 0 or n_d == 0:
        return PointMatch(det, via)
    r, c = _point_pixels(points, masks.shape[1:])
    in_mask = masks[:, r, c].astype(bool).T  # (P, N)
    yc, xc = r + 0.5, c + 0.5  # pixel centres in box coordinates
    in_box = (
        (boxes[None, :, 0] <= xc[:, None]) & (xc[:, None] <= boxes[None, :, 2])
        & (boxes[None, :, 1] <= yc[:, None]) & (yc[:, None] <= boxes[None, :, 3])
    )
    tier = np.where(in_mask, 0, np.where(in_box, 1, 2))  # 2 = not a candidate
    pi, di = np.nonzero(tier < 2)
    if pi.size == 0:
        return PointMatch(det, via)
    cx = (boxes[di, 0] + boxes[di, 2]) / 2.0
    cy = (boxes[di, 1] + boxes[di, 3]) / 2.0
    dist = (cx - xc[pi]) ** 2 + (cy - yc[pi]) ** 2
    order = np.lexsort((pi, di, dist, -scores[di], tier[pi, di]))
    det_taken = np.zeros(n_d, dtype=bool)
    for k in order:
        p, d = pi[k], di[k]
        if det[p] >= 0 or det_taken[d]:
            continue
        det[p] = d
        via[p] = VIA_MASK if tier[p, d] == 0 else VIA_BOX
        det_taken[d] = True
    return PointMatch(det, via)


def point_boxes(points: np.ndarray, size_wh: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """``float32 (P, 4)`` boxes ``(x1, y1, x2, y2)`` of ``size_wh`` centred at each ``(row, col)`` point's
    pixel centre, clipped to the image ``shape`` ``(H, W)``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    bw, bh = float(size_wh[0]), float(size_wh[1])
    yc, xc = points[:, 0] + 0.5, points[:, 1] + 0.5
    b = np.stack([xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2], axis=1)
    return np.clip(b, 0, [w, h, w, h]).astype(np.float32)


def median_nucleus_size(labels: Sequence[np.ndarray]) -> tuple[float, float]:
    """Median ``(width, height)`` in pixels of the instance boxes of the labeled maps (``(12, 12)`` when
    there are no instances)."""
    sizes = []
    for lab in labels:
        _, boxes = instance_masks(np.asarray(lab))
        if len(boxes):
            sizes.append(np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1))
    if not sizes:
        return (12.0, 12.0)
    s = np.concatenate(sizes)
    return (float(np.median(s[:, 0])), float(np.median(s[:, 1])))


def paint_pseudo_label(
    masks: Sequence[np.ndarray], priorities: Sequence[float], shape: tuple[int, int], *, min_area: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one binary mask per point into an instance map.

    Args:
        masks: per point a ``bool (H, W)`` mask (may be empty).
        priorities: per point; painted in increasing order so the highest priority wins overlaps
            (ties: the later point wins).
        shape: ``(H, W)``.
        min_area: masks left with fewer visible pixels are removed.

    Returns:
        ``(label, kept)``: ``int32 (H, W)`` map with ids ``1..K`` in point order, and ``bool (P,)`` telling
        which points kept an instance.
    """
    out = np.zeros(shape, dtype=np.int32)
    n = len(masks)
    order = np.argsort(np.asarray(priorities, dtype=np.float64), kind="stable")
    for i in order:
        out[masks[i]] = i + 1
    ids, counts = np.unique(out, return_counts=True)
    areas = np.zeros(n + 1, dtype=np.int64)
    areas[ids] = counts
    kept = areas[1:] >= max(1, int(min_area))
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[1:][kept] = np.arange(1, int(kept.sum()) + 1, dtype=np.int32)
    return lut[out], kept
