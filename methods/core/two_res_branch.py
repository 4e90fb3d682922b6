"""BASS's student mask branch: NMH + LRD + CRC on the shared Mask R-CNN RoI heads.

:class:`BassMaskBranch` plugs into :class:`methods.core.heads.NucleiRoIHeads` (``build_model(...,
mask_branch=...)``). Layout (released ``FCNMaskHeadCLC``, sized by the training profile):

- **trunk**: the first ``convs - 1`` 3x3 convs of the profile's mask head on the 14x14 RoI features;
- **NMH** (naive mask head): the last conv, a 2x deconvolution, a 1x1 conv -> 28x28 logits (exactly the
  teacher's :class:`~methods.core.heads.StandardMaskBranch`, same parameter names, so
  ``student_init="teacher"`` can copy it);
- **LRD**: :class:`~methods.core.lrd.LRDHead` on the trunk -> 14x14 logits, up-sampled 2x;
- **CRC**: a 28x28 RoIAlign of the FPN features of the same RoIs -> encoder (3x 3x3 conv to
  ``crc_channels``, ReLU) -> (a) 1x1 convs to a 28x28 mask logit (the code's ``mask_pred4``), (b) in training,
  a projection head (1x1 conv + BN + ReLU, 1x1 conv, ReLU) -> ``embed_dim`` pixel embeddings for
  :func:`~methods.core.contrastive.crc_loss`;
- **fusion** (Fig. 1(b)): the 28x28 logits of the enabled branches concatenated in the code's order
  ``[LRD-up, NMH]`` (+ ``CRC`` with ``crc_in_fusion``, as the code) -> 1x1 conv (initialised to the mean)
  -> the output mask (``mask_logits``; the only output used at test time). With a single branch its logits
  are the output.

Losses (:meth:`BassMaskBranch.loss`), named so the training log shows every term:

- ``supervise="branches"`` (paper, Eq. 2): ``loss_mask_nmh`` = BCE(NMH 28x28), ``loss_mask_lrd`` =
  boundary-down-weighted BCE(LRD 14x14), plus ``loss_mask_fused`` = BCE(fused 28x28), which Eq. 2 does
  not list but the 1x1 fusion conv (and LRD's up-sampling) need to be trained at all;
- ``supervise="fused"`` (code): ``loss_mask`` = BCE(fused 28x28) + ``loss_mask_lrd`` on the 14x14 output;
- ``loss_crc`` = ``crc_weight`` x the CRC loss (Eq. 6) on the 28x28 targets.

Speed: the CRC's 28x28 RoIAlign (one bilinear sample per bin, which is what the code's adaptive
``sampling_ratio=0`` gives for nucleus-sized RoIs) samples exactly the points that the mask head's 14x14
RoIAlign (2x2 samples per bin) averages. :func:`install_shared_roi_pool` therefore replaces the model's
``mask_roi_pool`` by :class:`SharedMaskRoIAlign`, which computes the 28x28 features once, hands their 2x2
average to the mask head (equal to the standard 14x14 features up to float rounding) and the full 28x28 to
the CRC: one RoIAlign per step instead of two. Without it the branch pools its own 28x28 features.

Subclasses (NoisyBoundary) override :meth:`BassMaskBranch.mask_bce` to change the per-pixel weighting.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

from methods.core.heads import MaskBranch, MaskRoIs, group_norm
from methods.core.roialign import MultiScaleRoIAlign

from .bands import crc_regions, lrd_weight_map
from .contrastive import CRCConfig, crc_loss
from .lrd import LRDHead, weighted_mask_bce

SUPERVISE_MODES = ("branches", "fused")
FPN_LEVELS = ["0", "1", "2", "3"]


class SharedMaskRoIAlign(nn.Module):
    """Drop-in ``mask_roi_pool``: a 28x28 RoIAlign (``sampling_ratio=1``) whose 2x2 average is returned as the
    14x14 mask features (the standard ``MultiScaleRoIAlign(14, sampling_ratio=2)`` samples the same points);
    the 28x28 result of the latest call is kept in :attr:`last` for the CRC branch."""

    def __init__(self, featmap_names: list[str] | None = None) -> None:
        super().__init__()
        self.pool28 = MultiScaleRoIAlign(featmap_names or FPN_LEVELS, 28, sampling_ratio=1)
        self.last: tuple[list[torch.Tensor], torch.Tensor] | None = None

    def forward(self, features, proposals, image_shapes):
        x = self.pool28(features, proposals, image_shapes)
        self.last = (proposals, x)
        return F.avg_pool2d(x, 2)


@dataclasses.dataclass(frozen=True)
class BranchConfig:
    """Which branches exist and how they are trained (defaults: the paper's full BASS).

    Attributes:
        nmh / lrd / crc: enable the naive 28x28 head, the 14x14 LRD head, the contrastive head.
        supervise: ``"branches"`` (NMH and LRD supervised separately + the fused output) or ``"fused"``
            (code: the fused output + the 14x14 LRD output).
        lrd_boundary_weight: LRD loss weight on boundary pixels (others 1.0); 1.0 = plain BCE (code).
        lrd_boundary_width: boundary half-width in 14x14 cells.
        d: CRC band width in 28x28 cells. bands: ``"paper"`` or ``"code"`` region definition.
        crc: :class:`CRCConfig` of the contrastive loss. crc_weight: factor on the CRC loss (code: 0.25).
        crc_channels / embed_dim: CRC encoder width and embedding size (code: 64 / 64).
        crc_max_rois: at most this many positive RoIs (a random subset per batch) enter the contrastive loss;
            0 = all (the code). Without ``crc_in_fusion`` only they pass through the CRC encoder.
        crc_in_fusion: feed the CRC head's 28x28 mask logit into the fusion (code: yes; paper: no, Fig. 1(b)
            fuses NMH and LRD and the CRC is a contrastive module on the RoI features). Without it the CRC
            branch runs only in training.
    """

    nmh: bool = True
    lrd: bool = True
    crc: bool = True
    supervise: str = "branches"
    lrd_boundary_weight: float = 0.5
    lrd_boundary_width: float = 1.0
    d: float = 4
    bands: str = "paper"
    crc_cfg: CRCConfig = CRCConfig()
    crc_weight: float = 1.0
    crc_channels: int = 64
    embed_dim: int = 64
    crc_max_rois: int = 0
    crc_in_fusion: bool = False

    def __post_init__(self) -> None:
        if not (self.nmh or self.lrd):
            raise ValueError("the BASS mask branch needs NMH or LRD (or both) to predict masks")
        if self.supervise not in SUPERVISE_MODES:
            raise ValueError(f"supervise={self.supervise!r} unknown; choose one of {', '.join(SUPERVISE_MODES)}")
        if self.lrd_boundary_weight < 0 or self.lrd_boundary_width < 0:
            raise ValueError("lrd_boundary_weight and lrd_boundary_width must be >= 0")


def _kaiming(m: nn.Module) -> nn.Module:
    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if m.bias is not None:
        nn.init.zeros_(m.bias)
    return m


class BassMaskBranch(MaskBranch):
    """The three-branch mask side of the BASS student (see the module doc).

    Args:
        in_channels: RoI feature channels (FPN width, 256).
        channels / convs: the profile's mask head width and depth (``mask_head_channels/convs``).
        norm: ``"gn"`` adds GroupNorm to the trunk / NMH / LRD convs (as the teacher's head), ``None`` plain.
        cfg: :class:`BranchConfig`.
    """

    def __init__(self, in_channels: int = 256, channels: int = 256, convs: int = 4, norm: str | None = None,
                 cfg: BranchConfig = BranchConfig()) -> None:
        super().__init__()
        self.in_channels, self.channels, self.convs, self.norm, self.cfg = in_channels, channels, convs, norm, cfg
        norm_layer = group_norm if norm == "gn" else None
        self.n_trunk = max(convs - 1, 0)
        n_head = self.n_trunk + (1 if cfg.nmh else 0)
        # same names as StandardMaskBranch (head / deconv / logits) so a teacher's NMH weights load directly
        self.head = MaskRCNNHeads(in_channels, [channels] * n_head, 1, norm_layer=norm_layer) if n_head else nn.Identity()
        trunk_out = channels if self.n_trunk else in_channels
        if cfg.nmh:
            self.deconv = _kaiming(nn.ConvTranspose2d(channels, channels, 2, 2, 0))
            self.logits = _kaiming(nn.Conv2d(channels, 1, 1))
        if cfg.lrd:
            self.lrd_head = LRDHead(trunk_out, channels, norm)
        if cfg.crc:
            k = cfg.crc_channels
            # 1 sample per bin = the code's adaptive sampling_ratio=0 for RoIs under 28 feature pixels (all
            # nuclei); used only when no SharedMaskRoIAlign is installed
            self.crc_pool = MultiScaleRoIAlign(FPN_LEVELS, 28, sampling_ratio=1)
            self._shared: list[SharedMaskRoIAlign] = []
            self.crc_encoder = nn.Sequential(
                _kaiming(nn.Conv2d(in_channels, k, 3, padding=1)), nn.ReLU(inplace=True),
                _kaiming(nn.Conv2d(k, k, 3, padding=1)), nn.ReLU(inplace=True),
                _kaiming(nn.Conv2d(k, k, 3, padding=1)), nn.ReLU(inplace=True),
            )
            if cfg.crc_in_fusion:  # the code's fuseconv (linear 1x1 to k/2) -> conv_contrastive (1x1 to 1)
                self.crc_mask = nn.Sequential(nn.Conv2d(k, k // 2, 1), nn.Conv2d(k // 2, 1, 1))
            self.crc_projector = nn.Sequential(
                nn.Conv2d(k, cfg.embed_dim, 1), nn.BatchNorm2d(cfg.embed_dim), nn.ReLU(inplace=True),
                nn.Conv2d(cfg.embed_dim, cfg.embed_dim, 1), nn.ReLU(inplace=True),
            )
        n_out = int(cfg.nmh) + int(cfg.lrd) + int(cfg.crc and cfg.crc_in_fusion)
        self.fusion = nn.Conv2d(n_out, 1, 1) if n_out > 1 else None
        if self.fusion is not None:  # start as the mean of the branch logits (the code: Kaiming, std sqrt(2))
            nn.init.constant_(self.fusion.weight, 1.0 / n_out)
            nn.init.zeros_(self.fusion.bias)

    # ------------------------------------------------------------------ forward
    def _layers(self, start: int, stop: int | None = None) -> list[nn.Module]:
        if isinstance(self.head, nn.Identity):
            return []
        return list(self.head.children())[start:stop]

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._layers(0, self.n_trunk):
            x = layer(x)
        return x

    def forward(self, rois: MaskRoIs) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        t = self._trunk(rois.roi_features)
        out: dict[str, torch.Tensor] = {}
        parts = []
        if cfg.lrd:
            out["lrd_logits"], out["lrd_up_logits"] = self.lrd_head(t)
            parts.append(out["lrd_up_logits"])
        if cfg.nmh:
            h = t
            for layer in self._layers(self.n_trunk):
                h = layer(h)
            out["nmh_logits"] = self.logits(F.relu(self.deconv(h)))
            parts.append(out["nmh_logits"])
        shared = None
        if cfg.crc and self._shared:
            last, self._shared[0].last = self._shared[0].last, None
            if last is not None and last[0] is rois.proposals:
                shared = last[1]
        if cfg.crc and (cfg.crc_in_fusion or rois.training):
            feats = shared if shared is not None else self.crc_pool(rois.features, rois.proposals, rois.image_shapes)
            n = feats.shape[0]
            idx = None
            if rois.training and 0 < cfg.crc_max_rois < n:  # a random subset of RoIs for the contrastive loss
                idx = torch.randperm(n, device=feats.device)[: cfg.crc_max_rois].sort().values
            if cfg.crc_in_fusion:
                enc = self.crc_encoder(feats)
                out["crc_logits"] = self.crc_mask(enc)
                parts.append(out["crc_logits"])
                if idx is not None:
                    enc = enc[idx]
            else:  # training only: encode just the RoIs the loss uses
                enc = self.crc_encoder(feats if idx is None else feats[idx])
            if rois.training and enc.shape[0] > 0:
                out["crc_embed"] = self.crc_projector(enc)
                if idx is not None:
                    out["crc_index"] = idx
        out["mask_logits"] = self.fusion(torch.cat(parts, dim=1)) if self.fusion is not None else parts[0]
        return out

    # ------------------------------------------------------------------ losses
    def mask_bce(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                 weights: torch.Tensor | None = None, *, term: str = "") -> torch.Tensor:
        """BCE of one mask output (``term`` names it: ``nmh``, ``lrd``, ``fused``); subclasses re-weight."""
        return weighted_mask_bce(logits, targets, valid, weights)

    def loss(self, outputs: dict[str, torch.Tensor], rois: MaskRoIs) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        valid = rois.mask_valid()
        t28 = rois.mask_targets(28)
        losses: dict[str, torch.Tensor] = {}
        if cfg.lrd:
            t14 = rois.mask_targets(14)
            w = None
            if cfg.lrd_boundary_weight != 1.0 and t14.numel():
                w = lrd_weight_map(t14 > 0.5, boundary_weight=cfg.lrd_boundary_weight, width=cfg.lrd_boundary_width)
            losses["loss_mask_lrd"] = self.mask_bce(outputs["lrd_logits"], t14, valid, w, term="lrd")
        if cfg.supervise == "fused":
            losses["loss_mask"] = self.mask_bce(outputs["mask_logits"], t28, valid, term="fused")
        else:
            if cfg.nmh:
                losses["loss_mask_nmh"] = self.mask_bce(outputs["nmh_logits"], t28, valid, term="nmh")
            if self.fusion is not None or not cfg.nmh:
                losses["loss_mask_fused"] = self.mask_bce(outputs["mask_logits"], t28, valid, term="fused")
        if cfg.crc:
            emb = outputs.get("crc_embed")
            if emb is None or not bool(valid.any()) or (
                    "crc_index" in outputs and not bool(valid[outputs["crc_index"]].any())):
                ref = emb if emb is not None else outputs["mask_logits"]
                losses["loss_crc"] = ref.sum() * 0.0
            else:
                idx = outputs.get("crc_index")
                t_sel, v_sel = (t28, valid) if idx is None else (t28[idx], valid[idx])
                tv = t_sel[v_sel] > 0.5
                regions = crc_regions(tv, cfg.d, cfg.bands)
                value, stats = crc_loss(emb[v_sel], tv, regions, cfg.crc_cfg)
                self.last_crc_stats = stats
                losses["loss_crc"] = cfg.crc_weight * value
        return losses

    def config(self) -> dict[str, Any]:
        c = dataclasses.asdict(self.cfg)
        return {"type": type(self).__name__, "channels": self.channels, "convs": self.convs, "norm": self.norm,
                **c}


def install_shared_roi_pool(model: nn.Module) -> bool:
    """Give a model whose mask branch is a :class:`BassMaskBranch` with CRC a :class:`SharedMaskRoIAlign` as
    its ``roi_heads.mask_roi_pool``. Returns whether it was installed (no-op for branches without CRC)."""
    heads = model.roi_heads
    branch = heads.mask_branch
    if not isinstance(branch, BassMaskBranch) or not branch.cfg.crc:
        return False
    if not isinstance(heads.mask_roi_pool, SharedMaskRoIAlign):
        heads.mask_roi_pool = SharedMaskRoIAlign()
    branch._shared = [heads.mask_roi_pool]
    return True
