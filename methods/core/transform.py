"""The model's input/output transform with a faster mask paste.

torchvision's ``paste_masks_in_image`` allocates a zero image per detection and then stacks them (two
full-size copies per mask); with hundreds of detections per patch that dominated CPU inference.
:func:`paste_masks` produces the identical result (same box expansion, bilinear resize and clipping)
into one pre-allocated tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes


def paste_masks(masks: Tensor, boxes: Tensor, img_shape: tuple[int, int], padding: int = 1) -> Tensor:
    """Paste ``(N, 1, M, M)`` mask probabilities into ``(N, 1, H, W)`` at ``boxes`` (torchvision's rule)."""
    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    out = masks.new_zeros((masks.shape[0], 1, im_h, im_w))
    if masks.shape[0] == 0:
        return out
    masks, scale = expand_masks(masks, padding=padding)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int64).tolist()
    for i, (bx0, by0, bx1, by1) in enumerate(boxes):
        w = max(bx1 - bx0 + 1, 1)
        h = max(by1 - by0 + 1, 1)
        x0, x1 = max(bx0, 0), min(bx1 + 1, im_w)
        y0, y1 = max(by0, 0), min(by1 + 1, im_h)
        if x1 <= x0 or y1 <= y0:
            continue
        m = F.interpolate(masks[i:i + 1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        out[i, 0, y0:y1, x0:x1] = m[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
    return out


class NucleiTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` whose ``postprocess`` uses :func:`paste_masks` and passes any other
    per-detection keys through unchanged."""

    def postprocess(self, result, image_shapes, original_image_sizes):  # type: ignore[override]
        if self.training:
            return result
        for i, (pred, im_s, o_im_s) in enumerate(zip(result, image_shapes, original_image_sizes)):
            boxes = resize_boxes(pred["boxes"], im_s, o_im_s)
            result[i]["boxes"] = boxes
            if "masks" in pred:
                result[i]["masks"] = paste_masks(pred["masks"], boxes, o_im_s)
        return result
