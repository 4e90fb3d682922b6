"""Build the nuclei Mask R-CNN from a training :class:`~benchmark.profiles.Profile`.

One foreground class (class-agnostic nucleus), a ResNet-18/50 FPN backbone, anchors sized for 8-100 px
nuclei at the profile's input size, the transform pinned to ``min_size = max_size = input_size`` (never
torchvision's 800 px default unless the profile says 800), RoI sampling / NMS / head widths from the
profile, and :class:`~methods.core.heads.NucleiRoIHeads` with a pluggable mask branch.

Normalisation and weights (``profile.norm`` / ``profile.pretrained``):

- ``"gn"``: GroupNorm in backbone, FPN and mask head, random init, every backbone layer trains. ImageNet
  weights (BatchNorm statistics) do not apply to it, so ``pretrained="auto"`` means random init here.
- ``"frozen_bn"``: torchvision's frozen BatchNorm with ImageNet weights and stem+layer1 frozen
  (``trainable_layers=3``, as mmdet/the BASS code). Weights are read only from the local torch hub cache
  (``$TORCH_HOME/hub/checkpoints/<torchvision file name>``) or from ``pretrained=<path>``; nothing is
  downloaded. With ``pretrained="auto"`` and no local weights it falls back to ``"gn"`` from random init
  (frozen BN with random statistics would be no normalisation at all) and records the fallback.
- ``"bn"``: trainable BatchNorm (not advised at batch 2).

:func:`model_config` returns every setting (effective norm, weights used) as a JSON-able dict.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import misc as misc_nn_ops

from .roialign import MultiScaleRoIAlign
from .transform import NucleiTransform
from .heads import MaskBranch, NucleiRoIHeads, StandardMaskBranch, group_norm

#: torchvision's ImageNet file names (ResNet*_Weights.IMAGENET1K_V1); looked up in the hub cache only.
IMAGENET_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-0676ba61.pth"}
BACKBONES = tuple(IMAGENET_FILES)
NORMS = ("gn", "frozen_bn", "bn")

#: anchor sides at 256 px input, one per FPN level (P2..P6); scaled by input_size / 256.
BASE_ANCHORS = (8, 16, 32, 64, 128)
ASPECT_RATIOS = (0.5, 1.0, 2.0)

#: settings not in the Profile (torchvision / mmdet defaults unless stated), overridable in build_model.
DEFAULTS: dict[str, Any] = {
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_nms_thresh": 0.7,
    "rpn_batch_size_per_image": 256,
    "box_positive_fraction": 0.25,
    "box_score_thresh": 0.05,  # raw detections; the instance map applies its own score threshold
    "box_nms_thresh": 0.5,
    "image_mean": (0.485, 0.456, 0.406),
    "image_std": (0.229, 0.224, 0.225),
}


def anchor_sizes(input_size: int) -> tuple[tuple[int, ...], ...]:
    """Anchor sides per FPN level for ``input_size`` (256 -> 8..128; 800 -> 25..400)."""
    f = input_size / 256.0
    return tuple((max(2, int(round(s * f))),) for s in BASE_ANCHORS)


def find_imagenet_weights(backbone: str, pretrained: str) -> Path | None:
    """Locate backbone weights without downloading.

    Args:
        backbone: ``"resnet18"`` or ``"resnet50"``.
        pretrained: ``"auto"`` (hub cache), ``"none"`` or a file path.

    Returns:
        The weights file, or ``None`` (``"none"``, or ``"auto"`` with nothing cached).

    Raises:
        FileNotFoundError: ``pretrained`` is a path that does not exist.
    """
    if pretrained == "none":
        return None
    if pretrained == "auto":
        path = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[backbone]
        return path if path.is_file() else None
    path = Path(os.path.expanduser(pretrained))
    if not path.is_file():
        raise FileNotFoundError(
            f"profile.pretrained={pretrained!r}: no such file. Give a ResNet state_dict saved with torch.save, "
            f"'auto' (use {Path(torch.hub.get_dir()) / 'checkpoints' / IMAGENET_FILES[backbone]} if present) or 'none'."
        )
    return path


def resolve_backbone_init(profile: Any) -> tuple[str, Path | None]:
    """``(effective_norm, weights_path_or_None)`` for a profile (see the module doc for the rules)."""
    backbone, norm, pretrained = profile.backbone, profile.norm, profile.pretrained
    if backbone not in BACKBONES:
        raise ValueError(f"profile.backbone={backbone!r} is not supported; choose one of {', '.join(BACKBONES)}")
    if norm not in NORMS:
        raise ValueError(f"profile.norm={norm!r} is not supported; choose one of {', '.join(NORMS)}")
    if backbone_width(profile) != 64 and pretrained not in ("auto", "none"):
        raise ValueError(
            f"profile.pretrained={pretrained!r} with profile.backbone_width={backbone_width(profile)}: ImageNet "
            f"weights exist only for torchvision's width 64. Set backbone_width=64, or pretrained=none."
        )
    if norm == "gn":
        if pretrained not in ("auto", "none"):
            raise ValueError(
                f"profile.pretrained={pretrained!r} with norm='gn': ImageNet weights carry BatchNorm statistics "
                f"that GroupNorm cannot use. Set profile.norm=frozen_bn to use them, or pretrained=none."
            )
        return "gn", None
    narrow = backbone_width(profile) != 64
    weights = None if narrow else find_imagenet_weights(backbone, pretrained)
    if weights is None and norm == "frozen_bn":
        why = (f"profile.backbone_width={backbone_width(profile)} has no ImageNet weights" if narrow else
               f"no ImageNet weights for {backbone} found locally (looked for "
               f"{Path(torch.hub.get_dir()) / 'checkpoints' / IMAGENET_FILES[backbone]})")
        warnings.warn(
            f"{why}; frozen BatchNorm needs them, so training from random init with GroupNorm instead "
            f"(recorded in model_config).",
            stacklevel=3,
        )
        return "gn", None
    return norm, weights


def _backbone(profile: Any, norm: str, weights: Path | None) -> nn.Module:
    if norm == "gn":
        norm_layer: Any = group_norm
        trainable = 5
    elif norm == "frozen_bn":
        norm_layer = misc_nn_ops.FrozenBatchNorm2d
        trainable = 3
    else:
        norm_layer = nn.BatchNorm2d
        trainable = 5
    net = getattr(resnet, profile.backbone)(weights=None, norm_layer=norm_layer)
    width = backbone_width(profile)
    if width != 64:
        _narrow(net, width)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{weights} is not a torchvision {profile.backbone} state_dict: {exc}") from exc
    # torchvision's _resnet_fpn_extractor, with the FPN width from the profile
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1", "bn1"][:trainable + (trainable == 5)]
    for name, parameter in net.named_parameters():
        if not any(name.startswith(layer) for layer in layers_to_train):
            parameter.requires_grad_(False)
    in_stage2 = net.inplanes // 8
    return BackboneWithFPN(
        net,
        {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
        [in_stage2 * 2 ** (k - 1) for k in (1, 2, 3, 4)],
        fpn_channels(profile),
        extra_blocks=LastLevelMaxPool(),
        norm_layer=group_norm if norm == "gn" else None,
    )


def backbone_width(profile: Any) -> int:
    """First-stage width of the backbone (``profile.backbone_width`` if the profile has it, else 64)."""
    return int(getattr(profile, "backbone_width", 64))


def _narrow(net: resnet.ResNet, width: int) -> None:
    """Rebuild a torchvision ResNet's stem and four stages with ``width`` channels in the first stage
    (then 2x, 4x, 8x, as torchvision's 64 / 128 / 256 / 512), initialised as torchvision initialises."""
    block = type(net.layer1[0])
    norm_layer = net._norm_layer
    net.inplanes, net.dilation = width, 1
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = norm_layer(width)
    depths = [len(getattr(net, f"layer{k}")) for k in (1, 2, 3, 4)]
    for k, depth in enumerate(depths):
        setattr(net, f"layer{k + 1}", net._make_layer(block, width * 2 ** k, depth, stride=1 if k == 0 else 2))
    net.fc = nn.Linear(net.inplanes, 1000)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def fpn_channels(profile: Any) -> int:
    """FPN width (``profile.fpn_channels`` if the profile has it, else torchvision's 256)."""
    return int(getattr(profile, "fpn_channels", 256))


def build_model(profile: Any, *, mask_branch: MaskBranch | None = None, **overrides: Any) -> MaskRCNN:
    """A torchvision ``MaskRCNN`` for nuclei configured by ``profile``.

    Args:
        profile: a :class:`benchmark.profiles.Profile`.
        mask_branch: the mask side (default :class:`StandardMaskBranch` with the profile's width/depth
            and GroupNorm when the backbone uses it). Methods pass their own branch here.
        **overrides: keys of :data:`DEFAULTS` to change (e.g. ``box_score_thresh=0.01``).

    Returns:
        the model (train mode, CPU). ``model.roi_heads`` is a :class:`NucleiRoIHeads`;
        ``model.nuclei_config`` holds :func:`model_config`'s dict.
    """
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown model override(s) {sorted(unknown)}; valid: {', '.join(sorted(DEFAULTS))}")
    cfg = {**DEFAULTS, **_profile_defaults(profile), **overrides}
    norm, weights = resolve_backbone_init(profile)
    backbone = _backbone(profile, norm, weights)
    anchors = AnchorGenerator(anchor_sizes(profile.input_size), (ASPECT_RATIOS,) * len(BASE_ANCHORS))
    if mask_branch is None:
        mask_branch = StandardMaskBranch(
            backbone.out_channels, profile.mask_head_channels, profile.mask_head_convs,
            norm="gn" if norm == "gn" else None,
        )
    model = MaskRCNN(
        backbone,
        num_classes=None,  # set by box_predictor (2 classes); the mask side is replaced below
        mask_head=nn.Identity(),
        mask_predictor=nn.Identity(),
        min_size=profile.input_size,
        max_size=profile.input_size,
        image_mean=list(cfg["image_mean"]),
        image_std=list(cfg["image_std"]),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=cfg["rpn_pre_nms_top_n_train"],
        rpn_pre_nms_top_n_test=cfg["rpn_pre_nms_top_n_test"],
        rpn_post_nms_top_n_train=profile.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=profile.rpn_post_nms_top_n_test,
        rpn_nms_thresh=cfg["rpn_nms_thresh"],
        rpn_batch_size_per_image=cfg["rpn_batch_size_per_image"],
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, profile.box_head_dim),
        box_predictor=FastRCNNPredictor(profile.box_head_dim, 2),
        box_score_thresh=cfg["box_score_thresh"],
        box_nms_thresh=cfg["box_nms_thresh"],
        box_detections_per_img=profile.detections_per_img,
        box_batch_size_per_image=profile.box_batch_size_per_image,
        box_positive_fraction=cfg["box_positive_fraction"],
    )
    model.transform = NucleiTransform(
        profile.input_size, profile.input_size, list(cfg["image_mean"]), list(cfg["image_std"])
    )
    old = model.roi_heads
    # same poolers as torchvision's defaults, with a CPU backward on every thread (methods.core.roialign)
    model.roi_heads = NucleiRoIHeads(
        MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
        old.box_head,
        old.box_predictor,
        0.5, 0.5,  # fg / bg IoU thresholds (torchvision & mmdet)
        profile.box_batch_size_per_image,
        cfg["box_positive_fraction"],
        None,
        cfg["box_score_thresh"],
        cfg["box_nms_thresh"],
        profile.detections_per_img,
        mask_roi_pool=MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=14, sampling_ratio=2),
        mask_branch=mask_branch,
    )
    model.nuclei_config = model_config(profile, norm=norm, weights=weights, mask_branch=mask_branch, **cfg)
    return model


def _profile_defaults(profile: Any) -> dict[str, Any]:
    """The :data:`DEFAULTS` keys that a profile sets (profiles from before these fields had none)."""
    keys = ("rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test")
    return {k: int(getattr(profile, k)) for k in keys if hasattr(profile, k)}


def model_config(
    profile: Any, *, norm: str | None = None, weights: Path | None = None,
    mask_branch: MaskBranch | None = None, **cfg: Any,
) -> dict[str, Any]:
    """Every model setting as a JSON-able dict (recorded with each result).

    Called without ``norm``/``weights`` it resolves them from the profile as :func:`build_model` would.
    """
    if norm is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            norm, weights = resolve_backbone_init(profile)
    cfg = {**DEFAULTS, **_profile_defaults(profile), **cfg}
    branch = mask_branch.config() if mask_branch is not None else {
        "type": "StandardMaskBranch", "channels": profile.mask_head_channels, "convs": profile.mask_head_convs,
        "norm": "gn" if norm == "gn" else None, "loss_weight": 1.0,
    }
    return {
        "arch": "torchvision.MaskRCNN",
        "num_classes": 2,
        "class_agnostic_masks": True,
        "backbone": f"{profile.backbone}-fpn",
        # only when narrowed, so that configs recorded before the field existed stay as they were
        **({"backbone_width": backbone_width(profile)} if backbone_width(profile) != 64 else {}),
        "fpn_channels": fpn_channels(profile),
        "norm_requested": profile.norm,
        "norm": norm,
        "weights": f"imagenet:{weights}" if weights is not None else "random",
        "trainable_backbone_layers": 3 if norm == "frozen_bn" else 5,
        "input_size": profile.input_size,
        "anchor_sizes": [list(a) for a in anchor_sizes(profile.input_size)],
        "aspect_ratios": list(ASPECT_RATIOS),
        "rpn_post_nms_top_n_train": profile.rpn_post_nms_top_n_train,
        "rpn_post_nms_top_n_test": profile.rpn_post_nms_top_n_test,
        "box_batch_size_per_image": profile.box_batch_size_per_image,
        "box_head_dim": profile.box_head_dim,
        "detections_per_img": profile.detections_per_img,
        "mask_roi_size": 14,
        "mask_output_size": 28,
        "mask_target_binarize": 0.5,
        "mask_branch": branch,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
    }
