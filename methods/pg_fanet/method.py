"""PG-FANet (Jin et al., ESWA 2024) adapted to Mask R-CNN: a mean teacher on a two-stage mask head.

The official PG-FANet (``BioMedIA-repo/PG-FANet``) is a *semantic* segmentation network (two-stage
dilated ResNet-34 encoders whose stage-1 prediction is argmax-binarised and concatenated to the stage-2
input, multi-scale/multi-stage feature aggregation) trained as a mean teacher; instances come from
connected components. This module carries its semi-supervised ingredients over to the shared Mask R-CNN
core (a "Mask R-CNN adaptation", so that every method shares one detector), and says so in ``approximation``:

- **Pseudo-mask-guided two-stage mask head** (:class:`TwoStageMaskBranch`): the mask convs produce a
  14x14 stage-1 mask; its binarised prediction (logit >= 0, i.e. probability >= 0.5; no gradient) is
  concatenated to the stage-1 features and a 3x3 conv + 2x deconvolution produce the final 28x28 mask.
  Supervised: BCE + Dice on both stages (the official CE + Dice on final and auxiliary outputs; its
  instance-variance loss is specific to semantic maps and left out).
- **Mean teacher** (EMA 0.99 with the official ``models/EMA.py`` warm-up ``min(0.99, (t+1)/(t+10))``):
  on each unlabeled batch the teacher (clean view) detects nuclei (score >= ``teacher_score_thresh``);
  the student sees the same view with Gaussian noise (std ``noise_std`` in normalised-image units, the
  official ``transforms_for_noise(x, 0.5)``) and runs its mask head on the *teacher's* boxes.
- **Uncertainty-weighted consistency** (official ``softmax_aug_msketp_lr_mse_loss``), per RoI pixel,
  with ``p_s``/``p_T`` the student/teacher 28x28 mask probabilities and ``p_s1`` the student's stage-1
  probability upsampled to 28x28::

      H_T  = binary entropy of p_T / log 2                      (teacher uncertainty, in [0, 1])
      t    = (1 - H_T) * p_T + H_T * p_s                         (p_s detached here: detach_target)
      A    = min-max over the RoI of  -d log d,  d = |p_s - p_T|  (detached attention weight)
      loss = mean[(1 + A) * (p_s - t)^2]  +  mean[(p_s - p_s1)^2]    ("inter" + "intra" terms)

  With a two-class softmax both channels carry the same values, so the fg probability suffices (the
  official per-class ``-p log p`` is replaced by the normalised binary entropy, as the spec words it).
- **Weight** ``consistency_weight * sigmoid_rampup(t, rampup_len * iterations)`` = 0.1 ramped over the
  whole schedule (the official ramp length is the number of epochs).

The model trains from scratch on labeled + unlabeled patches for the profile's iterations (as the
official code trains one network on both), so it needs no ``maskrcnn`` teacher cell.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.options import option
from methods.core.options import RuleOptions
from methods.core.heads import MaskRoIs, StandardMaskBranch, group_norm, masked_bce
from methods.core.train import history_summary
from methods.core.meanteacher import (
    EMATeacherHook,
    MeanTeacherMaskRCNN,
    RampSchedule,
    UnlabeledStream,
    clone_teacher,
    color_jitter,
    dihedral,
    images_to_tensors,
    teacher_detections,
)


# ---------------------------------------------------------------------------------- the mask branch
def masked_dice(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean soft Dice loss ``1 - (2 sum(pt) + s) / (sum(p) + sum(t) + s)`` over the valid RoIs.

    Args:
        logits: ``(R, 1, M, M)`` or ``(R, M, M)``; targets: ``(R, M, M)`` in [0, 1]; valid: ``bool (R,)``.

    Returns:
        a scalar; a graph-connected zero when no RoI is valid.
    """
    if logits.dim() == 4:
        logits = logits[:, 0]
    if valid.numel() == 0 or not bool(valid.any()):
        return logits.sum() * 0.0
    p = logits[valid].float().sigmoid().flatten(1)
    t = targets[valid].float().flatten(1)
    dice = (2.0 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1.0 - dice).mean()


def _conv(cin: int, cout: int, k: int, norm: str | None) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=norm != "gn")
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    layers: list[nn.Module] = [conv]
    if norm == "gn":
        layers.append(group_norm(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class TwoStageMaskBranch(StandardMaskBranch):
    """PG-FANet's pseudo-mask-guided two-stage aggregation as a Mask R-CNN mask branch.

    Stage 1: the standard conv trunk on the 14x14 RoI features, one more 3x3 conv and a 1x1 conv to a
    14x14 logit map. Stage 2: ``concat(trunk features, binarised stage-1 mask)`` -> 3x3 conv -> 2x
    deconvolution -> 1x1 conv -> 28x28 logits (``"mask_logits"``, used at inference).

    Args:
        in_channels, channels, convs, norm, loss_weight: as :class:`StandardMaskBranch`.
        stage1_weight: weight of the stage-1 (14x14) supervised loss.
        dice_weight: Dice added to BCE on both stages (0 = BCE only).

    ``forward`` returns ``{"mask_logits": (R, 1, 28, 28), "stage1_logits": (R, 1, 14, 14)}``; ``loss``
    returns ``loss_mask`` (28x28 BCE + Dice) and ``loss_mask_stage1`` (14x14 BCE + Dice on binarised
    14x14 targets).
    """

    def __init__(
        self, in_channels: int = 256, channels: int = 256, convs: int = 4, norm: str | None = None,
        loss_weight: float = 1.0, stage1_weight: float = 1.0, dice_weight: float = 1.0,
    ) -> None:
        super().__init__(in_channels, channels, convs, norm, loss_weight)
        self.stage1_weight, self.dice_weight = float(stage1_weight), float(dice_weight)
        self.stage1 = nn.Sequential(*_conv(channels, channels, 3, norm), nn.Conv2d(channels, 1, 1))
        nn.init.kaiming_normal_(self.stage1[-1].weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.stage1[-1].bias)
        self.guided = nn.Sequential(*_conv(channels + 1, channels, 3, norm))

    def forward(self, rois: MaskRoIs) -> dict[str, torch.Tensor]:
        x = self.trunk(rois.roi_features)
        s1 = self.stage1(x)
        pseudo = (s1.detach() >= 0).to(x.dtype)  # binarised stage-1 prediction (p >= 0.5)
        y = self.guided(torch.cat([x, pseudo], dim=1))
        y = F.relu(self.deconv(y))
        return {"mask_logits": self.logits(y), "stage1_logits": s1}

    def loss(self, outputs: dict[str, torch.Tensor], rois: MaskRoIs) -> dict[str, torch.Tensor]:
        valid = rois.mask_valid()
        out = {}
        for key, name, w in (("mask_logits", "loss_mask", self.loss_weight),
                             ("stage1_logits", "loss_mask_stage1", self.stage1_weight)):
            logits = outputs[key]
            t = rois.mask_targets(logits.shape[-1])
            out[name] = w * (masked_bce(logits, t, valid) + self.dice_weight * masked_dice(logits, t, valid))
        return out

    def config(self) -> dict[str, Any]:
        return {**super().config(), "stage1_weight": self.stage1_weight, "dice_weight": self.dice_weight}


# ---------------------------------------------------------------------------------- consistency
def binary_entropy(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalised binary entropy ``-(p log p + (1-p) log(1-p)) / log 2`` in ``[0, 1]`` (elementwise)."""
    q = p.clamp(eps, 1.0 - eps)
    return -(q * torch.log(q) + (1.0 - q) * torch.log(1.0 - q)) / float(np.log(2.0))


def uncertainty_target(p_s: torch.Tensor, p_t: torch.Tensor, *, detach_student: bool = True) -> torch.Tensor:
    """``t = (1 - H_T) p_T + H_T p_s`` with ``H_T = binary_entropy(p_T)`` (teacher detached).

    Where the teacher is certain (``H_T = 0``) the target is the teacher; where it is maximally uncertain
    (``p_T = 0.5``, ``H_T = 1``) the target is the student's own prediction (no pull). ``detach_student``
    makes ``t`` a constant target; without it the gradient flows through ``t`` as in the official code.
    """
    p_t = p_t.detach()
    h = binary_entropy(p_t)
    return (1.0 - h) * p_t + h * (p_s.detach() if detach_student else p_s)


def discrepancy_attention(p_s: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
    """``A``: per RoI, min-max-normalised entropy ``-d log d`` of ``d = |p_s - p_T|`` (detached).

    Args:
        p_s, p_t: ``(R, M, M)`` probabilities.

    Returns:
        ``(R, M, M)`` in ``[0, 1]``; 0 for a RoI whose entropy map is constant.
    """
    d = (p_s.detach() - p_t.detach()).abs()
    e = -d * torch.log(d + 1e-12)
    flat = e.flatten(1)
    lo = flat.min(1).values[:, None, None]
    hi = flat.max(1).values[:, None, None]
    span = hi - lo
    return torch.where(span > 1e-12, (e - lo) / span.clamp_min(1e-12), torch.zeros_like(e))


def pgfanet_consistency(
    p_s: torch.Tensor, p_t: torch.Tensor, p_s1: torch.Tensor, *, detach_target: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inter, intra)`` = ``(mean[(1 + A)(p_s - t)^2], mean[(p_s - p_s1)^2])`` (see the module doc).

    Args:
        p_s: student final mask probabilities ``(R, M, M)``; p_t: teacher's; p_s1: student stage-1
            probabilities upsampled to ``M x M``. ``R = 0`` gives graph-connected zeros.
    """
    if p_s.numel() == 0:
        zero = p_s.sum() * 0.0 + p_s1.sum() * 0.0
        return zero, zero
    t = uncertainty_target(p_s, p_t, detach_student=detach_target)
    a = discrepancy_attention(p_s, p_t)
    inter = ((1.0 + a) * (p_s - t) ** 2).mean()
    intra = ((p_s - p_s1) ** 2).mean()
    return inter, intra


# ---------------------------------------------------------------------------------- training hook
class PGFANetHook(EMATeacherHook):
    """Training-loop hook: EMA teacher + uncertainty-weighted mask consistency on unlabeled batches.

    Args:
        teacher: initial teacher (frozen copy of the student).
        images: unlabeled ``uint8 (H, W, 3)`` patches.
        ramp: the consistency weight schedule (weight included).
        batch_size: unlabeled patches per iteration.
        seed: run seed.
        options: method options (``ema_decay``, ``ema_schedule``, ``teacher_score_thresh``,
            ``noise_std``, ``detach_target``).
    """

    def __init__(self, teacher: nn.Module, images: Sequence[Any], *, ramp: RampSchedule, batch_size: int,
                 seed: int, options: dict[str, Any]) -> None:
        super().__init__(teacher, max_decay=options["ema_decay"], schedule=options["ema_schedule"])
        self.images = list(images)
        self.ramp = ramp
        self.stream = UnlabeledStream(len(self.images), batch_size, seed)
        self.o = dict(options)
        self.stats: dict[str, float] = {}

    def extra_losses(self, ctx: Any) -> dict[str, torch.Tensor]:
        w = self.ramp.weight(ctx.iteration)
        zero = next(iter(ctx.losses.values())).new_zeros(()).float()
        if w <= 0.0:
            return {"loss_mt_inter": zero, "loss_mt_intra": zero}
        student = ctx.model
        dev = ctx.images[0].device
        teacher = self.to_device(dev)
        rng = self.stream.rng(ctx.iteration)
        views = [color_jitter(dihedral(self.images[i], rng), rng) for i in self.stream.indices(ctx.iteration)]
        tensors = images_to_tensors(views, dev)

        with torch.no_grad():
            il_t = teacher.transform(tensors)[0]
            _, dets = teacher_detections(teacher, il_t, score_thresh=float(self.o["teacher_score_thresh"]))
        boxes = [d["boxes"] for d in dets]
        n = sum(len(b) for b in boxes)
        self.stats = {"teacher_dets": n / max(1, len(boxes))}

        il_s = student.transform(tensors)[0]
        noise = rng.standard_normal(tuple(il_s.tensors.shape)).astype(np.float32) * float(self.o["noise_std"])
        x = il_s.tensors + torch.from_numpy(noise).to(il_s.tensors)
        if n == 0:
            return {"loss_mt_inter": zero, "loss_mt_intra": zero}
        feats = student.backbone(x)
        heads = student.roi_heads
        sizes = il_s.image_sizes
        rois = MaskRoIs(features=feats, proposals=boxes, image_shapes=sizes,
                        roi_features=heads.mask_roi_pool(feats, boxes, sizes), training=False)
        out = heads.mask_branch(rois)
        p_s = out["mask_logits"].float().sigmoid()[:, 0]
        p_s1 = F.interpolate(out["stage1_logits"].float().sigmoid(), size=tuple(p_s.shape[-2:]),
                             mode="bilinear", align_corners=False)[:, 0]
        p_t = torch.cat([d["masks"] for d in dets]).float()[:, 0]
        inter, intra = pgfanet_consistency(p_s, p_t, p_s1, detach_target=bool(self.o["detach_target"]))
        return {"loss_mt_inter": w * inter, "loss_mt_intra": w * intra}


# ---------------------------------------------------------------------------------- the method
@dataclasses.dataclass(frozen=True)
class PGFANetOptions(RuleOptions):
    """Options of :class:`PGFANetMethod` (plus the instance-map rule of :class:`RuleOptions`)."""

    ema_decay: float = option(0.99, "teacher EMA decay", low=0.0, high=1.0)
    ema_schedule: str = option("warmup10", "EMA schedule", choices=("mean_teacher", "warmup10"))
    consistency_weight: float = option(0.1, "plateau weight of the consistency loss", low=0.0)
    rampup_len: float = option(1.0, "sigmoid ramp-up length, fraction of the profile's iterations", low=0.0)
    teacher_score_thresh: float = option(0.5, "teacher detections whose masks are the targets", low=0.0, high=1.0)
    noise_std: float = option(0.5, "Gaussian noise on the student's unlabeled input", low=0.0)
    detach_target: bool = option(True, "the student's share of the mixed target carries no gradient")
    stage1_weight: float = option(1.0, "supervised stage-1 loss weight", low=0.0)
    dice_weight: float = option(1.0, "weight of the Dice term added to BCE", low=0.0)
    unlabeled_batch_size: int = option(0, "unlabeled patches per iteration (0 = the profile's batch size)", low=0)
    predict_with: str = option("student", "model used for prediction", choices=("student", "teacher"))
    augment: bool = option(True, "flips/rotations/colour jitter on labeled batches")


class PGFANetMethod(MeanTeacherMaskRCNN):
    """PG-FANet's mean teacher and two-stage mask head on Mask R-CNN (see the module docstring).

    Options (``defaults``; all recorded by ``config()``):
        ema_decay (0.99), ema_schedule ("warmup10"): teacher EMA (``"mean_teacher"`` =
            ``min(1 - 1/(t+1), decay)`` is the alternative).
        consistency_weight (0.1): plateau weight of the consistency loss.
        rampup_len (1.0): sigmoid ramp-up length as a fraction of the profile's iterations.
        teacher_score_thresh (0.5): teacher detections whose masks are the consistency targets.
        noise_std (0.5): Gaussian noise on the student's unlabeled input (normalised-image units).
        detach_target (True): the student's share of the mixed target ``t`` carries no gradient.
        stage1_weight (1.0), dice_weight (1.0): supervised stage-1 loss weight; Dice added to BCE.
        unlabeled_batch_size (0): unlabeled patches per iteration (0 = the profile's batch size).
        predict_with ("student"): "student" (as the official evaluation) or "teacher".
        augment (True): flips/rotations/colour jitter on labeled batches.
        score_thresh, mask_thresh, dilate, min_area: the detections -> instance map rule.
    """

    name = "pg-fanet"
    description = (
        "PG-FANet (Mask R-CNN adaptation): mean teacher with uncertainty-weighted mask consistency, two-stage mask head"
    )
    approximation = (
        "Mask R-CNN adaptation: mean teacher on a pseudo-mask-guided two-stage mask head with uncertainty-weighted "
        "consistency on teacher-detected RoIs; not the original two-stage dilated ResNet-34 semantic network"
    )
    version = "1"
    Options = PGFANetOptions
    table_order = 70

    def make_branch(self, profile: Any) -> TwoStageMaskBranch:
        from methods.core.model import fpn_channels, resolve_backbone_init

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            norm, _ = resolve_backbone_init(profile)
        return TwoStageMaskBranch(
            fpn_channels(profile), profile.mask_head_channels, profile.mask_head_convs,
            norm="gn" if norm == "gn" else None,
            stage1_weight=float(self.options["stage1_weight"]), dice_weight=float(self.options["dice_weight"]),
        )

    def ramp(self, total: int) -> RampSchedule:
        o = self.options
        return RampSchedule.from_fractions(total, o["consistency_weight"], 0.0, o["rampup_len"], 0.0)

    def train_model(self, labeled, unlabeled, data, *, profile, seed, device, workdir, progress, key):
        from methods.core.augment import NO_AUGMENT, Augment
        from methods.core.model import build_model
        from methods.core.train import train

        o = self.options
        torch.manual_seed(seed)
        model = build_model(profile, mask_branch=self.make_branch(profile))
        ramp = self.ramp(int(profile.iterations))
        hook = PGFANetHook(clone_teacher(model), [p.image for p in unlabeled], ramp=ramp,
                           batch_size=int(o["unlabeled_batch_size"]) or int(profile.batch_size), seed=seed, options=o)
        result = train(model, labeled, profile, seed=seed, device=device, workdir=workdir, hook=hook,
                       augment=Augment() if o["augment"] else NO_AUGMENT, progress=progress, stage=self.name,
                       config=key)
        final = hook.teacher if o["predict_with"] == "teacher" else model
        return final, {
            "iterations": result.iterations,
            "resumed_from": result.resumed_from,
            "train_seconds_last_call": round(result.seconds, 1),
            "ramp": ramp.config(),
            "final_losses": history_summary(result.history),
            "history": result.history,
            "last_unlabeled_stats": hook.stats,
        }
