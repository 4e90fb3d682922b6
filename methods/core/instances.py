"""Detections -> instance map (shared by every Mask R-CNN method).

Rule (documented in the README):

1. keep detections with ``score >= score_thresh`` (default 0.5);
2. binarise each mask probability at ``mask_thresh`` (default 0.5; ``>=``);
3. optionally dilate each binary mask by ``dilate`` pixels (default 0: off; the BASS code dilated by 1);
4. paint from the lowest to the highest score, so where masks overlap the best-scoring one wins;
   instance ids are 1..K in the order of *decreasing* score (id 1 = best detection), 0 is background
   (unlike the BASS code, no detection is written as background);
5. drop instances left with fewer than ``min_area`` visible pixels after occlusion (their pixels
   become background), then relabel to consecutive ids 1..N.

Works on numpy arrays or torch tensors (CPU or GPU) and returns a numpy ``int32`` map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def detections_to_instance_map(
    masks: Any,
    scores: Any,
    shape: tuple[int, int] | None = None,
    *,
    score_thresh: float = 0.5,
    mask_thresh: float = 0.5,
    dilate: int = 0,
    min_area: int = 5,
) -> np.ndarray:
    """Paint soft instance masks into one ``int32 (H, W)`` instance map.

    Args:
        masks: ``(N, H, W)`` or ``(N, 1, H, W)`` mask probabilities in [0, 1] (pasted in image space).
        scores: ``(N,)`` detection scores.
        shape: ``(H, W)`` of the output when ``N == 0`` and masks carry no shape (``(0,)`` arrays).
        score_thresh: minimum detection score kept.
        mask_thresh: pixel threshold on the probabilities.
        dilate: dilate each binary mask by this many pixels (cross footprint) before painting; 0 = off.
        min_area: instances with fewer visible pixels are removed.

    Returns:
        ``int32 (H, W)``: 0 background, 1..N instances, id 1 the highest-scoring kept detection.
    """
    m = _np(masks)
    s = _np(scores).astype(np.float64).reshape(-1)
    if m.ndim == 4:
        m = m[:, 0]
    if m.ndim != 3:
        if m.size == 0 and shape is not None:
            return np.zeros(shape, dtype=np.int32)
        raise ValueError(f"masks must be (N, H, W) or (N, 1, H, W), got shape {m.shape}")
    if m.shape[0] != s.shape[0]:
        raise ValueError(f"{m.shape[0]} masks but {s.shape[0]} scores")
    h, w = m.shape[1:] if shape is None else shape
    if m.shape[1:] != (h, w):
        raise ValueError(f"masks have spatial shape {m.shape[1:]}, expected {(h, w)}")
    out = np.zeros((h, w), dtype=np.int32)
    keep = np.flatnonzero(s >= score_thresh)
    if keep.size == 0:
        return out
    # stable sort by decreasing score; ties keep detection order
    order = keep[np.argsort(-s[keep], kind="stable")]
    footprint = ndimage.generate_binary_structure(2, 1)
    # paint lowest score first so that higher scores overwrite
    for rank in range(len(order) - 1, -1, -1):
        binary = m[order[rank]] >= mask_thresh
        if dilate > 0 and binary.any():
            binary = ndimage.binary_dilation(binary, structure=footprint, iterations=dilate)
        out[binary] = rank + 1
    # remove tiny leftovers and relabel consecutively (order by id = by score)
    ids, counts = np.unique(out, return_counts=True)
    counts = counts[ids > 0]
    ids = ids[ids > 0]
    lut = np.zeros(len(order) + 1, dtype=np.int32)
    kept = ids[counts >= min_area]
    lut[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return lut[out]
