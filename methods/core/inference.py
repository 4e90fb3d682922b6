"""Batched inference: raw detections and instance maps.

:func:`predict_detections` returns what pseudo-labelling methods need (BASS's count-matched score
threshold, PointWSSIS's point matching): boxes, scores and soft masks pasted at image resolution.
:func:`predict_instance_maps` turns them into int32 instance maps with
:func:`~methods.core.instances.detections_to_instance_map`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .helpers import image_to_tensor
from .instances import detections_to_instance_map


@contextlib.contextmanager
def score_floor(model: nn.Module, score: float):
    """Temporarily raise the RoI heads' box score threshold to ``score`` (if higher).

    Detections below the instance-map threshold are discarded anyway; dropping them before NMS, the
    mask head and the paste gives the same kept detections (greedy NMS only lets higher-scoring boxes
    suppress a box, and the cap keeps the top scores) and saves most of the inference time.
    """
    heads = getattr(model, "roi_heads", None)
    old = getattr(heads, "score_thresh", None)
    if old is not None and score > old:
        heads.score_thresh = float(score)
    try:
        yield
    finally:
        if old is not None:
            heads.score_thresh = old


@torch.no_grad()
def iter_detections(
    model: nn.Module, images: Sequence[np.ndarray], *, batch_size: int = 4, device: str = "cpu",
    min_score: float = 0.0,
):
    """Yield torchvision detection dicts (tensors on ``device``) one image at a time, in order.

    The model is put in eval mode (and left there). ``masks`` are ``(N, 1, H, W)`` probabilities.
    ``min_score`` above the model's own ``box_score_thresh`` drops lower-scored boxes before NMS.
    """
    dev = torch.device(device)
    model.to(dev)
    model.eval()
    with score_floor(model, min_score):
        for start in range(0, len(images), max(1, batch_size)):
            chunk = [image_to_tensor(im, start + i).to(dev) for i, im in enumerate(images[start:start + batch_size])]
            yield from model(chunk)


def predict_detections(
    model: nn.Module, images: Sequence[np.ndarray], *, batch_size: int = 4, device: str = "cpu",
    min_score: float = 0.0,
) -> list[dict[str, np.ndarray]]:
    """Raw detections per image.

    Args:
        model: a trained Mask R-CNN (``build_model``'s). Its own ``box_score_thresh`` (0.05 by default)
            and ``detections_per_img`` cap apply first.
        images: ``uint8 (H, W, 3)`` RGB arrays.
        batch_size: images per forward pass.
        device: torch device string.
        min_score: additionally drop detections scored below this.

    Returns:
        per image, ``{"boxes": float32 (N, 4) x1y1x2y2 in pixels, "scores": float32 (N,) sorted
        descending, "masks": float32 (N, H, W) mask probabilities}``.
    """
    out = []
    for det in iter_detections(model, images, batch_size=batch_size, device=device, min_score=min_score):
        keep = det["scores"] >= min_score
        scores = det["scores"][keep]
        order = torch.argsort(scores, descending=True, stable=True)
        idx = torch.nonzero(keep).flatten()[order]
        out.append({
            "boxes": det["boxes"][idx].float().cpu().numpy(),
            "scores": det["scores"][idx].float().cpu().numpy(),
            "masks": det["masks"][idx, 0].float().cpu().numpy(),
        })
    return out


def predict_instance_maps(
    model: nn.Module, images: Sequence[np.ndarray], *, batch_size: int = 4, device: str = "cpu",
    **rule: Any,
) -> list[np.ndarray]:
    """``int32 (H, W)`` instance maps; ``rule`` goes to :func:`detections_to_instance_map`
    (``score_thresh``, ``mask_thresh``, ``dilate``, ``min_area``)."""
    maps = []
    # the heads keep scores strictly above their threshold; the rule keeps >= score_thresh
    floor = float(np.nextafter(float(rule.get("score_thresh", 0.5)), -np.inf))
    dets = iter_detections(model, images, batch_size=batch_size, device=device, min_score=floor)
    for i, det in enumerate(dets):
        maps.append(detections_to_instance_map(det["masks"], det["scores"], images[i].shape[:2], **rule))
    return maps
