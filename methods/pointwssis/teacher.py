"""Teacher inference for point-guided pseudo-labels: detections that can serve a point
(:func:`point_candidates`) and the mask head on given boxes (:func:`mask_probs_for_boxes`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from methods.core.heads import MaskRoIs
from methods.core.helpers import image_to_tensor


def _image_tensor(image: np.ndarray, dev: torch.device) -> torch.Tensor:
    return image_to_tensor(image, device=dev)


def _masks_on_boxes(model: nn.Module, features, image_sizes, boxes_t: list[torch.Tensor],
                    boxes_o: list[torch.Tensor], orig_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Mask branch on given boxes (``boxes_t`` in transformed coordinates), pasted at original size
    with ``boxes_o``; returns per image ``(K, H, W)`` probabilities."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    heads = model.roi_heads
    counts = [len(b) for b in boxes_t]
    if sum(counts) == 0:
        return [torch.zeros((0, *hw), device=features["0"].device) for hw in orig_sizes]
    rois = MaskRoIs(
        features=features, proposals=boxes_t, image_shapes=image_sizes,
        roi_features=heads.mask_roi_pool(features, boxes_t, image_sizes), training=False,
    )
    probs = heads.mask_branch(rois)["mask_logits"].sigmoid().split(counts)
    out = []
    for pr, bo, hw in zip(probs, boxes_o, orig_sizes):
        if len(bo) == 0:
            out.append(torch.zeros((0, *hw), device=pr.device))
        else:
            out.append(paste_masks_in_image(pr, bo, hw)[:, 0])
    return out


@torch.no_grad()
def point_candidates(
    model: nn.Module, images: Sequence[np.ndarray], points: Sequence[np.ndarray], *, device: str = "cpu",
    margin: float = 2.0,
) -> list[dict[str, np.ndarray]]:
    """Teacher detections that can serve a point: those whose box (grown by ``margin`` pixels) contains at
    least one of the image's points.

    The model's own ``roi_heads.score_thresh`` / ``nms_thresh`` / ``detections_per_img`` apply (the caller
    lowers the score threshold). Only the kept detections go through the mask branch and are pasted, which
    is what makes low-threshold candidate generation affordable on a CPU.

    Args:
        model: a :func:`~methods.core.model.build_model` model.
        images: ``uint8 (H, W, 3)`` RGB arrays.
        points: per image ``(P, 2)`` ``(row, col)`` points.
        device: torch device string.

    Returns:
        per image ``{"boxes": float32 (N, 4), "scores": float32 (N,) descending, "masks": float32 (N, H, W)}``.
    """
    from torchvision.models.detection.transform import resize_boxes

    dev = torch.device(device)
    model.to(dev)
    model.eval()
    tensors = [_image_tensor(im, dev) for im in images]
    if not tensors:
        return []
    orig = [tuple(im.shape[:2]) for im in images]
    batch, _ = model.transform(tensors)
    features = model.backbone(batch.tensors)
    proposals, _ = model.rpn(batch, features)
    heads = model.roi_heads
    sizes = list(batch.image_sizes)
    class_logits, box_regression = heads.box_class_logits(features, proposals, sizes)
    boxes, scores, _ = heads.postprocess_detections(class_logits, box_regression, proposals, sizes)
    kept_t, kept_o, kept_s = [], [], []
    for b, s, hw0, hw1, pts in zip(boxes, scores, orig, sizes, points):
        bo = resize_boxes(b, hw1, hw0)
        p = torch.as_tensor(np.asarray(pts, np.float32).reshape(-1, 2), device=dev)
        if len(p) and len(bo):
            yc, xc = p[:, 0] + 0.5, p[:, 1] + 0.5
            inside = (
                (bo[None, :, 0] - margin <= xc[:, None]) & (xc[:, None] <= bo[None, :, 2] + margin)
                & (bo[None, :, 1] - margin <= yc[:, None]) & (yc[:, None] <= bo[None, :, 3] + margin)
            ).any(0)
        else:
            inside = torch.zeros(len(bo), dtype=torch.bool, device=dev)
        idx = torch.nonzero(inside).flatten()
        idx = idx[torch.argsort(s[idx], descending=True, stable=True)]
        kept_t.append(b[idx])
        kept_o.append(bo[idx])
        kept_s.append(s[idx])
    masks = _masks_on_boxes(model, features, sizes, kept_t, kept_o, orig)
    return [
        {"boxes": bo.float().cpu().numpy(), "scores": s.float().cpu().numpy(), "masks": m.float().cpu().numpy()}
        for bo, s, m in zip(kept_o, kept_s, masks)
    ]


@torch.no_grad()
def mask_probs_for_boxes(model: nn.Module, image: np.ndarray, boxes: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Run a trained Mask R-CNN's mask head on given boxes of one image.

    Args:
        model: a :func:`~methods.core.model.build_model` model (its transform, backbone, mask RoIAlign
            and mask branch are used; the RPN and box head are not).
        image: ``uint8 (H, W, 3)`` RGB.
        boxes: ``(K, 4)`` boxes ``(x1, y1, x2, y2)`` in image pixels.
        device: torch device string.

    Returns:
        ``float32 (K, H, W)`` mask probabilities pasted into the image (as torchvision pastes detections).
    """
    from torchvision.models.detection.transform import resize_boxes

    h, w = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, h, w), dtype=np.float32)
    dev = torch.device(device)
    model.to(dev)
    model.eval()
    batch, _ = model.transform([_image_tensor(image, dev)])
    features = model.backbone(batch.tensors)
    orig = torch.from_numpy(boxes).to(dev)
    rb = resize_boxes(orig, (h, w), tuple(batch.image_sizes[0]))
    (probs,) = _masks_on_boxes(model, features, list(batch.image_sizes), [rb], [orig], [(h, w)])
    return probs.float().cpu().numpy()
