"""MaskRefineNet (PointWSSIS step 3), small: a U-Net that refines one rough pseudo mask at a time.

Input, per (point, rough mask) pair, a 64x64 crop (:func:`crop_windows`, :func:`make_inputs`):

- the RGB crop (3 channels, [0, 1]);
- a Gaussian heat-map of the point, sigma = 6 crop pixels (the paper's class-wise point map; one class);
- the rough mask (the teacher's pseudo mask, 0/1).

The crop is a square window centred on the box that encloses the rough mask and the point, with a side
of twice that box's longer side (at least ``min_side`` = 24 pixels, the paper crops 1-2x the mask box),
resampled to 64x64 with RoIAlign (zeros outside the image). Output: mask logits at 64x64, pasted back
into the window (bilinear) and thresholded at 0.5.

Training (:func:`train_refiner`): on the labeled patches, with the teacher's own point-selected masks
as rough masks (points = the labeled instances' centroids, the same selection as for the unlabeled
patches) and the ground-truth instance as target; BCE, Adam (lr 1e-3), batches of 32 crops, random flips
/ 90-degree rotations, ``iterations`` steps, all randomness from ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from methods.core.helpers import image_to_tensor

CROP = 64
SIGMA = 6.0


def crop_windows(points: np.ndarray, masks: Sequence[np.ndarray], *, min_side: float = 24.0) -> np.ndarray:
    """Square windows ``(x1, y1, x2, y2)`` (continuous pixel coordinates), one per point.

    Args:
        points: ``(P, 2)`` ``(row, col)``.
        masks: per point a ``bool (H, W)`` rough mask (may be empty: the window is then centred on the
            point with side ``min_side``).
        min_side: smallest window side in pixels.
    """
    out = np.zeros((len(points), 4), np.float32)
    for i, (pt, m) in enumerate(zip(np.asarray(points, np.float64).reshape(-1, 2), masks)):
        y0, x0 = pt[0] + 0.5, pt[1] + 0.5
        x1, y1, x2, y2 = x0, y0, x0, y0
        if m.any():
            rows = np.flatnonzero(m.any(axis=1))
            cols = np.flatnonzero(m.any(axis=0))
            x1, x2 = min(x1, cols[0]), max(x2, cols[-1] + 1)
            y1, y2 = min(y1, rows[0]), max(y2, rows[-1] + 1)
        side = max(min_side, 2.0 * max(x2 - x1, y2 - y1))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        out[i] = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return out


def make_inputs(image: np.ndarray, points: np.ndarray, masks: Sequence[np.ndarray], windows: np.ndarray) -> torch.Tensor:
    """``float32 (P, 5, 64, 64)``: RGB crop, point heat-map (sigma 6 crop pixels), rough mask."""
    p = len(windows)
    if p == 0:
        return torch.zeros((0, 5, CROP, CROP))
    img = image_to_tensor(image)[None]
    rois = torch.cat([torch.zeros(p, 1), torch.from_numpy(windows)], dim=1)
    rgb = roi_align(img, rois, (CROP, CROP), 1.0, sampling_ratio=2, aligned=True)
    rough = crop_masks(masks, windows)
    pts = torch.from_numpy(np.asarray(points, np.float32).reshape(-1, 2))
    side = torch.from_numpy(windows[:, 2] - windows[:, 0])
    # point position in crop pixels (pixel centres at 0.5 .. 63.5)
    cy = (pts[:, 0] + 0.5 - torch.from_numpy(windows[:, 1])) / side * CROP
    cx = (pts[:, 1] + 0.5 - torch.from_numpy(windows[:, 0])) / side * CROP
    grid = torch.arange(CROP, dtype=torch.float32) + 0.5
    heat = torch.exp(-(((grid[None, :, None] - cy[:, None, None]) ** 2)
                       + ((grid[None, None, :] - cx[:, None, None]) ** 2)) / (2 * SIGMA**2))
    return torch.cat([rgb, heat[:, None], rough[:, None]], dim=1)


def crop_masks(masks: Sequence[np.ndarray], windows: np.ndarray) -> torch.Tensor:
    """``float32 (P, 64, 64)`` binary crops (bilinear RoIAlign thresholded at 0.5) of per-point masks."""
    p = len(windows)
    if p == 0:
        return torch.zeros((0, CROP, CROP))
    stack = torch.from_numpy(np.stack([np.asarray(m, np.float32) for m in masks]))[:, None]
    rois = torch.cat([torch.arange(p, dtype=torch.float32)[:, None], torch.from_numpy(windows)], dim=1)
    return (roi_align(stack, rois, (CROP, CROP), 1.0, sampling_ratio=2, aligned=True)[:, 0] >= 0.5).float()


def paste(probs: torch.Tensor, windows: np.ndarray, shape: tuple[int, int], thresh: float = 0.5) -> list[np.ndarray]:
    """Paste ``(P, 64, 64)`` probabilities back into their windows: per point a ``bool (H, W)`` mask."""
    h, w = shape
    out = []
    for pr, (x1, y1, x2, y2) in zip(probs, windows):
        m = np.zeros((h, w), bool)
        c1, r1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        c2, r2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
        if c2 > c1 and r2 > r1:
            # sample the 64x64 map at the pixel centres of the covered image pixels
            ys = (torch.arange(r1, r2, dtype=torch.float32) + 0.5 - y1) / (y2 - y1) * 2 - 1
            xs = (torch.arange(c1, c2, dtype=torch.float32) + 0.5 - x1) / (x2 - x1) * 2 - 1
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([gx, gy], dim=-1)[None]
            v = F.grid_sample(pr[None, None].float().cpu(), grid, mode="bilinear", align_corners=False)[0, 0]
            m[r1:r2, c1:c2] = (v >= thresh).numpy()
        out.append(m)
    return out


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True),
    )


class MaskRefineNet(nn.Module):
    """A 3-level U-Net (16/32/64 channels, GroupNorm): ``(N, 5, 64, 64)`` -> ``(N, 1, 64, 64)`` logits."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.e1, self.e2, self.e3 = _block(5, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.d2, self.d1 = _block(4 * w + 2 * w, 2 * w), _block(2 * w + w, w)
        self.out = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        d2 = self.d2(torch.cat([F.interpolate(e3, scale_factor=2.0), e2], dim=1))
        d1 = self.d1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], dim=1))
        return self.out(d1)


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def train_refiner(
    inputs: torch.Tensor, targets: torch.Tensor, *, iterations: int, seed: int, device: str = "cpu",
    batch_size: int = 32, lr: float = 1e-3,
) -> tuple[MaskRefineNet, list[float]]:
    """Train a :class:`MaskRefineNet` on ``inputs (N, 5, 64, 64)`` / ``targets (N, 64, 64)`` in {0, 1}.

    Returns the network (eval mode, on ``device``) and the per-iteration losses.
    """
    if len(inputs) == 0:
        raise ValueError("MaskRefineNet needs at least one training crop (no labeled instances?)")
    torch.manual_seed(seed)
    net = MaskRefineNet().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng([seed, 7])
    x_all, y_all = inputs.to(device), targets.to(device)[:, None]
    losses = []
    net.train()
    for _ in range(int(iterations)):
        idx = torch.from_numpy(rng.integers(0, len(x_all), size=min(batch_size, len(x_all))))
        k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        x = _dihedral(x_all[idx], k, flip)
        y = _dihedral(y_all[idx], k, flip)
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    return net, losses


@torch.no_grad()
def refine_masks(
    net: MaskRefineNet, image: np.ndarray, points: np.ndarray, masks: Sequence[np.ndarray], *,
    device: str = "cpu", batch_size: int = 64,
) -> list[np.ndarray]:
    """Refined ``bool (H, W)`` masks, one per (point, rough mask)."""
    if len(masks) == 0:
        return []
    windows = crop_windows(points, masks)
    x = make_inputs(image, points, masks, windows)
    probs = torch.cat([net(x[i:i + batch_size].to(device)).sigmoid()[:, 0].cpu()
                       for i in range(0, len(x), batch_size)])
    return paste(probs, windows, image.shape[:2])
