"""Training profiles: named, frozen schedules shared by every deep method.

A profile fixes everything about *how long and at what size* a deep method trains, so that two methods
run with the same profile are compared on equal terms. Profiles are frozen dataclasses; their
:meth:`Profile.digest` enters the result-cache key, so changing a field re-runs the affected cells.

==========  ==============================================================================
``quick``   the first run (default of ``--datasets synthetic``): a half-width ResNet-18-FPN (64-wide FPN),
            AdamW, 200 iterations, 32 RoIs per image, a 100-detection cap; see docs/first-run-and-speed.md.
``smoke``   tests and CI: lean ResNet-18-FPN (128-wide FPN), native 256 px, 80 iterations (~2 min on
            2 cores); learns synthetic nuclei to AJI ~0.2-0.25 from random init.
``cpu``     real data on a 2-core CPU: lean ResNet-18-FPN at 256 px, 600 iterations (~12 epochs of
            MoNuSeg 1/8's 98 patches, <= ~30 min on 2 idle cores), lr 0.01 with warm-up.
``paper``   GPU: ResNet-50-FPN, 800 px input, the released code's 1x-style schedule.
==========  ==============================================================================

Override single fields from the CLI with ``--set profile.iterations=500``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from benchmark import options
from benchmark.options import OptionError, option


@dataclasses.dataclass(frozen=True)
class Profile:
    """A training schedule and model size.

    Attributes:
        name: profile name.
        backbone: ``"resnet18"`` or ``"resnet50"`` (FPN on top).
        norm: backbone normalisation: ``"frozen_bn"`` (with pretrained weights), ``"gn"`` (GroupNorm,
            the default from random init, robust at batch 2) or ``"bn"``.
        pretrained: ``"auto"`` (ImageNet backbone weights if found locally, else random init),
            ``"none"`` or a path to a backbone ``state_dict``. Never downloads.
        input_size: patches are resized to this side before the network (256 = native; the paper's
            code used 800).
        iterations: SGD iterations per training stage (teacher, student, ...).
        batch_size: patches per iteration.
        lr, momentum, weight_decay: SGD settings (paper: 0.02 / 0.9 / 0.001).
        warmup_iters: linear warm-up length, starting at ``warmup_factor * lr``.
        lr_steps: fractions of ``iterations`` at which the LR is multiplied by 0.1.
        grad_clip: max global gradient norm (0 = off).
        amp: mixed precision on CUDA (ignored on CPU).
        checkpoint_every: iterations between checkpoints (the final one is always written).
        rpn_post_nms_top_n_train / rpn_post_nms_top_n_test: proposals kept after RPN NMS.
        fpn_channels: FPN width (torchvision: 256). The FPN output convs and the RPN conv at full
            resolution cost more than a ResNet-18 itself; 128 cuts a lean model's CPU step by about a quarter.
        box_batch_size_per_image: RoIs sampled per image for the box head.
        box_head_dim: width of the two-FC box head (torchvision: 1024).
        mask_head_channels / mask_head_convs: width and depth of the mask head (torchvision: 256 / 4).
        detections_per_img: detection cap (torchvision's 100 truncates dense nuclei patches).
        eval_batch_size: patches per forward pass at inference.
        backbone_width: channels of the backbone's first stage (torchvision: 64); each later stage doubles
            it. Below 64 the backbone is a narrow ResNet that only trains from random init.
        optimizer: ``"sgd"`` (``momentum`` as SGD momentum) or ``"adamw"`` (``momentum`` as beta1,
            decoupled ``weight_decay``).
        rpn_pre_nms_top_n_train / rpn_pre_nms_top_n_test: proposals kept per FPN level before the RPN's
            NMS (torchvision: 2000 / 1000). NMS runs on one thread and grows with the square of this.

    Fields added after the first release (:data:`LATE_FIELDS`) enter :meth:`to_dict` and :meth:`digest`
    only when set away from their default, so every result key written before they existed stays valid.
    """

    name: str
    backbone: str = option("resnet18", "backbone (FPN on top)", choices=("resnet18", "resnet50"))
    norm: str = option("gn", "backbone normalisation", choices=("frozen_bn", "gn", "bn"))
    pretrained: str = option("auto", "'auto', 'none' or a path to a backbone state_dict (never downloads)")
    input_size: int = option(256, "patch side before the network, pixels", low=32)
    iterations: int = option(40, "SGD iterations per training stage", low=1)
    batch_size: int = option(2, "patches per iteration", low=1)
    lr: float = option(0.02, "SGD learning rate", low=0.0, low_open=True)
    momentum: float = option(0.9, "SGD momentum", low=0.0, high=1.0)
    weight_decay: float = option(0.001, "SGD weight decay", low=0.0)
    warmup_iters: int = option(10, "linear warm-up length, iterations", low=0)
    warmup_factor: float = option(0.001, "warm-up starts at warmup_factor * lr", low=0.0, high=1.0, low_open=True)
    lr_steps: tuple[float, ...] = option((0.75, 0.9), "fractions of iterations where lr *= 0.1", low=0.0, high=1.0)
    grad_clip: float = option(10.0, "max global gradient norm (0 = off)", low=0.0)
    amp: bool = option(True, "mixed precision on CUDA (ignored on CPU)")
    checkpoint_every: int = option(20, "iterations between checkpoints", low=1)
    rpn_post_nms_top_n_train: int = option(300, "proposals kept after RPN NMS (training)", low=1)
    rpn_post_nms_top_n_test: int = option(300, "proposals kept after RPN NMS (inference)", low=1)
    fpn_channels: int = option(256, "FPN width", low=1)
    box_batch_size_per_image: int = option(128, "RoIs sampled per image for the box head", low=1)
    box_head_dim: int = option(256, "width of the two-FC box head", low=1)
    mask_head_channels: int = option(128, "mask head width", low=1)
    mask_head_convs: int = option(2, "mask head depth (convolutions)", low=1)
    detections_per_img: int = option(300, "detection cap per image", low=1)
    eval_batch_size: int = option(4, "patches per forward pass at inference", low=1)
    backbone_width: int = option(64, "channels of the backbone's first stage (later stages double it)", low=8)
    optimizer: str = option("sgd", "optimizer", choices=("sgd", "adamw"))
    rpn_pre_nms_top_n_train: int = option(2000, "proposals per FPN level before RPN NMS (training)", low=1)
    rpn_pre_nms_top_n_test: int = option(1000, "proposals per FPN level before RPN NMS (inference)", low=1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        for name, default in LATE_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    def digest(self) -> str:
        """Short stable hash of every field (enters the result-cache key)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **changes: Any) -> "Profile":
        """A copy with fields changed. Values (CLI strings or Python values) go through the suite's one
        coercion (:func:`benchmark.options.coerce`); an unknown field, a wrong type or an out-of-range
        value raises :class:`~benchmark.options.OptionError` naming ``profile.<field>``."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise OptionError(
                f"unknown profile field(s) {unknown}; valid fields: {', '.join(sorted(fields))}"
            )
        coerced = {k: options.parse(Profile, k, v, owner="profile", show_default=False) for k, v in changes.items()}
        return dataclasses.replace(self, **coerced)


#: fields added after the first release and their defaults (left out of ``to_dict`` at the default).
LATE_FIELDS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Profile)
    if f.name in ("backbone_width", "optimizer", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test")
}

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        backbone="resnet18",
        input_size=256,
        iterations=80,
        batch_size=2,
        lr=0.01,
        warmup_iters=10,
        lr_steps=(0.85,),
        checkpoint_every=40,
        rpn_post_nms_top_n_train=200,
        rpn_post_nms_top_n_test=200,
        fpn_channels=128,
        box_batch_size_per_image=64,
        box_head_dim=128,
        mask_head_channels=64,
        mask_head_convs=2,
        detections_per_img=200,
    ),
    "cpu": Profile(
        name="cpu",
        backbone="resnet18",
        input_size=256,
        iterations=600,
        batch_size=2,
        lr=0.01,
        warmup_iters=50,
        lr_steps=(0.75, 0.9),
        checkpoint_every=100,
        rpn_post_nms_top_n_train=300,
        rpn_post_nms_top_n_test=300,
        fpn_channels=128,
        box_batch_size_per_image=128,
        box_head_dim=256,
        mask_head_channels=128,
        mask_head_convs=2,
        detections_per_img=300,
    ),
    "paper": Profile(
        name="paper",
        backbone="resnet50",
        norm="frozen_bn",
        input_size=800,
        iterations=20000,
        batch_size=2,
        lr=0.02,
        warmup_iters=500,
        lr_steps=(0.67, 0.89),
        checkpoint_every=1000,
        rpn_post_nms_top_n_train=2000,
        rpn_post_nms_top_n_test=1000,
        box_batch_size_per_image=512,
        box_head_dim=1024,
        mask_head_channels=256,
        mask_head_convs=4,
        detections_per_img=300,
        eval_batch_size=8,
    ),
    "quick": Profile(
        name="quick",
        backbone="resnet18",
        backbone_width=32,
        input_size=256,
        iterations=200,
        batch_size=2,
        optimizer="adamw",
        lr=0.001,
        weight_decay=0.05,
        warmup_iters=20,
        lr_steps=(0.85,),
        checkpoint_every=100,
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=150,
        rpn_post_nms_top_n_test=150,
        fpn_channels=64,
        box_batch_size_per_image=32,
        box_head_dim=128,
        mask_head_channels=64,
        mask_head_convs=2,
        detections_per_img=100,
        eval_batch_size=8,
    ),
}


def get_profile(name: str) -> Profile:
    """Look a profile up by name; an unknown name lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; available: {', '.join(PROFILES)}") from None
