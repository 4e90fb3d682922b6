"""RoI heads with a pluggable mask branch.

torchvision's ``RoIHeads.forward`` keeps the sampled proposals, their matched ground truth, the RoI
features and the mask targets as local variables. :class:`NucleiRoIHeads` re-implements that forward
(box part unchanged) and hands everything the mask side needs to a :class:`MaskBranch` object in a
:class:`MaskRoIs` record. Methods extend Mask R-CNN by writing a new branch, not a new RoI head:

- the default :class:`StandardMaskBranch` is torchvision's FCN mask head (class-agnostic, one logit
  channel at 28x28) trained with BCE on binarised targets;
- BASS/NoisyBoundary subclass it (or :class:`MaskBranch`) and add a 14x14 LRD output
  (``rois.mask_targets(14)``) and a 28x28 contrastive RoIAlign on ``rois.features``;
- ShapeProp sets instances' ``mask_valid`` to False in the targets (box-only images) and reads
  ``rois.all_proposals``/``rois.all_labels`` to train a module on every sampled RoI;
- MMT-PSM reads :attr:`NucleiRoIHeads.last_box_output` (sampled proposals, labels, class logits) from a
  training hook, and can call :meth:`NucleiRoIHeads.box_class_logits` to score given boxes.

A branch's ``forward`` must return a dict with ``"mask_logits"`` ``(R, 1, M, M)``; at inference
``sigmoid(mask_logits)`` becomes the detections' ``masks`` and are pasted into the image by torchvision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from .targets import mask_targets as _mask_targets


@dataclasses.dataclass
class MaskRoIs:
    """Everything a mask branch may need for one batch.

    Attributes:
        features: FPN feature maps (``"0".."3"``, ``"pool"``) of the batch.
        proposals: per image, the RoIs the mask branch works on: positive sampled proposals in training,
            detected boxes at inference (transformed-image coordinates).
        image_shapes: per image, ``(H, W)`` after the transform (before batching padding).
        roi_features: ``mask_roi_pool(features, proposals)``: ``(R, C, 14, 14)`` with R = total RoIs.
        training: whether this is a training forward (targets and matches are then set).
        matched_idxs: per image, the GT index of every positive proposal (training only).
        targets: the transformed targets (``boxes``, ``labels``, ``masks``, ``mask_valid``; training only).
        all_proposals / all_labels / all_matched_idxs: every sampled RoI of the box head (positives and
            negatives; labels 0 = background) for branches that train on boxes (training only).
    """

    features: dict[str, torch.Tensor]
    proposals: list[torch.Tensor]
    image_shapes: list[tuple[int, int]]
    roi_features: torch.Tensor
    training: bool
    matched_idxs: list[torch.Tensor] | None = None
    targets: list[dict[str, torch.Tensor]] | None = None
    all_proposals: list[torch.Tensor] | None = None
    all_labels: list[torch.Tensor] | None = None
    all_matched_idxs: list[torch.Tensor] | None = None
    _cache: dict[Any, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def num_rois(self) -> int:
        return int(self.roi_features.shape[0])

    def mask_targets(self, size: int = 28, binarize: float | None = 0.5) -> torch.Tensor:
        """Binarised ``(R, size, size)`` targets of the positive RoIs (cached per size)."""
        if self.targets is None or self.matched_idxs is None:
            raise RuntimeError("mask targets exist only in a training forward")
        key = (size, binarize)
        if key not in self._cache:
            self._cache[key] = _mask_targets(
                [t["masks"] for t in self.targets], self.proposals, self.matched_idxs, size, binarize=binarize
            ).to(self.roi_features.device)
        return self._cache[key]

    def mask_valid(self) -> torch.Tensor:
        """``bool (R,)``: whether each positive RoI's matched instance has a mask (False: box-only)."""
        if self.targets is None or self.matched_idxs is None:
            raise RuntimeError("mask_valid exists only in a training forward")
        parts = []
        for t, idx in zip(self.targets, self.matched_idxs):
            valid = t.get("mask_valid")
            if valid is None:
                parts.append(torch.ones(idx.shape[0], dtype=torch.bool, device=idx.device))
            else:
                parts.append(valid.to(idx.device)[idx] if idx.numel() else idx.new_zeros(0, dtype=torch.bool))
        if not parts:
            return torch.zeros(0, dtype=torch.bool, device=self.roi_features.device)
        return torch.cat(parts).to(self.roi_features.device)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the valid RoIs; a zero that keeps the graph when none is valid.

    Args:
        logits: ``(R, 1, M, M)`` or ``(R, M, M)``.
        targets: ``(R, M, M)`` in [0, 1].
        valid: ``bool (R,)``.
    """
    if logits.dim() == 4:
        logits = logits[:, 0]
    if valid.numel() == 0 or not bool(valid.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[valid].float(), targets[valid].float())


class MaskBranch(nn.Module):
    """Base class of pluggable mask branches.

    Subclasses implement :meth:`forward` (``MaskRoIs -> dict`` containing ``"mask_logits"``) and
    :meth:`loss` (``(outputs, MaskRoIs) -> dict[str, Tensor]`` of named loss terms, already weighted).
    ``config()`` returns the branch's settings (recorded by :func:`model_config`).
    """

    def forward(self, rois: MaskRoIs) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, outputs: dict[str, torch.Tensor], rois: MaskRoIs) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    def config(self) -> dict[str, Any]:
        return {"type": type(self).__name__}


class StandardMaskBranch(MaskBranch):
    """torchvision's FCN mask head, class-agnostic: ``convs`` 3x3 convs of ``channels`` on the 14x14
    RoI features, a 2x deconvolution and a 1x1 conv to one logit channel at 28x28; BCE on binarised
    28x28 targets (instances without a mask are skipped).

    Args:
        in_channels: RoI feature channels (FPN width, 256).
        channels: conv width (torchvision 256).
        convs: number of 3x3 convs (torchvision 4).
        norm: ``"gn"`` adds GroupNorm after each conv (for from-scratch training), ``None`` = plain.
        loss_weight: factor on the mask BCE.
    """

    def __init__(
        self, in_channels: int = 256, channels: int = 256, convs: int = 4, norm: str | None = None,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.channels, self.convs, self.norm = in_channels, channels, convs, norm
        self.loss_weight = loss_weight
        norm_layer = group_norm if norm == "gn" else None
        self.head = MaskRCNNHeads(in_channels, [channels] * convs, 1, norm_layer=norm_layer)
        self.deconv = nn.ConvTranspose2d(channels, channels, 2, 2, 0)
        self.logits = nn.Conv2d(channels, 1, 1)
        for m in (self.deconv, self.logits):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The conv stack on 14x14 RoI features (reused by subclasses that add branches)."""
        return self.head(x)

    def forward(self, rois: MaskRoIs) -> dict[str, torch.Tensor]:
        x = self.trunk(rois.roi_features)
        x = F.relu(self.deconv(x))
        return {"mask_logits": self.logits(x)}

    def loss(self, outputs: dict[str, torch.Tensor], rois: MaskRoIs) -> dict[str, torch.Tensor]:
        logits = outputs["mask_logits"]
        targets = rois.mask_targets(logits.shape[-1])
        return {"loss_mask": self.loss_weight * masked_bce(logits, targets, rois.mask_valid())}

    def config(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__, "channels": self.channels, "convs": self.convs,
            "norm": self.norm, "loss_weight": self.loss_weight,
        }


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer when ``channels`` is not divisible)."""
    groups = 32
    while channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels)


@dataclasses.dataclass
class BoxOutput:
    """The box head's view of one training forward (kept in :attr:`NucleiRoIHeads.last_box_output`).

    Attributes:
        proposals: per image, sampled RoIs. labels: per image, 0 = background, 1 = nucleus.
        matched_idxs: per image, GT index (clamped: background RoIs point at GT 0; filter by labels).
        box_features: ``(R, D)`` box-head features. class_logits: ``(R, 2)``. box_regression: ``(R, 8)``.
    """

    proposals: list[torch.Tensor]
    labels: list[torch.Tensor]
    matched_idxs: list[torch.Tensor]
    box_features: torch.Tensor
    class_logits: torch.Tensor
    box_regression: torch.Tensor


class NucleiRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` with the mask side delegated to a :class:`MaskBranch`.

    Constructed like ``RoIHeads`` (box components and sampling/inference settings) plus
    ``mask_roi_pool`` and ``mask_branch``. Training returns ``([], losses)`` with ``loss_classifier``,
    ``loss_box_reg`` and the branch's losses; inference returns detections with ``boxes``, ``labels``,
    ``scores`` and ``masks`` (``(N, 1, M, M)`` probabilities, pasted later by the transform) plus any
    extra per-detection tensors the branch returns under keys starting with ``"det_"``.

    Attributes:
        keep_box_output: when True, every training forward stores a :class:`BoxOutput` in
            :attr:`last_box_output` (for hooks such as MMT-PSM's classification distillation).
    """

    def __init__(self, *args: Any, mask_roi_pool: nn.Module, mask_branch: MaskBranch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mask_roi_pool = mask_roi_pool
        self.mask_branch = mask_branch
        self.keep_box_output = False
        self.last_box_output: BoxOutput | None = None

    def has_mask(self) -> bool:  # torchvision checks these in check_targets
        return True

    def check_targets(self, targets):  # type: ignore[override]
        if targets is None:
            raise ValueError("targets should not be None")
        for t in targets:
            for key in ("boxes", "labels", "masks"):
                if key not in t:
                    raise ValueError(f"every training target needs a {key!r} entry")

    def box_class_logits(
        self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the box head on given RoIs: ``(class_logits (R, 2), box_regression (R, 8))``."""
        x = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        return self.box_predictor(x)

    def forward(  # type: ignore[override]
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("NucleiRoIHeads needs targets in training mode")
            for t in targets:
                if not t["boxes"].is_floating_point():
                    raise TypeError(f"target boxes must be float, got {t['boxes'].dtype}")
                if t["labels"].dtype != torch.int64:
                    raise TypeError(f"target labels must be int64, got {t['labels'].dtype}")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses: dict[str, torch.Tensor] = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            if self.keep_box_output:
                self.last_box_output = BoxOutput(
                    proposals, labels, matched_idxs, box_features, class_logits, box_regression
                )
            pos_props, pos_matched = [], []
            for p, lab, m in zip(proposals, labels, matched_idxs):
                pos = torch.where(lab > 0)[0]
                pos_props.append(p[pos])
                pos_matched.append(m[pos])
            rois = MaskRoIs(
                features=features,
                proposals=pos_props,
                image_shapes=image_shapes,
                roi_features=self.mask_roi_pool(features, pos_props, image_shapes),
                training=True,
                matched_idxs=pos_matched,
                targets=targets,
                all_proposals=proposals,
                all_labels=labels,
                all_matched_idxs=matched_idxs,
            )
            outputs = self.mask_branch(rois)
            losses.update(self.mask_branch.loss(outputs, rois))
            return [], losses

        boxes, scores, det_labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        rois = MaskRoIs(
            features=features,
            proposals=boxes,
            image_shapes=image_shapes,
            roi_features=self.mask_roi_pool(features, boxes, image_shapes),
            training=False,
        )
        outputs = self.mask_branch(rois)
        probs = outputs["mask_logits"].sigmoid()
        counts = [b.shape[0] for b in boxes]
        result = []
        extras = {k: v.split(counts) for k, v in outputs.items() if k.startswith("det_")}
        for i, (b, s, lab, m) in enumerate(zip(boxes, scores, det_labels, probs.split(counts))):
            r = {"boxes": b, "labels": lab, "scores": s, "masks": m}
            for k, v in extras.items():
                r[k] = v[i]
            result.append(r)
        return result, {}


BranchFactory = Callable[..., MaskBranch]
