"""The four CRC pixel regions of a RoI mask (BASS Eq. 3-4) and the LRD boundary weight map.

Everything works on a batch of binary RoI masks ``(R, H, W)`` (the 28x28 mask-target grid of each positive
RoI for CRC, the 14x14 grid for LRD) and is vectorised over RoIs with small convolutions: no Python loop
over RoIs or pixels. Distances are Euclidean, in grid cells, and only pixels of the grid count (the mask
outside the RoI is unknown).

Two definitions of the regions, selected by ``mode``:

``"paper"`` (default; Eq. 3-4 with "shrinking and expanding d distances"):
    F = mask pixels, B = the other pixels of the grid.
    ``R_i = {p in F : some pixel of B lies within distance d of p}`` = ``F minus erode(F, disk(d))``,
    ``R_o = {p in B : some pixel of F lies within distance d of p}`` = ``dilate(F, disk(d)) minus F``,
    ``R_f = F minus R_i``, ``R_b = B minus R_o``. The four sets partition the grid. ``d = 0`` gives empty
    bands (the paper: "when d=0, we do not sample between the actual and inner (outer) contour"), since no
    pixel of the other class is at distance 0. (Eq. 3 literally writes the *squared* distance <= d; we read
    it as the distance, which is what "shrinking and expanding d distances" describes.)

``"code"`` (the released ``get_pixel_sets_distrans``):
    edge = pixels where ``np.gradient`` of the binary mask is non-zero (a 2-px contour, one row inside, one
    outside); ``D`` = pixels whose distance to the nearest edge pixel is strictly below ``d``; band
    ``= D minus edge``; ``R_i`` = band pixels in the mask, ``R_o`` = band pixels outside, ``R_f`` = mask pixels
    not in the band (this *includes* the inner edge row), ``R_b`` = pixels in neither the mask nor ``D``.
    The outer edge row belongs to no set. Toy check (disc of radius 8, centre on a pixel, 28x28 grid,
    d = 4): |R_i| = 116, |R_o| = 236, |R_f| = 81, |R_b| = 303.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: region order used everywhere in the CRC code: easy foreground, inner band, outer band, easy background.
REGIONS = ("f", "i", "o", "b")
BAND_MODES = ("paper", "code")


def disk_kernel(radius: float, *, strict: bool = False, device=None) -> torch.Tensor:
    """``float32 (1, 1, 2k+1, 2k+1)`` disk of integer offsets with ``|offset| <= radius`` (``< radius`` when
    ``strict``); ``k = ceil(radius)``."""
    k = max(0, math.ceil(radius))
    ax = torch.arange(-k, k + 1, dtype=torch.float32, device=device)
    dist2 = ax[:, None] ** 2 + ax[None, :] ** 2
    r2 = float(radius) ** 2
    disk = (dist2 < r2) if strict else (dist2 <= r2 + 1e-9)
    return disk.float()[None, None]


def dilate(mask: torch.Tensor, radius: float, *, strict: bool = False) -> torch.Tensor:
    """Pixels within distance ``radius`` (``< radius`` when ``strict``) of a ``True`` pixel of ``mask``.

    Args:
        mask: ``bool (R, H, W)``.
    Returns:
        ``bool (R, H, W)``. Only pixels inside the grid are sources (zero padding).
    """
    if mask.numel() == 0:
        return mask.clone()
    ker = disk_kernel(radius, strict=strict, device=mask.device)
    if ker.sum() == 0:
        return torch.zeros_like(mask)
    k = ker.shape[-1] // 2
    out = F.conv2d(mask[:, None].float(), ker, padding=k)[:, 0]
    return out > 0.5


def gradient_edge(mask: torch.Tensor) -> torch.Tensor:
    """Pixels where ``np.gradient`` of the binary mask is non-zero (central differences inside the grid,
    one-sided differences on its border), per RoI: ``bool (R, H, W)``."""
    m = mask.float()
    gy = torch.zeros_like(m)
    gx = torch.zeros_like(m)
    if m.shape[-2] > 1:
        gy[:, 1:-1] = m[:, 2:] - m[:, :-2]
        gy[:, 0] = m[:, 1] - m[:, 0]
        gy[:, -1] = m[:, -1] - m[:, -2]
    if m.shape[-1] > 1:
        gx[:, :, 1:-1] = m[:, :, 2:] - m[:, :, :-2]
        gx[:, :, 0] = m[:, :, 1] - m[:, :, 0]
        gx[:, :, -1] = m[:, :, -1] - m[:, :, -2]
    return (gx != 0) | (gy != 0)


def crc_regions(mask: torch.Tensor, d: float = 4, mode: str = "paper") -> torch.Tensor:
    """The four CRC regions of each RoI.

    Args:
        mask: ``(R, H, W)`` binary RoI masks (bool, or float thresholded at 0.5).
        d: band width in grid cells (paper: 4; the released code's radius is also 4).
        mode: ``"paper"`` or ``"code"`` (see the module doc).

    Returns:
        ``bool (R, 4, H, W)``: regions in :data:`REGIONS` order ``(R_f, R_i, R_o, R_b)``.
    """
    if mode not in BAND_MODES:
        raise ValueError(f"band mode {mode!r} unknown; choose one of {', '.join(BAND_MODES)}")
    if d < 0:
        raise ValueError(f"band width d must be >= 0, got {d}")
    fg = mask if mask.dtype == torch.bool else mask > 0.5
    bg = ~fg
    if mode == "paper":
        inner = fg & dilate(bg, d)
        outer = bg & dilate(fg, d)
        return torch.stack([fg & ~inner, inner, outer, bg & ~outer], dim=1)
    edge = gradient_edge(fg)
    near = dilate(edge, d, strict=True)
    band = near & ~edge
    return torch.stack([fg & ~band, band & fg, band & bg, bg & ~near], dim=1)


def boundary_mask(mask: torch.Tensor, width: float = 1) -> torch.Tensor:
    """Pixels within ``width`` of the contour on either side: ``R_i | R_o`` of the paper definition.

    With ``width = 1`` these are the mask pixels 4-adjacent to the background and the background pixels
    4-adjacent to the mask (one row on each side of the contour). ``width = 0``: empty.
    """
    fg = mask if mask.dtype == torch.bool else mask > 0.5
    bg = ~fg
    return (fg & dilate(bg, width)) | (bg & dilate(fg, width))


def lrd_weight_map(mask: torch.Tensor, *, boundary_weight: float = 0.5, width: float = 1,
                   other_weight: float = 1.0) -> torch.Tensor:
    """Per-pixel weights of the LRD loss: ``boundary_weight`` on :func:`boundary_mask` pixels,
    ``other_weight`` elsewhere. ``float32 (R, H, W)``."""
    b = boundary_mask(mask, width)
    w = torch.full(b.shape, float(other_weight), dtype=torch.float32, device=b.device)
    w[b] = float(boundary_weight)
    return w
