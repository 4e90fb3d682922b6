"""NoisyBoundary (Wang et al., CVPR 2022) on the shared pseudo-label framework: method ``noisyboundary``.

Pipeline: the same teacher -> count-matched pseudo-labels as BASS (:mod:`methods.core.pseudolabels`), then a
student with

- the **noise-tolerant mask head** (NTM): BASS's mask branch with NMH + LRD and no CRC — shared trunk, a
  standard 28x28 branch and a 14x14 branch (two 3x3 convs, 1x1 logits, 2x deconvolution), concatenated and
  fused by a 1x1 conv; supervised as the official code: BCE on the fused 28x28 output + BCE on the 14x14
  output (no boundary down-weighting);
- the **boundary-preserving map (BPM) loss** on both outputs, ``bpm`` option:
  ``"paper"`` (default, the paper's intent): per-pixel BCE weighted by
  ``w = |L * sigmoid(logits)| / mean_RoI(|L * sigmoid(logits)|)`` (detached; ``L`` the 3x3 Laplacian, centre
  8, others -1, zero padding as the code), averaged over pixels; RoIs whose map is ~0 everywhere fall back
  to ``w = 1``. ``"code"``: the official code reduces the BCE to a scalar *before* multiplying by
  ``3 w / mean(w)``, so after the final mean the loss is exactly ``3 x BCE``: a constant factor 3.
  ``"none"``: plain BCE.
- **strong augmentation** of every student patch (:class:`StrongAugment`, numpy/scipy only): the shared
  flips/rotations/colour jitter, then with probability 7/8 one of {Gaussian blur sigma <= 3, box blur 2-7 px,
  sharpen, Gaussian noise (variance <= 0.05 * 255), multiplicative noise 0.5-1.5, brightness/contrast
  0.1-0.3}, then CutOut: 1-5 holes of up to 20 % of the patch side filled with grey (image only, as
  mmdet's CutOut).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from benchmark.options import option
from methods.core.options import PseudoLabelOptions
from methods.core.two_res_branch import BassMaskBranch, BranchConfig
from methods.core.lrd import weighted_mask_bce
from methods.core.augment import Augment
from methods.core.model import fpn_channels
from methods.core.targets import TrainSample
from methods.core.pseudolabels import PseudoLabelStudentMethod

BPM_MODES = ("paper", "code", "none")


def laplacian_weight(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The BPM weight map ``|L * sigmoid(logits)| / mean(|L * sigmoid(logits)|)`` per RoI, detached.

    Args:
        logits: ``(R, M, M)`` or ``(R, 1, M, M)`` mask logits.
        eps: RoIs whose mean response is below this get uniform weights 1.

    Returns:
        ``float32 (R, M, M)``, mean 1 over each RoI.
    """
    if logits.dim() == 3:
        logits = logits[:, None]
    p = logits.detach().float().sigmoid()
    ker = -torch.ones(1, 1, 3, 3, dtype=p.dtype, device=p.device)
    ker[0, 0, 1, 1] = 8.0
    resp = F.conv2d(p, ker, padding=1).abs()[:, 0]
    mean = resp.mean(dim=(-2, -1), keepdim=True)
    flat = mean < eps
    w = resp / mean.clamp(min=eps)
    return torch.where(flat, torch.ones_like(w), w)


class NoisyBoundaryBranch(BassMaskBranch):
    """NTM head (BASS branch, NMH + LRD, fused supervision) with the BPM-weighted mask loss.

    Args: as :class:`BassMaskBranch`, plus ``bpm`` (``"paper"``, ``"code"`` or ``"none"``).
    """

    def __init__(self, in_channels: int = 256, channels: int = 256, convs: int = 4, norm: str | None = None,
                 bpm: str = "paper") -> None:
        if bpm not in BPM_MODES:
            raise ValueError(f"bpm={bpm!r} unknown; choose one of {', '.join(BPM_MODES)}")
        cfg = BranchConfig(nmh=True, lrd=True, crc=False, supervise="fused", lrd_boundary_weight=1.0)
        super().__init__(in_channels, channels, convs, norm, cfg)
        self.bpm = bpm

    def mask_bce(self, logits, targets, valid, weights=None, *, term=""):
        if self.bpm == "code":
            return 3.0 * weighted_mask_bce(logits, targets, valid, weights)
        if self.bpm == "paper" and logits.shape[0] > 0:
            w = laplacian_weight(logits)
            weights = w if weights is None else weights * w
        return weighted_mask_bce(logits, targets, valid, weights)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "bpm": self.bpm}


@dataclasses.dataclass(frozen=True)
class StrongAugment:
    """NoisyBoundary's student augmentation (see the module doc); ``base`` runs first.

    Attributes:
        base: the shared geometric + colour augmentation.
        p: probability of applying one of the photometric operations.
        cutout_holes: (min, max) number of CutOut holes. cutout_frac: max hole side as a fraction of the
            patch side. cutout_fill: grey value of the holes.
    """

    base: Augment = Augment()
    p: float = 7 / 8
    cutout_holes: tuple[int, int] = (1, 5)
    cutout_frac: float = 0.2
    cutout_fill: int = 128

    OPS: ClassVar[tuple[str, ...]] = ("gauss_blur", "box_blur", "sharpen", "gauss_noise", "mult_noise",
                                      "brightness_contrast")

    def config(self) -> dict[str, Any]:
        return {"type": "StrongAugment", "base": self.base.config(), "p": self.p,
                "cutout_holes": list(self.cutout_holes), "cutout_frac": self.cutout_frac,
                "cutout_fill": self.cutout_fill}

    def photometric(self, img: np.ndarray, op: str, rng: np.random.Generator) -> np.ndarray:
        """Apply one photometric operation ``op`` of :attr:`OPS` to a ``uint8 (H, W, 3)`` image."""
        f = img.astype(np.float32)
        if op == "gauss_blur":
            sigma = rng.uniform(0.5, 3.0)
            f = ndimage.gaussian_filter(f, sigma=(sigma, sigma, 0))
        elif op == "box_blur":
            k = int(rng.integers(2, 8))
            f = ndimage.uniform_filter(f, size=(k, k, 1))
        elif op == "sharpen":
            alpha = rng.uniform(0.2, 0.5)
            blur = ndimage.gaussian_filter(f, sigma=(1.0, 1.0, 0))
            f = f + alpha * (f - blur)
        elif op == "gauss_noise":
            var = rng.uniform(0.0, 0.05 * 255)
            f = f + rng.normal(0.0, np.sqrt(var), size=f.shape)
        elif op == "mult_noise":
            f = f * rng.uniform(0.5, 1.5, size=(1, 1, f.shape[2]))
        elif op == "brightness_contrast":
            b = rng.uniform(0.1, 0.3) * rng.choice([-1.0, 1.0]) * 255.0
            c = 1.0 + rng.uniform(0.1, 0.3) * rng.choice([-1.0, 1.0])
            mean = f.mean()
            f = (f - mean) * c + mean + b
        else:
            raise ValueError(f"unknown photometric op {op!r}; choose from {', '.join(self.OPS)}")
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)

    def cutout(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape[:2]
        out = img.copy()
        for _ in range(int(rng.integers(self.cutout_holes[0], self.cutout_holes[1] + 1))):
            hh = int(rng.integers(1, max(2, int(self.cutout_frac * h) + 1)))
            ww = int(rng.integers(1, max(2, int(self.cutout_frac * w) + 1)))
            y = int(rng.integers(0, max(1, h - hh + 1)))
            x = int(rng.integers(0, max(1, w - ww + 1)))
            out[y:y + hh, x:x + ww] = self.cutout_fill
        return out

    def __call__(self, sample: TrainSample, rng: np.random.Generator) -> TrainSample:
        s = self.base(sample, rng)
        img = s.image
        if rng.random() < self.p:
            img = self.photometric(img, self.OPS[int(rng.integers(0, len(self.OPS)))], rng)
        img = self.cutout(img, rng)
        return TrainSample(image=np.ascontiguousarray(img), label=s.label, boxes=s.boxes, id=s.id)


@dataclasses.dataclass(frozen=True)
class NoisyBoundaryOptions(PseudoLabelOptions):
    """Options of :class:`NoisyBoundaryMethod`: :class:`~methods.core.options.PseudoLabelOptions` plus these."""

    bpm: str = option("paper", "boundary-pixel modelling of the loss", choices=BPM_MODES)
    strong_augment: bool = option(True, "StrongAugment (True) or the shared augmentation (False)")


class NoisyBoundaryMethod(PseudoLabelStudentMethod):
    """NoisyBoundary: count-matched PLs -> student with the noise-tolerant mask head and the BPM loss.

    Options: :class:`NoisyBoundaryOptions`, i.e. the pseudo-label ones plus ``bpm`` ("paper" | "code" | "none", default
    "paper") and ``strong_augment`` (True: :class:`StrongAugment`; False: the shared augmentation).
    """

    name = "noisyboundary"
    family = "noisyboundary"
    description = "NoisyBoundary: teacher PLs -> student with noise-tolerant 14x14+28x28 mask head, BPM loss, strong aug"
    approximation = (
        "torchvision Mask R-CNN on the shared PL framework (count-matched box threshold); strong augmentation "
        "re-implemented with numpy/scipy; BPM as per-pixel Laplacian weighting (paper intent) by default"
    )
    version = "1"
    Options = NoisyBoundaryOptions
    table_order = 60

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.options["bpm"] not in BPM_MODES:
            raise ValueError(f"bpm must be one of {', '.join(BPM_MODES)}, got {self.options['bpm']!r}")

    def build_branch(self, profile: Any, norm: str):
        return NoisyBoundaryBranch(fpn_channels(profile), profile.mask_head_channels, profile.mask_head_convs,
                                   norm="gn" if norm == "gn" else None, bpm=self.options["bpm"])

    def student_augment(self):
        if self.options["strong_augment"]:
            return StrongAugment(base=Augment() if self.options["augment"] else
                                 Augment(False, False, False, 0.0, 0.0, 0.0))
        return super().student_augment()
