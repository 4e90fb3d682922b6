"""Whole-image inference: stitching overlapping patch predictions into one instance map.

Stitching rule ("centre ownership"):

1. Along each axis the image is partitioned among the patch starts: the boundary between two
   consecutive patches is the middle of their overlap (with size 256 / stride 128, an interior patch
   *owns* its central 128x128 block, border patches extend their owned block to the image border).
2. From each patch, an instance is kept iff its centroid lies in the block that patch owns. As nuclei
   are much smaller than the 64-px margin between the owned block and the patch border, a kept instance
   is almost never cut by its own patch border, and every nucleus is decided by exactly one patch.
3. Kept instances are pasted whole (all their pixels in the patch, not only the owned ones), in
   row-major patch order. Pixels already claimed by an earlier pasted instance keep their owner; an
   instance whose pixels are more than half already claimed is a duplicate of a nucleus seen by a
   neighbouring patch and is dropped.
4. The result is cropped to the image (removing any padding) and relabelled ``1..N``.

Both evaluation protocols come from the same patch predictions: evaluate the patch maps directly (the
paper's protocol), and/or :func:`stitch` them per image (whole-image protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from benchmark.data.io import relabel_sequential
from benchmark.data.patching import PatchParams, cut_patches

#: fraction of an instance's pixels already claimed above which it is dropped as a duplicate.
DUPLICATE_FRACTION = 0.5


def ownership_bounds(starts: Sequence[int], size: int, length: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` owned interval per start along one axis (see module docstring, step 1)."""
    starts = sorted(int(s) for s in starts)
    bounds = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (starts[i - 1] + size + s) // 2
        hi = length if i == len(starts) - 1 else (s + size + starts[i + 1]) // 2
        bounds.append((lo, max(lo, hi)))
    return bounds


def stitch(
    patch_preds: Sequence[np.ndarray],
    positions: Sequence[tuple[int, int]],
    image_shape: Sequence[int],
) -> np.ndarray:
    """Stitch per-patch instance maps into one ``int32 (H, W)`` instance map.

    Args:
        patch_preds: one integer ``(size, size)`` instance map per patch (0 = background; ids arbitrary).
        positions: top-left ``(row, col)`` of each patch in the (padded) image, as produced by
            :func:`benchmark.data.patching.patch_positions`.
        image_shape: ``(H, W[, C])`` of the original image; the output has shape ``(H, W)``.

    Raises:
        ValueError: mismatched lengths, non-square or differently sized patches, or an empty input.
    """
    if len(patch_preds) != len(positions):
        raise ValueError(f"{len(patch_preds)} patch predictions but {len(positions)} positions")
    if not patch_preds:
        raise ValueError("no patches to stitch")
    size = int(np.asarray(patch_preds[0]).shape[0])
    for p in patch_preds:
        if np.asarray(p).shape != (size, size):
            raise ValueError(f"all patch predictions must be {size}x{size}, got {np.asarray(p).shape}")
    h, w = int(image_shape[0]), int(image_shape[1])
    ch, cw = max(h, size), max(w, size)  # padded canvas
    row_starts = sorted({int(r) for r, _ in positions})
    col_starts = sorted({int(c) for _, c in positions})
    row_own = dict(zip(row_starts, ownership_bounds(row_starts, size, ch)))
    col_own = dict(zip(col_starts, ownership_bounds(col_starts, size, cw)))

    out = np.zeros((ch, cw), dtype=np.int32)
    next_id = 1
    order = sorted(range(len(positions)), key=lambda i: (positions[i][0], positions[i][1]))
    for i in order:
        r0, c0 = int(positions[i][0]), int(positions[i][1])
        pred = np.asarray(patch_preds[i])
        if pred.max(initial=0) <= 0:
            continue
        (rlo, rhi), (clo, chi) = row_own[r0], col_own[c0]
        lab = relabel_sequential(np.where(pred > 0, pred, 0))
        n = int(lab.max())
        ids = np.arange(1, n + 1)
        cents = np.asarray(ndimage.center_of_mass(np.ones_like(lab), lab, ids), dtype=np.float64).reshape(-1, 2)
        slices = ndimage.find_objects(lab)
        view = out[r0 : r0 + size, c0 : c0 + size]
        for k, (cr, cc) in zip(ids, cents):
            gr, gc = cr + r0, cc + c0
            if not (rlo <= gr < rhi and clo <= gc < chi):
                continue
            sl = slices[k - 1]
            if sl is None:
                continue
            mask = lab[sl] == k
            sub = view[sl]
            claimed = sub[mask] > 0
            if claimed.mean() > DUPLICATE_FRACTION:
                continue
            sub[mask & (sub == 0)] = next_id
            next_id += 1
    return relabel_sequential(out[:h, :w])


def predict_whole_image(
    predict_fn: Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    image: np.ndarray,
    size: int = 256,
    stride: int = 128,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Sliding-window prediction of a whole image, stitched with :func:`stitch`.

    Args:
        predict_fn: takes a list of ``uint8 (size, size, 3)`` patches and returns one instance map per
            patch (e.g. a fitted ``Method.predict``).
        image: ``uint8 (H, W, 3)``; images smaller than ``size`` are padded (see patching).
        size, stride: window size and step (paper: 256 / 128).
        batch_size: patches per ``predict_fn`` call (``None``: all at once).

    Returns:
        ``int32 (H, W)`` instance map with ids ``1..N``.
    """
    patches = cut_patches(image, None, PatchParams(size=size, stride=stride), name="image")
    imgs = [patches.images[i] for i in range(len(patches.positions))]
    step = batch_size or len(imgs)
    preds: list[np.ndarray] = []
    for i in range(0, len(imgs), step):
        out = list(predict_fn(imgs[i : i + step]))
        if len(out) != len(imgs[i : i + step]):
            raise ValueError(f"predict_fn returned {len(out)} maps for {len(imgs[i:i + step])} patches")
        preds.extend(out)
    return stitch(preds, patches.positions, image.shape)
