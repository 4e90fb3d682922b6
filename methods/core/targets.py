"""Training samples and Mask R-CNN targets.

A :class:`TrainSample` is what the training loop consumes: an RGB patch plus either an instance map
(full supervision), or boxes without masks (box-only supervision, e.g. ShapeProp's weak images), or
both. :func:`sample_to_target` turns it into the ``dict`` torchvision's detection models expect, with an
extra ``mask_valid`` flag per instance (False for box-only instances: no mask loss on them).

:func:`mask_targets` is torchvision's ``project_masks_on_boxes`` followed by binarisation at 0.5 (the
reference mmdet code binarises; torchvision's targets are soft bilinear crops). It works for any output
size, so branches that need 14x14 targets (BASS's LRD, NoisyBoundary) reuse it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import roi_align


@dataclasses.dataclass(frozen=True)
class TrainSample:
    """One training patch.

    Attributes:
        image: ``uint8 (H, W, 3)`` RGB.
        label: ``int32 (H, W)`` instance map (0 = background) or ``None`` for box-only supervision.
        boxes: ``float32 (K, 4)`` extra box-only instances ``(x1, y1, x2, y2)``, x2/y2 exclusive, in
            pixels; ``None`` = none. Their ``mask_valid`` flag is False.
        id: free-form identifier (used in error messages).
    """

    image: np.ndarray
    label: np.ndarray | None = None
    boxes: np.ndarray | None = None
    id: str = ""


def as_train_sample(item: Any) -> TrainSample:
    """Accept a :class:`TrainSample`, a :class:`benchmark.api.Patch` (or anything with ``image`` /
    ``label`` / optional ``boxes`` attributes) or an ``(image, label)`` tuple."""
    if isinstance(item, TrainSample):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return TrainSample(image=item[0], label=item[1])
    if hasattr(item, "image"):
        return TrainSample(
            image=item.image,
            label=getattr(item, "label", None),
            boxes=getattr(item, "boxes", None),
            id=str(getattr(item, "id", "")),
        )
    raise TypeError(
        f"cannot use {type(item).__name__} as a training sample; pass a TrainSample, a Patch or an "
        f"(image, label) tuple"
    )


def validate_sample(s: TrainSample) -> None:
    """Raise ``ValueError`` naming the sample when shapes or dtypes are wrong."""
    where = f"training sample {s.id!r}" if s.id else "training sample"
    img = s.image
    if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
        raise ValueError(
            f"{where}: image must be a uint8 (H, W, 3) array, got "
            f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}"
        )
    if s.label is not None:
        lab = s.label
        if not (isinstance(lab, np.ndarray) and lab.shape == img.shape[:2] and np.issubdtype(lab.dtype, np.integer)):
            raise ValueError(
                f"{where}: label must be an integer (H, W) array matching the image {img.shape[:2]}, got "
                f"{getattr(lab, 'dtype', type(lab))} {getattr(lab, 'shape', '')}"
            )
    if s.label is None and s.boxes is None:
        raise ValueError(f"{where}: has neither an instance map nor boxes; unlabeled patches cannot be trained on")


def instance_masks(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an instance map into per-instance masks.

    Returns:
        ``(masks, boxes)``: ``uint8 (N, H, W)`` binary masks in increasing id order and ``float32 (N, 4)``
        boxes ``(x1, y1, x2, y2)`` with x2/y2 exclusive. ``N = 0`` for an empty map.
    """
    from scipy import ndimage

    h, w = label.shape
    ids = np.unique(label)
    ids = ids[ids != 0]
    masks = np.zeros((len(ids), h, w), dtype=np.uint8)
    boxes = np.zeros((len(ids), 4), dtype=np.float32)
    if not len(ids):
        return masks, boxes
    # compare only inside each instance's bounding box (find_objects), not over the whole patch per id
    slices = ndimage.find_objects(np.asarray(label, np.int64), max_label=int(ids[-1]))
    for k, i in enumerate(ids):
        ys, xs = slices[int(i) - 1]
        masks[k, ys, xs] = label[ys, xs] == i
        boxes[k] = (xs.start, ys.start, xs.stop, ys.stop)
    return masks, boxes


def sample_to_target(s: TrainSample) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Convert a sample to ``(image float32 (3,H,W) in [0,1], target)``.

    ``target`` holds ``boxes`` (float32 (N,4)), ``labels`` (int64 (N,), all 1: class-agnostic nucleus),
    ``masks`` (uint8 (N,H,W); all-zero rows for box-only instances) and ``mask_valid`` (bool (N,)).
    """
    img = torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1).float().div_(255.0)
    h, w = s.image.shape[:2]
    if s.label is not None:
        masks, boxes = instance_masks(np.asarray(s.label))
    else:
        masks, boxes = np.zeros((0, h, w), np.uint8), np.zeros((0, 4), np.float32)
    valid = np.ones(len(boxes), dtype=bool)
    if s.boxes is not None and len(s.boxes):
        extra = np.asarray(s.boxes, dtype=np.float32).reshape(-1, 4)
        extra = np.clip(extra, 0, [w, h, w, h]).astype(np.float32)
        keep = (extra[:, 2] - extra[:, 0] >= 1) & (extra[:, 3] - extra[:, 1] >= 1)
        extra = extra[keep]
        boxes = np.concatenate([boxes, extra])
        masks = np.concatenate([masks, np.zeros((len(extra), h, w), np.uint8)])
        valid = np.concatenate([valid, np.zeros(len(extra), dtype=bool)])
    target = {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "masks": torch.from_numpy(masks),
        "mask_valid": torch.from_numpy(valid),
    }
    return img, target


def mask_targets(
    gt_masks: Sequence[torch.Tensor],
    proposals: Sequence[torch.Tensor],
    matched_idxs: Sequence[torch.Tensor],
    size: int,
    *,
    binarize: float | None = 0.5,
) -> torch.Tensor:
    """Per-RoI mask targets: crop each matched GT mask to its proposal and resize to ``size x size``.

    Args:
        gt_masks: per image, ``(N_i, H, W)`` GT masks.
        proposals: per image, ``(R_i, 4)`` RoI boxes in the same (transformed) coordinates as the masks.
        matched_idxs: per image, ``(R_i,)`` index into that image's GT for every RoI.
        size: output side (28 for the standard head, 14 for LRD-style branches).
        binarize: threshold applied to the bilinear crop (``None`` keeps torchvision's soft targets).

    Returns:
        ``float32 (sum R_i, size, size)`` targets (0/1 when binarised).
    """
    out = []
    for m, p, i in zip(gt_masks, proposals, matched_idxs):
        if p.shape[0] == 0:
            out.append(p.new_zeros((0, size, size), dtype=torch.float32))
            continue
        rois = torch.cat([i.to(p)[:, None], p], dim=1).float()
        t = roi_align(m[:, None].float(), rois, (size, size), 1.0)[:, 0]
        out.append(t)
    if not out:
        return torch.zeros((0, size, size))
    t = torch.cat(out, dim=0)
    if binarize is not None:
        t = (t >= binarize).float()
    return t
