"""MMT-PSM (Zhou et al., MICCAI 2020): mask-guided mean teacher with perturbation-sensitive sample mining.

Re-implemented on the shared torchvision Mask R-CNN core from the official code
(``Amandaynzhou/MMT-PSM``, ``engine/MTtrainer.py``, ``modeling/detector/generalized_rcnn.py``,
``modeling/roi_heads/box_head/loss.py``), Mask R-CNN only (the IR-Net relation modules disabled, the
README's Mask R-CNN-only setting). How one training iteration runs here:

1. **Supervised**: the usual Mask R-CNN losses on a labeled batch (the shared training loop).
2. **Unlabeled views**: each unlabeled patch of the iteration gets one random flip/rotation (shared), then
   ``n_color_aug`` (K = 2) colour-jittered + randomly erased copies for the teacher, each also
   horizontally flipped (2K = 4 teacher views), and one more independently jittered + erased copy for
   the student (the official unlabeled transform: brightness/contrast 0.15, hue 0.05, erasing p = 0.9).
3. **Teacher** (EMA of the student, ``alpha_t = min(1 - 1/(t+1), 0.99)``), no gradient: inference on
   teacher view 0; its detections with score >= ``teacher_score_thresh`` are the "ground truth" that
   labels the teacher-RPN proposals foreground/background with Mask R-CNN's usual matcher and
   positive/negative sampler (torchvision ``select_training_samples``; GT boxes are added to the
   proposals). The box head then scores these RoIs on all 2K views (flipped RoIs on flipped views).
4. **PSM** (:func:`psm_loss`): per RoI the teacher's class softmax over the views gives a mean and a
   standard deviation (summed over classes = the perturbation sensitivity). All positive RoIs are kept;
   of the negatives only the ``floor(#pos / 2)`` with the *largest* teacher variance. Target =
   ``sharpen(softmax(mean teacher logits), T = 0.5)``; loss =
   ``mean_i(w_i * CE(target_i, log_softmax(student_i))) / 3`` (sum over classes, mean over kept RoIs),
   ``w = 1`` for positives and ``neg_weight = 1.5`` for negatives; weight ``psm_weight = 0.2``.
5. **MGD** (:func:`mgd_loss`): a 1x1-conv adaptor per FPN level (256 -> 128 channels, the official
   ``MaskRCNNFPNAdaptor`` with ``T_ADAPT``; the teacher's is the EMA of the student's) maps student and
   teacher features; the squared difference is masked by the union of the teacher's binarised masks
   (average-pooled to each level, > 0.5) and normalised by ``#masked pixels x channels``; averaged over
   teacher views (flipped views flipped back) and levels; weight ``mgd_weight = 1``.
6. Both terms are multiplied by ``consistency_lambda * ramp(t)`` (lambda = 5): 0 before
   ``rampup_start``, a sigmoid ramp-up of ``rampup_len``, a sigmoid ramp-down (``exp(-12 (1-x)^2)``, as
   the official code) over the last ``rampdown_len``. The official run used 1000 / 250 / 250 of 7000
   iterations; the defaults are those fractions of the profile's iterations (1/7, 1/28, 1/28).
7. After each optimiser step the teacher is updated by EMA. Prediction uses the teacher
   (``predict_with="teacher"``) or the student.

Initialisation: student and teacher start from the supervised ``maskrcnn`` model (the runner trains
that cell first and sets ``teacher_workdir``; without it, e.g. under ``check-method``, one is trained
into ``workdir/teacher``). The official code instead trains the student supervised for 1000 iterations
before switching the mean teacher on; the finished ``maskrcnn`` cell plays that role here, so
``rampup_start=0`` is a legitimate variant (the default keeps the official fraction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.options import option
from methods.core.options import RuleOptions
from methods.core.train import history_summary
from methods.core.meanteacher import (
    EMATeacherHook,
    MeanTeacherMaskRCNN,
    RampSchedule,
    UnlabeledStream,
    clone_teacher,
    color_jitter,
    dihedral,
    flip_boxes,
    images_to_tensors,
    random_erase,
    teacher_detections,
)

FPN_LEVELS = ("0", "1", "2", "3", "pool")


# ---------------------------------------------------------------------------------- PSM
def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^(1/T)`` renormalised over dim 1 (``(R, C)`` probabilities); detached."""
    pt = p.detach() ** (1.0 / temperature)
    return pt / pt.sum(dim=1, keepdim=True)


def mine_rois(
    labels: torch.Tensor, variance: torch.Tensor, neg_weight: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturbation-sensitive sample mining.

    Args:
        labels: ``(R,)`` RoI labels, ``> 0`` foreground, ``0`` background (others ignored).
        variance: ``(R,)`` teacher prediction variance per RoI (std over views, summed over classes).
        neg_weight: weight of the kept negatives.

    Returns:
        ``(index, weight)``: every positive RoI (in order) followed by the ``floor(#pos / 2)`` negatives
        with the largest variance (ties: lower index first), and their loss weights (1 / ``neg_weight``).
    """
    pos = torch.nonzero(labels > 0).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    n_keep = min(int(neg.numel()), int(pos.numel()) // 2)
    order = torch.argsort(variance[neg], descending=True, stable=True)[:n_keep]
    idx = torch.cat([pos, neg[order]])
    w = torch.ones(idx.numel(), dtype=torch.float32, device=labels.device)
    w[pos.numel():] = neg_weight
    return idx, w


def psm_loss(
    student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor], labels: torch.Tensor, *,
    temperature: float = 0.5, neg_weight: float = 1.5,
) -> torch.Tensor:
    """The PSM classification-distillation loss (official ``evaluatePSM`` + ``cls_loss``).

    Args:
        student_logits: ``(R, C)`` student box-class logits on the RoIs.
        teacher_logits: one ``(R, C)`` tensor per teacher view (same RoIs).
        labels: ``(R,)`` fg (> 0) / bg (0) labels of the RoIs from the teacher's detections.
        temperature: sharpening temperature of the target.
        neg_weight: loss weight of mined negatives.

    Returns:
        scalar ``sum_c mean_i(-w_i * target_ic * log_softmax(student)_ic) / 3``; a graph-connected zero when
        there is no positive RoI.
    """
    t = torch.stack([x.detach().float() for x in teacher_logits])  # (V, R, C)
    probs = F.softmax(t, dim=-1)
    variance = probs.std(dim=0).sum(-1) if t.shape[0] > 1 else torch.zeros(t.shape[1], device=t.device)
    idx, w = mine_rois(labels, variance, neg_weight)
    if idx.numel() == 0:
        return student_logits.sum() * 0.0
    target = sharpen(F.softmax(t.mean(0), dim=-1), temperature)[idx]
    logp = F.log_softmax(student_logits.float()[idx], dim=-1)
    return (-target * logp * w[:, None]).mean(0).sum() / 3.0


# ---------------------------------------------------------------------------------- MGD
class FPNAdaptor(nn.Module):
    """One 1x1 conv per FPN level (official ``MaskRCNNFPNAdaptor``: kaiming-uniform a=1, zero bias).

    ``forward(features: dict) -> list`` of adapted maps in :data:`FPN_LEVELS` order (levels missing from
    ``features`` are skipped).
    """

    def __init__(self, in_channels: int = 256, out_channels: int = 128, levels: Sequence[str] = FPN_LEVELS) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.convs = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1) for _ in self.levels)
        for c in self.convs:
            nn.init.kaiming_uniform_(c.weight, a=1)
            nn.init.zeros_(c.bias)

    def forward(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [conv(features[lv]) for lv, conv in zip(self.levels, self.convs) if lv in features]


def foreground_masks(union: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Per FPN level, ``adaptive_avg_pool2d(union, size) > 0.5`` as float ``(B, 1, h, w)``.

    Args:
        union: ``(B, 1, H, W)`` 0/1 union of the teacher's binarised masks (padded image frame).
        sizes: the ``(h, w)`` of every level.
    """
    return [(F.adaptive_avg_pool2d(union.float(), tuple(int(v) for v in s)) > 0.5).float() for s in sizes]


def masked_feature_distance(s: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``sum((s - t)^2 * m) / (sum(m) * C + 1e-7)`` for ``(B, C, h, w)`` maps and a ``(B, 1, h, w)`` mask."""
    return (((s - t) ** 2) * m).sum() / (m.sum() * s.shape[1] + 1e-7)


def mgd_loss(student: Sequence[torch.Tensor], teachers: Sequence[Sequence[torch.Tensor]],
             masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mask-guided distillation: mean of :func:`masked_feature_distance` over teacher views x levels.

    Args:
        student: adapted student maps, one per level.
        teachers: per teacher view, adapted maps per level (already flipped back to the student frame).
        masks: :func:`foreground_masks`, one per level.
    """
    dists = [masked_feature_distance(s, t.detach(), m) for view in teachers for s, t, m in zip(student, view, masks)]
    return torch.stack(dists).mean()


# ---------------------------------------------------------------------------------- training hook
class MMTPSMHook(EMATeacherHook):
    """Training-loop hook: EMA teacher + PSM and MGD consistency on unlabeled batches (see module doc).

    Args:
        teacher: initial teacher (a frozen copy of the student, with its ``mmt_adaptor``).
        images: the unlabeled ``uint8 (H, W, 3)`` patches.
        ramp: consistency weight schedule (lambda included).
        batch_size: unlabeled patches per iteration.
        seed: run seed (unlabeled order / view perturbations).
        options: the method options (``ema_decay``, ``n_color_aug``, ``sharpen_T``, ``neg_weight``,
            ``psm_weight``, ``mgd_weight``, ``teacher_score_thresh``, ``erase_prob``).
    """

    def __init__(self, teacher: nn.Module, images: Sequence[Any], *, ramp: RampSchedule, batch_size: int,
                 seed: int, options: dict[str, Any]) -> None:
        super().__init__(teacher, max_decay=options["ema_decay"], schedule="mean_teacher")
        self.images = list(images)
        self.ramp = ramp
        self.stream = UnlabeledStream(len(self.images), batch_size, seed)
        self.o = dict(options)
        if int(self.o["n_color_aug"]) < 1:
            raise ValueError(f"n_color_aug must be >= 1, got {self.o['n_color_aug']}")
        self.stats: dict[str, float] = {}

    def make_views(self, it: int) -> tuple[list[list[Any]], list[Any]]:
        """``(teacher views [K][B], student view [B])`` numpy images of iteration ``it``."""
        rng = self.stream.rng(it)
        K, p = int(self.o["n_color_aug"]), float(self.o["erase_prob"])
        t_views: list[list[Any]] = [[] for _ in range(K)]
        s_view = []
        for i in self.stream.indices(it):
            base = dihedral(self.images[i], rng)
            for k in range(K):
                t_views[k].append(random_erase(color_jitter(base, rng), rng, p))
            s_view.append(random_erase(color_jitter(base, rng), rng, p))
        return t_views, s_view

    def extra_losses(self, ctx: Any) -> dict[str, torch.Tensor]:
        w = self.ramp.weight(ctx.iteration)
        ref = next(iter(ctx.losses.values()))
        zero = ref.new_zeros(()).float()
        if w <= 0.0:
            return {"loss_mt_psm": zero, "loss_mt_mgd": zero}
        student = ctx.model
        dev = ctx.images[0].device
        teacher = self.to_device(dev)
        t_views, s_view = self.make_views(ctx.iteration)

        with torch.no_grad():
            t_lists = [teacher.transform(images_to_tensors(v, dev))[0] for v in t_views]
            il0 = t_lists[0]
            feats0, dets = teacher_detections(teacher, il0, score_thresh=float(self.o["teacher_score_thresh"]))
            hp, wp = il0.tensors.shape[-2:]
            # teacher detections as "ground truth" (masks unused by the box sampler)
            targets = [{"boxes": d["boxes"].float(),
                        "labels": torch.ones(len(d["boxes"]), dtype=torch.int64, device=dev),
                        "masks": torch.zeros((len(d["boxes"]), 1, 1), dtype=torch.uint8, device=dev)} for d in dets]
            props, _, labels, _ = teacher.roi_heads.select_training_samples([d["proposals"] for d in dets], targets)
            union = torch.stack([_union_mask(d, (hp, wp)) for d in dets])
            props_f = [flip_boxes(p, wp) for p in props]
            t_logits, t_emb = [], []
            for k, il in enumerate(t_lists):
                for flip in (False, True):
                    x = il.tensors.flip(-1) if flip else il.tensors
                    f = feats0 if (k == 0 and not flip) else teacher.backbone(x)
                    logits, _ = teacher.roi_heads.box_class_logits(f, props_f if flip else props, il.image_sizes)
                    t_logits.append(logits.float())
                    t_emb.append([e.float().flip(-1) if flip else e.float() for e in teacher.mmt_adaptor(f)])

        s_il = student.transform(images_to_tensors(s_view, dev))[0]
        s_feats = student.backbone(s_il.tensors)
        s_logits, _ = student.roi_heads.box_class_logits(s_feats, props, s_il.image_sizes)
        s_emb = [e.float() for e in student.mmt_adaptor(s_feats)]
        lab = torch.cat(labels)
        psm = psm_loss(s_logits, t_logits, lab, temperature=float(self.o["sharpen_T"]),
                       neg_weight=float(self.o["neg_weight"]))
        mgd = mgd_loss(s_emb, t_emb, foreground_masks(union, [e.shape[-2:] for e in s_emb]))
        self.stats = {"teacher_dets": float(sum(len(d["boxes"]) for d in dets)) / max(1, len(dets)),
                      "pos_rois": float((lab > 0).sum()), "fg_fraction": float(union.float().mean())}
        return {"loss_mt_psm": w * float(self.o["psm_weight"]) * psm,
                "loss_mt_mgd": w * float(self.o["mgd_weight"]) * mgd}


def _union_mask(det: dict[str, torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    """``(1, H, W)`` 0/1 union of a detection set's masks binarised at 0.5 (pasted in the padded frame)."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    h, w = int(shape[0]), int(shape[1])
    if det["boxes"].numel() == 0:
        return det["boxes"].new_zeros((1, h, w))
    pasted = paste_masks_in_image(det["masks"].float(), det["boxes"].float(), (h, w), padding=1)
    return (pasted >= 0.5).any(dim=0).float()


# ---------------------------------------------------------------------------------- the method
@dataclasses.dataclass(frozen=True)
class MMTPSMOptions(RuleOptions):
    """Options of :class:`MMTPSMMethod` (plus the instance-map rule of :class:`RuleOptions`)."""

    ema_decay: float = option(0.99, "EMA decay cap, alpha_t = min(1 - 1/(t+1), ema_decay)", low=0.0, high=1.0)
    n_color_aug: int = option(2, "K colour augmentations per unlabeled patch (2K teacher views)", low=1)
    sharpen_T: float = option(0.5, "temperature of the PSM target", low=0.0, low_open=True)
    neg_weight: float = option(1.5, "PSM loss weight of the mined negatives", low=0.0)
    psm_weight: float = option(0.2, "weight of the PSM consistency term", low=0.0)
    mgd_weight: float = option(1.0, "weight of the MGD distillation term", low=0.0)
    consistency_lambda: float = option(5.0, "plateau factor on both consistency terms", low=0.0)
    rampup_start: float = option(1000 / 7000, "ramp-up start, fraction of the profile's iterations", low=0.0, high=1.0)
    rampup_len: float = option(250 / 7000, "ramp-up length, fraction of the profile's iterations", low=0.0, high=1.0)
    rampdown_len: float = option(
        250 / 7000, "ramp-down length, fraction of the profile's iterations", low=0.0, high=1.0,
    )
    teacher_score_thresh: float = option(0.5, "teacher detections kept as ground truth", low=0.0, high=1.0)
    erase_prob: float = option(0.9, "random-erasing probability of every unlabeled view", low=0.0, high=1.0)
    adaptor_channels: int = option(128, "MGD adaptor output width", low=1)
    unlabeled_batch_size: int = option(0, "unlabeled patches per iteration (0 = the profile's batch size)", low=0)
    predict_with: str = option("teacher", "model used for prediction", choices=("teacher", "student"))
    augment: bool = option(True, "flips/rotations/colour jitter on the labeled batches")


class MMTPSMMethod(MeanTeacherMaskRCNN):
    """MMT-PSM on the shared Mask R-CNN core (see the module docstring for the algorithm).

    Options (``defaults``; all recorded by ``config()``):
        ema_decay (0.99): EMA decay cap, ``alpha_t = min(1 - 1/(t+1), ema_decay)``.
        n_color_aug (2): K colour augmentations per unlabeled patch (each also flipped: 2K teacher views).
        sharpen_T (0.5): temperature of the PSM target.
        neg_weight (1.5): PSM loss weight of the mined (high-variance) negatives.
        psm_weight (0.2), mgd_weight (1.0): weights of the two consistency terms.
        consistency_lambda (5.0): plateau factor on both terms.
        rampup_start (1/7), rampup_len (1/28), rampdown_len (1/28): fractions of the profile's iterations
            (official: 1000, 250, 250 of 7000).
        teacher_score_thresh (0.5): teacher detections kept as "ground truth" for RoI labelling and masks.
        erase_prob (0.9): random-erasing probability of every unlabeled view (official transform).
        adaptor_channels (128): MGD adaptor output width.
        unlabeled_batch_size (0): unlabeled patches per iteration (0 = the profile's batch size).
        predict_with ("teacher"): "teacher" (EMA) or "student" model for prediction.
        augment (True): flips/rotations/colour jitter on the labeled batches.
        score_thresh, mask_thresh, dilate, min_area: the detections -> instance map rule.
    """

    name = "mmt-psm"
    description = (
        "MMT-PSM: Mask R-CNN mean teacher with perturbation-sensitive RoI mining and mask-guided feature distillation"
    )
    approximation = (
        "torchvision Mask R-CNN without the IR-Net relation modules (official Mask R-CNN-only setting); student "
        "and EMA teacher start from the supervised maskrcnn model; teacher detections kept at score >= 0.5; "
        "official 1000/250/250-of-7000 iteration ramp scaled to the profile"
    )
    teacher = "maskrcnn"
    version = "1"
    Options = MMTPSMOptions
    table_order = 30

    def ramp(self, total: int) -> RampSchedule:
        o = self.options
        return RampSchedule.from_fractions(total, o["consistency_lambda"], o["rampup_start"], o["rampup_len"],
                                           o["rampdown_len"], k=12.0)

    def supervised_teacher(self, data: Any, *, profile: Any, seed: int, device: str, workdir: Path,
                           progress: bool) -> tuple[nn.Module, Path]:
        """The finished supervised ``maskrcnn`` model: from :attr:`teacher_workdir` when the runner set it,
        else trained (or reloaded) in ``workdir/teacher``."""
        from methods.core.persist import MODEL_FILE
        from methods.core.supervised import SupervisedMaskRCNN

        if self.teacher_workdir is not None:
            tdir = Path(self.teacher_workdir)
            if not (tdir / MODEL_FILE).is_file():
                raise FileNotFoundError(
                    f"{self.name}: the supervised teacher model {tdir / MODEL_FILE} does not exist. Train the "
                    f"'maskrcnn' cell first (the runner does), or leave teacher_workdir unset to train one into "
                    f"<workdir>/teacher."
                )
        else:
            tdir = Path(workdir) / "teacher"
        sup = SupervisedMaskRCNN()
        sup.fit(data, profile=profile, seed=seed, device=device, workdir=tdir, progress=progress)
        return sup.model, tdir

    def train_model(self, labeled, unlabeled, data, *, profile, seed, device, workdir, progress, key):
        from methods.core.augment import NO_AUGMENT, Augment
        from methods.core.model import build_model
        from methods.core.train import train

        o = self.options
        sup, tdir = self.supervised_teacher(data, profile=profile, seed=seed, device=device, workdir=workdir,
                                            progress=progress)
        torch.manual_seed(seed)
        student = build_model(profile)
        student.load_state_dict(sup.state_dict())
        student.mmt_adaptor = FPNAdaptor(student.backbone.out_channels, int(o["adaptor_channels"]))
        ramp = self.ramp(int(profile.iterations))
        hook = MMTPSMHook(
            clone_teacher(student), [p.image for p in unlabeled], ramp=ramp,
            batch_size=int(o["unlabeled_batch_size"]) or int(profile.batch_size), seed=seed, options=o,
        )
        result = train(student, labeled, profile, seed=seed, device=device, workdir=workdir, hook=hook,
                       augment=Augment() if o["augment"] else NO_AUGMENT, progress=progress, stage=self.name,
                       config=key)
        final = hook.teacher if o["predict_with"] == "teacher" else student
        del final.mmt_adaptor
        for p in final.parameters():
            p.requires_grad_(False)
        return final, {
            "teacher_workdir": str(tdir),
            "iterations": result.iterations,
            "resumed_from": result.resumed_from,
            "train_seconds_last_call": round(result.seconds, 1),
            "ramp": ramp.config(),
            "final_losses": history_summary(result.history),
            "history": result.history,
            "last_unlabeled_stats": hook.stats,
        }
