"""Training profiles: named, frozen schedules shared by every deep method.

A profile fixes everything about *how long and at what size* a deep method trains, so that two methods
run with the same profile are compared on equal terms. Profiles are frozen dataclasses; their
:meth:`Profile.digest` enters the result-cache key, so changing a field re-runs the affected cells.

==========  ==============================================================================
``quick``   the first run (default of ``--datasets synthetic``): ``smoke``'s backbone with slimmer heads
            (64-wide FPN), 160 iterations at lr 0.02, a 100-detection cap; see docs/quickstart.md.
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
    """

    name: str
    backbone: str = "resnet18"
    norm: str = "gn"
    pretrained: str = "auto"
    input_size: int = 256
    iterations: int = 40
    batch_size: int = 2
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.001
    warmup_iters: int = 10
    warmup_factor: float = 0.001
    lr_steps: tuple[float, ...] = (0.75, 0.9)
    grad_clip: float = 10.0
    amp: bool = True
    checkpoint_every: int = 20
    rpn_post_nms_top_n_train: int = 300
    rpn_post_nms_top_n_test: int = 300
    fpn_channels: int = 256
    box_batch_size_per_image: int = 128
    box_head_dim: int = 256
    mask_head_channels: int = 128
    mask_head_convs: int = 2
    detections_per_img: int = 300
    eval_batch_size: int = 4

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        return d

    def digest(self) -> str:
        """Short stable hash of every field (enters the result-cache key)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **changes: Any) -> "Profile":
        """A copy with fields changed; unknown fields raise a ``ValueError`` listing valid ones."""
        valid = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown profile field(s) {unknown}; valid fields: {', '.join(sorted(valid))}"
            )
        coerced = {k: _coerce(v, getattr(self, k)) for k, v in changes.items()}
        return dataclasses.replace(self, **coerced)


def _coerce(value: Any, like: Any) -> Any:
    """Convert a CLI string to the type of the existing field value."""
    if not isinstance(value, str):
        return value
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, tuple):
        return tuple(float(x) for x in value.split(",") if x)
    return value


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
        input_size=256,
        iterations=160,
        batch_size=2,
        lr=0.02,
        warmup_iters=20,
        lr_steps=(0.85,),
        checkpoint_every=80,
        rpn_post_nms_top_n_train=150,
        rpn_post_nms_top_n_test=150,
        fpn_channels=64,
        box_batch_size_per_image=48,
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
