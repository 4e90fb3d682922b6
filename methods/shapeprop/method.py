"""``shapeprop``: ShapeProp (Zhou et al., CVPR 2020) on the shared Mask R-CNN, boxes on unlabeled patches.

Weakly semi-supervised (``+boxes``): every training patch has nucleus boxes, only the labeled ones also
have masks. The boxes of the unlabeled patches are derived by the runner from their ground truth because
the method declares ``needs = {"boxes"}``; no mask of an unlabeled patch is ever seen. One detector is
trained on both kinds of patches at once (no teacher, no pseudo-labels). Reference
code: ``ucbdrive/ShapeProp`` (``modeling/roi_heads/shapeprop_head``, ``mask_head``).

The mask side is a :class:`ShapePropMaskBranch` plugged into
:class:`~methods.core.heads.NucleiRoIHeads`:

- **Activating branch** (on every sampled RoI of the box head, 14x14 RoIAlign of its own): one 3x3 conv +
  ReLU, then a 1x1 conv to one saliency map per class. Classes are background and nucleus (the detector
  is class-agnostic, as the reference's maps include background). ``L_act`` = cross-entropy between the
  spatial mean of the maps and the RoI's label (0 for negatives, 1 for positives); it needs only boxes,
  so box-only patches train it.
- **Propagating branch** (positive RoIs): a separate 3x3 conv + ReLU and a 1x1 conv to ``9 x latent_dim``
  sigmoid affinities per pixel (one 3x3 neighbourhood per latent channel). The nucleus saliency map is
  encoded (3 3x3 convs to ``latent_dim`` = 24 channels), propagated for ``max(h, w)`` = 14 steps of
  :func:`propagate` (random-walk normalised 3x3 message passing), and decoded (3 3x3 convs to 1
  channel) into the *shape activation*. ``L_prop`` = BCE(shape activation, binarised 14x14 mask target)
  on the positive RoIs whose instance has a mask only.
- **Mask head**: the shape activation, ReLU'd and divided by its per-RoI maximum, is encoded by 4 3x3 convs
  and concatenated with the 14x14 RoI features; the usual FCN mask head (the profile's width and depth,
  deconvolution, one logit channel at 28x28) follows. Its BCE is computed on instances with masks only
  (``mask_valid``), so box-only instances give the mask head no gradient.

Departures (also in :attr:`ShapePropMethod.approximation`):

- the module's conv widths (activating, propagating, shape encoder) follow ``profile.mask_head_channels``
  (256 in the ``paper`` profile = the reference; narrower in the CPU profiles);
- :func:`propagate` normalises each pixel's affinities over its *in-image* neighbours (the reference also
  counts zero-padded positions outside the RoI, so a constant map leaks at the border); with this a
  constant map is a fixed point and every step is a proper random-walk (row-stochastic) average;
- propagation runs on the positive RoIs only: the reference propagates every sampled RoI, but negatives'
  shape activations feed neither loss nor the mask head, so the losses are unchanged;
- batches mix the two kinds of patches (option ``balanced``, default on: half of every batch is labeled)
  because only 1/8-1/2 of the patches have masks here; the reference shuffles one pool (``balanced=False``).

Workdir: ``shapeprop_checkpoint.pt`` while training (resumable; deleted at the end), ``model.pt`` /
``model.json`` (reloaded by a second ``fit`` with the same settings and data; other settings raise
``CheckpointError``), ``train_history.json``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from methods.core.roialign import MultiScaleRoIAlign

from benchmark.options import option
from methods.core.options import RuleOptions
from methods.core.augment import NO_AUGMENT, Augment
from methods.core.heads import MaskBranch, MaskRoIs, StandardMaskBranch, masked_bce
from methods.core.lifecycle import FitRun, MaskRCNNLifecycle, Trained
from methods.core.model import build_model, resolve_backbone_init
from methods.core.persist import data_digest
from methods.core.targets import TrainSample
from methods.core.train import epoch_order, train


# ------------------------------------------------------------------------------------------ propagation
def normalized_affinities(weights: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Random-walk normalisation of 3x3 affinities.

    Args:
        weights: ``(N, G*9, H, W)`` non-negative affinities (sigmoid outputs): for group ``g`` and pixel
            ``p``, entries ``g*9 .. g*9+8`` weight the 3x3 neighbours of ``p`` in ``F.unfold`` order
            (row-major, centre = entry 4).
        height, width: ``H`` and ``W``.

    Returns:
        ``(N, G, 9, H*W)``: weights of out-of-image neighbours set to 0, the rest divided by their sum,
        so every pixel's weights sum to 1.
    """
    n, gk, h, w = weights.shape
    if gk % 9 or (h, w) != (height, width):
        raise ValueError(f"affinities must be (N, G*9, {height}, {width}), got {tuple(weights.shape)}")
    wgt = weights.reshape(n, gk // 9, 9, h * w)
    ones = torch.ones(1, 1, h, w, dtype=weights.dtype, device=weights.device)
    inside = F.unfold(ones, kernel_size=3, padding=1).reshape(1, 1, 9, h * w)
    wgt = wgt * inside
    return wgt / wgt.sum(dim=2, keepdim=True).clamp_min(1e-12)


def propagate(x: torch.Tensor, weights: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """ShapeProp message passing: ``steps`` rounds of ``x(p) <- sum_q a_p(q) x(q)`` over the 3x3
    neighbourhood ``q`` of every pixel ``p``, with :func:`normalized_affinities` ``a``.

    Args:
        x: ``(N, C, H, W)`` embedding; channel ``c`` uses affinity group ``c // (C / G)``.
        weights: ``(N, G*9, H, W)`` non-negative affinities with ``C % G == 0`` (the reference: ``G = C``).
        steps: number of rounds (default ``max(H, W)``, as the reference).

    Returns:
        ``(N, C, H, W)``. Each round is a row-stochastic average, so a constant map stays constant, values
        stay within ``[min(x), max(x)]``, and with symmetric (e.g. uniform) affinities the total mass of a
        source away from the border is conserved.
    """
    n, c, h, w = x.shape
    a = normalized_affinities(weights, h, w)
    g = a.shape[1]
    if c % g:
        raise ValueError(f"{c} embedding channels cannot share {g} affinity groups")
    a = a[:, :, None]  # (N, G, 1, 9, HW)
    for _ in range(max(h, w) if steps is None else int(steps)):
        u = F.unfold(x, kernel_size=3, padding=1).reshape(n, g, c // g, 9, h * w)
        x = (u * a).sum(dim=3).reshape(n, c, h, w)
    return x


def _convs(channels: Sequence[int], last_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        conv = nn.Conv2d(cin, cout, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers.append(conv)
        if last_relu or i < len(channels) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


# ------------------------------------------------------------------------------------------ the branch
class ShapePropMaskBranch(MaskBranch):
    """Mask branch with the ShapeProp module (see the module doc).

    Args:
        in_channels: RoI feature channels (FPN width, 256).
        channels: mask FCN width (profile ``mask_head_channels``).
        convs: mask FCN depth (profile ``mask_head_convs``).
        norm: ``"gn"`` for GroupNorm in the mask FCN (as the core's standard branch), ``None`` = plain.
        module_channels: width of the activating / propagating convs and of the shape encoder (reference:
            256).
        latent_dim: channels of the propagated embedding (reference: 24).
        steps: message-passing rounds (``None`` = ``max(h, w)`` = 14).
        act_weight / prop_weight / mask_weight: loss factors of ``L_act``, ``L_prop`` and the mask BCE.

    ``forward`` returns ``mask_logits (R, 1, 28, 28)`` and ``shape_logits (R, 1, 14, 14)``, plus, in
    training, ``act_logits (R_all, 2)`` (the pooled saliency of every sampled RoI).
    """

    def __init__(
        self, in_channels: int = 256, channels: int = 256, convs: int = 4, norm: str | None = None, *,
        module_channels: int = 256, latent_dim: int = 24, steps: int | None = None,
        act_weight: float = 1.0, prop_weight: float = 1.0, mask_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.settings = {
            "in_channels": in_channels, "channels": channels, "convs": convs, "norm": norm,
            "module_channels": module_channels, "latent_dim": latent_dim, "steps": steps,
            "act_weight": act_weight, "prop_weight": prop_weight, "mask_weight": mask_weight,
        }
        self.steps = steps
        self.act_weight, self.prop_weight, self.mask_weight = act_weight, prop_weight, mask_weight
        # its own 14x14 pooler, as the reference's ShapePropFeatureExtractor (for all sampled RoIs)
        self.pooler = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=14, sampling_ratio=2)
        self.act_features = _convs([in_channels, module_channels], last_relu=True)
        self.act_logits = _conv1x1(module_channels, 2)  # saliency maps: background, nucleus
        self.prop_features = _convs([in_channels, module_channels], last_relu=True)
        self.prop_weights = _conv1x1(module_channels, 9 * latent_dim)
        self.encoder = _convs([1, latent_dim, latent_dim, latent_dim], last_relu=False)
        self.decoder = _convs([latent_dim, latent_dim, latent_dim, 1], last_relu=False)
        self.shape_encoder = _convs([1] + [module_channels] * 4, last_relu=False)
        self.fcn = StandardMaskBranch(in_channels + module_channels, channels, convs, norm=norm)

    def saliency(self, roi_features: torch.Tensor) -> torch.Tensor:
        """``(R, 2, 14, 14)`` class saliency maps (background, nucleus)."""
        return self.act_logits(self.act_features(roi_features))

    def shape_activation(self, roi_features: torch.Tensor, nucleus_saliency: torch.Tensor) -> torch.Tensor:
        """``(R, 1, 14, 14)`` shape-activation logits from the nucleus saliency ``(R, 1, 14, 14)``."""
        affinity = torch.sigmoid(self.prop_weights(self.prop_features(roi_features)))
        emb = propagate(self.encoder(nucleus_saliency), affinity, self.steps)
        return self.decoder(emb)

    def forward(self, rois: MaskRoIs) -> dict[str, torch.Tensor]:
        feats = rois.roi_features
        out: dict[str, torch.Tensor] = {}
        if rois.training and rois.all_proposals is not None:
            # L_act on every sampled RoI (positives and negatives), pooled by the module's own RoIAlign
            all_feats = self.pooler(rois.features, rois.all_proposals, rois.image_shapes)
            out["act_logits"] = self.saliency(all_feats).mean(dim=(2, 3))
        # the mask-side RoIs (positives in training, detections at inference): nucleus saliency map
        # (recomputed on the same 14x14 features rather than indexed, so no RoI-order assumption)
        sal = self.saliency(feats)[:, 1:2]
        shape = self.shape_activation(feats, sal)
        out["shape_logits"] = shape
        act = F.relu(shape)
        act = act / (act.flatten(1).amax(dim=1)[:, None, None, None] + 1e-5)
        x = torch.cat([feats, self.shape_encoder(act)], dim=1)
        x = F.relu(self.fcn.deconv(self.fcn.trunk(x)))
        out["mask_logits"] = self.fcn.logits(x)
        return out

    def loss(self, outputs: dict[str, torch.Tensor], rois: MaskRoIs) -> dict[str, torch.Tensor]:
        valid = rois.mask_valid()
        logits = outputs["mask_logits"]
        losses = {
            "loss_mask": self.mask_weight * masked_bce(logits, rois.mask_targets(logits.shape[-1]), valid),
            "loss_prop": self.prop_weight * masked_bce(outputs["shape_logits"], rois.mask_targets(14), valid),
        }
        if "act_logits" in outputs:
            labels = torch.cat(rois.all_labels).to(outputs["act_logits"].device)
            losses["loss_act"] = self.act_weight * F.cross_entropy(outputs["act_logits"].float(), labels)
        return losses

    def config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **self.settings}


def make_branch(profile: Any, **options: Any) -> ShapePropMaskBranch:
    """The branch for a profile: RoI feature width = the FPN width (``profile.fpn_channels``, default 256),
    FCN and module widths from ``profile.mask_head_channels``/``_convs``; GroupNorm in the FCN unless the
    backbone uses frozen/trainable BatchNorm; ``options`` go to the constructor (``latent_dim``,
    ``steps``, loss weights)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norm, _ = resolve_backbone_init(profile)
    return ShapePropMaskBranch(
        int(getattr(profile, "fpn_channels", 256)), profile.mask_head_channels, profile.mask_head_convs,
        norm="gn" if norm == "gn" else None,
        module_channels=profile.mask_head_channels, **options,
    )


# ------------------------------------------------------------------------------------------ batches
class BalancedBatches:
    """A pure batch function ``(iteration, batch_size) -> samples`` for the training loop: each batch holds
    ``ceil(batch_size / 2)`` labeled samples and the rest box-only samples, each kind drawn from its own
    seeded epoch-wise shuffle (streams ``seed*2+0`` and ``seed*2+1`` of the loop's ``epoch_order``)."""

    def __init__(self, labeled: Sequence[TrainSample], boxed: Sequence[TrainSample], seed: int) -> None:
        if not labeled or not boxed:
            raise ValueError("BalancedBatches needs labeled and box-only samples")
        self.labeled, self.boxed, self.seed = list(labeled), list(boxed), seed

    @staticmethod
    def _take(pool: list, seed: int, start: int, count: int) -> list:
        out = []
        for j in range(start, start + count):
            epoch, pos = divmod(j, len(pool))
            out.append(pool[int(epoch_order(seed, epoch, len(pool))[pos])])
        return out

    def __call__(self, iteration: int, batch_size: int) -> list[TrainSample]:
        n_lab = max(1, math.ceil(batch_size / 2)) if batch_size > 1 else (1 if iteration % 2 == 0 else 0)
        n_box = batch_size - n_lab
        if batch_size > 1:
            lab = self._take(self.labeled, self.seed * 2, iteration * n_lab, n_lab)
            box = self._take(self.boxed, self.seed * 2 + 1, iteration * n_box, n_box)
        else:  # batch 1: alternate
            half = iteration // 2
            lab = self._take(self.labeled, self.seed * 2, half, 1) if n_lab else []
            box = [] if n_lab else self._take(self.boxed, self.seed * 2 + 1, half, 1)
        return lab + box


# ------------------------------------------------------------------------------------------ the method
@dataclasses.dataclass(frozen=True)
class ShapePropOptions(RuleOptions):
    """Options of :class:`ShapePropMethod` (plus the instance-map rule of :class:`RuleOptions`)."""

    augment: bool = option(True, "flips / rotations / colour jitter while training")
    balanced: bool = option(True, "half of every batch labeled (False: one shuffled pool, as the reference)")
    latent_dim: int = option(24, "propagated embedding channels (reference 24)", low=1)
    steps: int = option(0, "message-passing rounds, 0 = max(h, w) = 14 (reference)", low=0)
    act_weight: float = option(1.0, "saliency (activation) loss factor", low=0.0)
    prop_weight: float = option(1.0, "propagation loss factor", low=0.0)
    mask_weight: float = option(1.0, "mask loss factor", low=0.0)


class ShapePropMethod(MaskRCNNLifecycle):
    """ShapeProp: partially supervised Mask R-CNN (masks on labeled patches, boxes on every patch).

    Options (keyword arguments; defaults in :attr:`defaults`):
        score_thresh (float, 0.5), mask_thresh (float, 0.5), dilate (int, 0), min_area (int, 5): the
            ``maskrcnn`` detections-to-instance-map rule.
        augment (bool, True): flips / rotations / colour jitter while training.
        balanced (bool, True): half of every batch labeled (``False``: one shuffled pool, as the reference).
        latent_dim (int, 24): propagated embedding channels (reference 24).
        steps (int, 0): message-passing rounds, 0 = ``max(h, w)`` = 14 (reference).
        act_weight / prop_weight / mask_weight (float, 1.0): loss factors.
    """

    name = "shapeprop"
    description = "ShapeProp: saliency + learned shape propagation feed the mask head; boxes on unlabeled (+boxes)"
    approximation = (
        "torchvision Mask R-CNN; class-agnostic (background + nucleus saliency); module widths follow the "
        "profile's mask-head width; propagation normalised over in-image neighbours; balanced batches"
    )
    needs = frozenset({"boxes"})
    teacher = None
    deep = True
    uses_unlabeled = True
    version = "1"
    Options = ShapePropOptions
    table_order = 50

    def make_branch(self, profile: Any) -> ShapePropMaskBranch:
        o = self.options
        return make_branch(
            profile, latent_dim=int(o["latent_dim"]), steps=int(o["steps"]) or None,
            act_weight=float(o["act_weight"]), prop_weight=float(o["prop_weight"]),
            mask_weight=float(o["mask_weight"]),
        )

    def model_key(self, run: FitRun) -> dict[str, Any]:
        o = self.options
        train_opts = {k: o[k] for k in ("augment", "balanced", "latent_dim", "steps", "act_weight",
                                         "prop_weight", "mask_weight")}
        return {"method": self.name, "version": self.version, "seed": run.seed, "profile": run.profile.digest(),
                "labeled": data_digest(run.labeled), "unlabeled": data_digest(run.unlabeled), "train": train_opts}

    def train_new(self, run: FitRun, key: dict[str, Any]) -> Trained:
        lab = [TrainSample(image=p.image, label=p.label, id=p.id) for p in run.labeled]
        box = [TrainSample(image=p.image, label=None, boxes=np.asarray(p.boxes, np.float32).reshape(-1, 4),
                           id=p.id) for p in run.unlabeled]
        if self.options["balanced"] and box:
            source: Any = BalancedBatches(lab, box, run.seed)
        else:
            source = lab + box
        torch.manual_seed(run.seed)
        model = build_model(run.profile, mask_branch=self.make_branch(run.profile))
        result = train(
            model, source, run.profile, seed=run.seed, device=run.device, workdir=run.workdir, stage=self.name,
            augment=Augment() if self.options["augment"] else NO_AUGMENT, progress=run.progress, config=key,
        )
        return Trained.of(model, result, key=key, n_labeled=len(run.labeled), n_box_only=len(run.unlabeled),
                          n_box_only_instances=int(sum(len(b.boxes) for b in box)))
