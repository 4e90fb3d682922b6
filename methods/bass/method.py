"""The ``bass`` method and its registered variants (Table 2's ablation rows and the released-code variant).

``bass`` = teacher Mask R-CNN -> count-matched pseudo-labels (:mod:`methods.core.pseudolabels`) -> student Mask
R-CNN with the NMH + LRD + CRC mask branch (:mod:`methods.core.two_res_branch`), trained with Eq. 2
(``L_det + L_nmh + L_lrd + L_cl``, plus the fused-output BCE that trains the fusion conv). Prediction uses
the student's fused mask through the shared instance-map rule.

Variants (all ``family = "bass"``, so ``--set bass.alpha=0.3`` reaches every one; each is a subclass that
only changes :attr:`defaults`):

================  =========================================================================================
``bass``          NMH + LRD + CRC, paper defaults (Table 2 row 4)
``bass-nmh``      NMH only (Table 2 row 1): the student is a plain Mask R-CNN on labeled + PL patches
``bass-lrd``      LRD only (row 2): 14x14 head, output up-sampled by its learned deconvolution
``bass-nmh-lrd``  NMH + LRD fused (row 3)
``bass-code``     every choice of the released code (see :data:`CODE_OVERRIDES`)
================  =========================================================================================
"""

from __future__ import annotations

from typing import Any, ClassVar

from methods.core.pseudolabels import PseudoLabelStudentMethod

#: BASS's own options (besides the pseudo-label / student / prediction ones of PL_DEFAULTS).
BASS_OPTIONS: dict[str, Any] = {
    "nmh": True,
    "lrd": True,
    "crc": True,
    "supervise": "branches",
    "lrd_boundary_weight": 0.5,
    "lrd_boundary_width": 1.0,
    "alpha": 0.7,
    "d": 4,
    "bands": "paper",
    "crc_terms": "all",
    "infonce": "standard",
    "query": "sampled",
    "crc_group": "pair",
    "tau_easy": 0.3,
    "tau_hard": 0.7,
    "crc_weight": 1.0,
    "roi_min_pixels": 0,
    "crc_channels": 64,
    "embed_dim": 64,
    "crc_max_rois": 0,
    "crc_in_fusion": False,
}

#: what ``bass-code`` changes relative to ``bass`` (the choices of the released BASS code).
CODE_OVERRIDES: dict[str, Any] = {
    "supervise": "fused",          # only the fused 28x28 output (+ the 14x14 LRD output) is supervised
    "lrd_boundary_weight": 1.0,    # plain BCE on the 14x14 output, no boundary down-weighting
    "bands": "code",               # np.gradient edge, distance < d, outer edge row in no set
    "crc_terms": "hard",           # 2 InfoNCE terms (R_i vs R_o), the easy ones are commented out
    "infonce": "code",             # ContrastMask's k - q shift, positive not divided by tau
    "query": "full",               # per-RoI mean of all fg / bg pixels ...
    "crc_group": "batch",          # ... averaged over every RoI of the batch
    "tau_hard": 0.7,
    "crc_weight": 0.25,            # the hook's weight stays 0.25 for the whole run
    "roi_min_pixels": 5,           # RoIs with < 5 pixels in any region are dropped
    "weight_decay": "0.0001",      # the code's SGD weight decay (paper: 1e-3, the profile's default)
    "labeled_repeat": 19,          # RepeatDataset(labeled, times=19)
    "tta": True,                   # PL inference with 9 scales x {plain, h-flip}
    "tta_flips": ("h",),
    "tta_scales": (0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.375, 1.5),
    "crc_in_fusion": True,         # the CRC encoder's 28x28 mask logit is a third input of the fusion conv
}


class BassMethod(PseudoLabelStudentMethod):
    """BASS (Zhang et al. 2024): boundary-aware contrastive learning for semi-supervised nuclei segmentation.

    Options: :attr:`PseudoLabelStudentMethod.PL_DEFAULTS` (pseudo-labels, student training, prediction rule)
    plus :data:`BASS_OPTIONS`:

    - ``nmh`` / ``lrd`` / ``crc`` (bool): which heads the student has (Table 2).
    - ``supervise`` ("branches"): ``"branches"`` = BCE on the NMH 28x28 and LRD 14x14 outputs plus the fused
      output; ``"fused"`` (code) = the fused output and the 14x14 LRD output only.
    - ``lrd_boundary_weight`` (0.5) / ``lrd_boundary_width`` (1.0): LRD loss weight on the pixels within
      ``width`` cells of the contour on the 14x14 grid (both sides); other pixels weigh 1.0.
    - ``alpha`` (0.7): CRC sampling ratio. ``d`` (4): band width in 28x28 RoI cells.
      ``bands`` ("paper"): Eq. 3-4 regions; ``"code"``: the released edge-distance definition.
    - ``crc_terms`` ("all" | "hard"), ``infonce`` ("standard" | "code"), ``query`` ("sampled" | "full"),
      ``crc_group`` ("pair" | "batch"), ``tau_easy`` (0.3), ``tau_hard`` (0.7), ``crc_weight`` (1.0),
      ``roi_min_pixels`` (0), ``crc_channels`` (64), ``embed_dim`` (64), ``crc_max_rois`` (0 = all positive
      RoIs), ``crc_in_fusion`` (False; code: True): see
      :class:`methods.core.contrastive.CRCConfig` and :class:`methods.core.two_res_branch.BranchConfig`.
    """

    name = "bass"
    family = "bass"
    description = "BASS: teacher PLs (count-matched box threshold) -> student with NMH + LRD + CRC mask heads"
    approximation = (
        "torchvision Mask R-CNN (from-scratch GroupNorm backbone without local ImageNet weights), profile "
        "schedule; PLs painted into instance maps; fused-output BCE added to Eq. 2 to train the fusion conv; "
        "unspecified paper details (LRD weights, RoI pairing, tau) documented as options"
    )
    version = "1"
    defaults: ClassVar[dict[str, Any]] = {**PseudoLabelStudentMethod.PL_DEFAULTS, **BASS_OPTIONS}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # validate the head / CRC options now (clear error at construction, not mid-fit)
        self.branch_config()

    def branch_config(self):
        from methods.core.contrastive import CRCConfig
        from methods.core.two_res_branch import BranchConfig

        o = self.options
        crc = CRCConfig(
            alpha=float(o["alpha"]), terms=o["crc_terms"], infonce=o["infonce"], query=o["query"],
            group=o["crc_group"], tau_easy=float(o["tau_easy"]), tau_hard=float(o["tau_hard"]),
            roi_min_pixels=int(o["roi_min_pixels"]),
        )
        if o["bands"] not in ("paper", "code"):
            raise ValueError(f"bands must be 'paper' or 'code', got {o['bands']!r}")
        if float(o["d"]) < 0:
            raise ValueError(f"d must be >= 0, got {o['d']}")
        return BranchConfig(
            nmh=bool(o["nmh"]), lrd=bool(o["lrd"]), crc=bool(o["crc"]), supervise=o["supervise"],
            lrd_boundary_weight=float(o["lrd_boundary_weight"]), lrd_boundary_width=float(o["lrd_boundary_width"]),
            d=float(o["d"]), bands=o["bands"], crc_cfg=crc, crc_weight=float(o["crc_weight"]),
            crc_channels=int(o["crc_channels"]), embed_dim=int(o["embed_dim"]), crc_max_rois=int(o["crc_max_rois"]),
            crc_in_fusion=bool(o["crc_in_fusion"]),
        )

    def build_branch(self, profile: Any, norm: str):
        from methods.core.model import fpn_channels

        from methods.core.two_res_branch import BassMaskBranch

        return BassMaskBranch(fpn_channels(profile), profile.mask_head_channels, profile.mask_head_convs,
                              norm="gn" if norm == "gn" else None, cfg=self.branch_config())

    def prepare_model(self, model):
        from methods.core.two_res_branch import install_shared_roi_pool

        install_shared_roi_pool(model)
        return model


class BassNMHMethod(BassMethod):
    """Table 2 row 1: the student has the naive mask head only."""

    name = "bass-nmh"
    description = "BASS ablation (Table 2): student with the naive 28x28 mask head only (NMH)"
    defaults: ClassVar[dict[str, Any]] = {**BassMethod.defaults, "nmh": True, "lrd": False, "crc": False}


class BassLRDMethod(BassMethod):
    """Table 2 row 2: the student has the low-resolution denoising head only."""

    name = "bass-lrd"
    description = "BASS ablation (Table 2): student with the 14x14 low-resolution denoising head only (LRD)"
    defaults: ClassVar[dict[str, Any]] = {**BassMethod.defaults, "nmh": False, "lrd": True, "crc": False}


class BassNMHLRDMethod(BassMethod):
    """Table 2 row 3: NMH + LRD, fused."""

    name = "bass-nmh-lrd"
    description = "BASS ablation (Table 2): student with NMH + LRD heads, fused (no CRC)"
    defaults: ClassVar[dict[str, Any]] = {**BassMethod.defaults, "nmh": True, "lrd": True, "crc": False}


class BassCodeMethod(BassMethod):
    """BASS as the released code runs it (every choice of :data:`CODE_OVERRIDES`)."""

    name = "bass-code"
    description = "BASS as released (zhangye-zoe/BASS @1451b67): 2 hard InfoNCE terms, code quirks, x19 labeled"
    defaults: ClassVar[dict[str, Any]] = {**BassMethod.defaults, **CODE_OVERRIDES}
