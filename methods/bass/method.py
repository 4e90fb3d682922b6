"""The ``bass`` method and its registered variants (Table 2's ablation rows and the released-code variant).

``bass`` = teacher Mask R-CNN -> count-matched pseudo-labels (:mod:`methods.core.pseudolabels`) -> student Mask
R-CNN with the NMH + LRD + CRC mask branch (:mod:`methods.core.two_res_branch`), trained with Eq. 2
(``L_det + L_nmh + L_lrd + L_cl``, plus the fused-output BCE that trains the fusion conv). Prediction uses
the student's fused mask through the shared instance-map rule.

Variants (all ``family = "bass"``, so ``--set bass.alpha=0.3`` reaches every one; each is a subclass that
only changes the defaults of its ``Options``):

================  =========================================================================================
``bass``          NMH + LRD + CRC, paper defaults (Table 2 row 4)
``bass-nmh``      NMH only (Table 2 row 1): the student is a plain Mask R-CNN on labeled + PL patches
``bass-lrd``      LRD only (row 2): 14x14 head, output up-sampled by its learned deconvolution
``bass-nmh-lrd``  NMH + LRD fused (row 3)
``bass-code``     every choice of the released code (see :data:`CODE_OVERRIDES`)
================  =========================================================================================
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmark.options import defaults_of, option, with_defaults
from methods.core.options import PseudoLabelOptions
from methods.core.pseudolabels import PseudoLabelStudentMethod


@dataclasses.dataclass(frozen=True)
class BassOptions(PseudoLabelOptions):
    """BASS's options: those of :class:`~methods.core.options.PseudoLabelOptions` plus the student's heads
    and the CRC loss (see :class:`methods.core.contrastive.CRCConfig` and
    :class:`methods.core.two_res_branch.BranchConfig`)."""

    nmh: bool = option(True, "student has the naive 28x28 mask head (Table 2)")
    lrd: bool = option(True, "student has the 14x14 low-resolution denoising head (Table 2)")
    crc: bool = option(True, "student trains with the contrastive CRC loss (Table 2)")
    supervise: str = option(
        "branches", "BCE on NMH + LRD + fused outputs, or the fused (+14x14 LRD) output only (code)",
        choices=("branches", "fused"),
    )
    lrd_boundary_weight: float = option(0.5, "LRD loss weight near the contour on the 14x14 grid", low=0.0)
    lrd_boundary_width: float = option(1.0, "width (14x14 cells, both sides) of the LRD contour zone", low=0.0)
    alpha: float = option(0.7, "CRC sampling ratio of every region", low=0.0, high=1.0, low_open=True)
    d: int = option(4, "band width in 28x28 RoI cells", low=0)
    bands: str = option("paper", "Eq. 3-4 regions, or the released edge-distance definition", choices=("paper", "code"))
    crc_terms: str = option("all", "four InfoNCE terms, or the two hard ones (code)", choices=("all", "hard"))
    infonce: str = option("standard", "Eq. 7, or ContrastMask's k - q shift (code)", choices=("standard", "code"))
    query: str = option("sampled", "query = mean of sampled keys, or of all fg/bg pixels (code)",
                        choices=("sampled", "full"))
    crc_group: str = option("pair", "random RoI pairs, or one batch-wide query (code)", choices=("pair", "batch"))
    tau_easy: float = option(0.3, "temperature of the easy (R_f/R_b) terms", low=0.0, low_open=True)
    tau_hard: float = option(0.7, "temperature of the hard (R_i/R_o) terms", low=0.0, low_open=True)
    crc_weight: float = option(1.0, "weight of the CRC loss", low=0.0)
    roi_min_pixels: int = option(0, "drop RoIs with fewer pixels in any region (code: 5)", low=0)
    crc_channels: int = option(64, "CRC encoder width", low=1)
    embed_dim: int = option(64, "CRC embedding size", low=1)
    crc_max_rois: int = option(0, "positive RoIs used by the CRC loss (0 = all)", low=0)
    crc_in_fusion: bool = option(False, "the CRC encoder's mask logit also feeds the fusion conv (code: True)")


_PL_FIELDS = {f.name for f in dataclasses.fields(PseudoLabelOptions)}
#: BASS's own options and their defaults (besides the pseudo-label / student / prediction ones).
BASS_OPTIONS: dict[str, Any] = {k: v for k, v in defaults_of(BassOptions).items() if k not in _PL_FIELDS}

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

    Options: :class:`BassOptions` (pseudo-labels, student training, prediction rule, plus
    :data:`BASS_OPTIONS`):

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
    Options = BassOptions
    ablation = "NMH + LRD + CRC"
    table_order = 120
    report_sweeps = {
        "box_threshold": "Table 3. Box-score threshold v_b",
        "pixel_threshold": "Table 4. Pixel threshold v_p",
        "alpha": "Fig. 3. CRC sampling ratio α",
        "d": "Fig. 4. Band distance d",
    }

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
    Options = with_defaults(BassOptions, "BassNMHOptions", nmh=True, lrd=False, crc=False)
    ablation = "NMH"
    table_order = 80


class BassLRDMethod(BassMethod):
    """Table 2 row 2: the student has the low-resolution denoising head only."""

    name = "bass-lrd"
    description = "BASS ablation (Table 2): student with the 14x14 low-resolution denoising head only (LRD)"
    Options = with_defaults(BassOptions, "BassLRDOptions", nmh=False, lrd=True, crc=False)
    ablation = "LRD"
    table_order = 90


class BassNMHLRDMethod(BassMethod):
    """Table 2 row 3: NMH + LRD, fused."""

    name = "bass-nmh-lrd"
    description = "BASS ablation (Table 2): student with NMH + LRD heads, fused (no CRC)"
    Options = with_defaults(BassOptions, "BassNMHLRDOptions", nmh=True, lrd=True, crc=False)
    ablation = "NMH + LRD"
    table_order = 100


class BassCodeMethod(BassMethod):
    """BASS as the released code runs it (every choice of :data:`CODE_OVERRIDES`)."""

    name = "bass-code"
    description = "BASS as released (zhangye-zoe/BASS @1451b67): 2 hard InfoNCE terms, code quirks, x19 labeled"
    Options = with_defaults(BassOptions, "BassCodeOptions", **CODE_OVERRIDES)
    ablation = None  # not a Table 2 row
    table_order = 110
