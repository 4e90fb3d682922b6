"""Low-resolution denoising (LRD, BASS Sec. 2.3): a 14x14 mask head with boundary down-weighting.

:class:`LRDHead` predicts one logit per cell of the 14x14 RoI grid from the mask trunk's features (two 3x3
convs as in the released ``conv4_fc``/``conv5_fc``, a 1x1 conv to one channel) and up-samples it to 28x28
with a learned 1->1 channel 2x deconvolution for the fusion (Fig. 1(b)).

Its loss (:func:`weighted_mask_bce`) is BCE against the 14x14 binarised targets (``rois.mask_targets(14)``)
with the per-pixel weights of :func:`methods.core.bands.lrd_weight_map`: ``boundary_weight`` (default
0.5) on the pixels within ``width`` (default 1 cell of the 14x14 grid, i.e. the row just inside and the row
just outside the contour) and 1.0 elsewhere, averaged over all pixels of the valid RoIs. The paper gives
neither number; ``boundary_weight = 1`` is the released code (plain BCE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bands import lrd_weight_map


def conv_block(cin: int, cout: int, norm: str | None) -> nn.Sequential:
    """3x3 conv (+ GroupNorm when ``norm == "gn"``) + ReLU, Kaiming-initialised."""
    from methods.core.heads import group_norm

    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=norm != "gn")
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    layers: list[nn.Module] = [conv]
    if norm == "gn":
        layers.append(group_norm(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LRDHead(nn.Module):
    """The LRD branch: ``(R, C, 14, 14)`` trunk features -> ``(R, 1, 14, 14)`` logits and their 2x up-sampling.

    Args:
        in_channels: trunk channels. channels: width of the two 3x3 convs. norm: ``"gn"`` or ``None``.
    """

    def __init__(self, in_channels: int, channels: int, norm: str | None = None) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_block(in_channels, channels, norm), conv_block(channels, channels, norm))
        self.logits = nn.Conv2d(channels, 1, 1)
        self.up = nn.ConvTranspose2d(1, 1, 2, 2)
        for m in (self.logits, self.up):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.logits(self.convs(x))
        return low, self.up(low)


def weighted_mask_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``weights * BCE-with-logits`` over the pixels of the valid RoIs (0 keeping the graph if none).

    Args:
        logits: ``(R, 1, M, M)`` or ``(R, M, M)``. targets: ``(R, M, M)`` in [0, 1]. valid: ``bool (R,)``.
        weights: ``(R, M, M)`` per-pixel weights (``None`` = 1).
    """
    if logits.dim() == 4:
        logits = logits[:, 0]
    if valid.numel() == 0 or not bool(valid.any()):
        return logits.sum() * 0.0
    w = None if weights is None else weights[valid].float()
    return F.binary_cross_entropy_with_logits(logits[valid].float(), targets[valid].float(), weight=w)


def lrd_loss(logits14: torch.Tensor, targets14: torch.Tensor, valid: torch.Tensor, *,
             boundary_weight: float = 0.5, width: float = 1) -> torch.Tensor:
    """The LRD loss: :func:`weighted_mask_bce` with :func:`~methods.core.bands.lrd_weight_map` weights
    (plain BCE when ``boundary_weight == 1``)."""
    weights = None
    if boundary_weight != 1.0 and targets14.numel():
        weights = lrd_weight_map(targets14 > 0.5, boundary_weight=boundary_weight, width=width)
    return weighted_mask_bce(logits14, targets14, valid, weights)
