"""CRC regions (Eq. 3-4, paper and released-code definitions) on shapes whose region sizes are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.core.bands import boundary_mask, crc_regions, dilate, gradient_edge


def disc(radius: float = 8, size: int = 28, centre: int = 14) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (yy - centre) ** 2 + (xx - centre) ** 2 <= radius**2


def square(lo: int = 8, hi: int = 20, size: int = 28) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[lo:hi, lo:hi] = True
    return m


def sizes(regions: torch.Tensor) -> list[int]:
    return [int(x) for x in regions[0].flatten(1).sum(1)]


def test_code_definition_disc_matches_the_spec_toy_check():
    # the released code's definition on a disc of radius 8 (197 pixels) on 28x28, d = 4
    assert int(disc().sum()) == 197
    assert sizes(crc_regions(disc()[None], 4, "code")) == [81, 116, 236, 303]  # R_f, R_i, R_o, R_b


def test_code_definition_leaves_the_outer_edge_row_out():
    m = disc()[None]
    reg = crc_regions(m, 4, "code")
    edge = gradient_edge(m)
    covered = reg.any(dim=1)
    # exactly the outer edge row (edge pixels outside the mask) belongs to no region
    assert torch.equal(~covered, edge & ~m)
    assert int((edge & ~m).sum()) == 784 - (81 + 116 + 236 + 303)


def test_paper_definition_square_hand_derived():
    # 12x12 square, d = 4, Euclidean distances. Inside, the nearest background pixel is straight across
    # the nearest side. A pixel k rows inside the side is at distance k+1 from the background: rings k = 0..3 are in R_i,
    # leaving the central (12 - 8)^2 = 16 pixels: R_f = 16, R_i = 144 - 16 = 128.
    # Outside: 4 side strips of 12 x 4 (distance 1..4 straight out) = 192, plus 4 corner regions of
    # offsets (a, b), a, b >= 1, a^2 + b^2 <= 16: a=1: b<=3 (3), a=2: b<=3 (3), a=3: b<=2 (2), a=4: none
    # -> 8 per corner -> R_o = 192 + 32 = 224; R_b = 784 - 144 - 224 = 416.
    assert sizes(crc_regions(square()[None], 4, "paper")) == [16, 128, 224, 416]


def _brute_force_paper(mask: np.ndarray, d: float) -> list[int]:
    """Eq. 3-4 by exhaustive pairwise distances (an oracle independent of the convolution code)."""
    pts = np.argwhere(np.ones_like(mask, dtype=bool))
    fg = mask[pts[:, 0], pts[:, 1]]
    dist = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    to_bg = np.where(~fg[None, :], dist, np.inf).min(1)
    to_fg = np.where(fg[None, :], dist, np.inf).min(1)
    r_i = fg & (to_bg <= d)
    r_o = ~fg & (to_fg <= d)
    return [int((fg & ~r_i).sum()), int(r_i.sum()), int(r_o.sum()), int((~fg & ~r_o).sum())]


@pytest.mark.parametrize("d", [1, 2, 4, 6])
def test_paper_definition_disc_matches_brute_force(d):
    m = disc()
    got = sizes(crc_regions(m[None], d, "paper"))
    assert got == _brute_force_paper(m.numpy(), d)
    assert sum(got) == 28 * 28  # the paper's four sets partition the RoI


def test_paper_regions_are_disjoint_and_bands_hug_the_contour():
    m = disc()[None]
    reg = crc_regions(m, 4, "paper")
    assert int(reg.sum(dim=1).max()) == 1
    # R_i inside the mask, R_o outside, both adjacent to the contour
    assert not (reg[:, 1] & ~m).any() and not (reg[:, 2] & m).any()
    assert torch.equal(reg[:, 1] | reg[:, 0], m)


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_d_zero_gives_empty_bands(mode):
    reg = crc_regions(torch.stack([disc(), square()]), 0, mode)
    assert int(reg[:, 1].sum()) == 0 and int(reg[:, 2].sum()) == 0
    assert int(reg[:, 0].sum()) == int(disc().sum() + square().sum())


def test_bands_grow_with_d_and_batch_is_per_roi():
    masks = torch.stack([disc(), square(), torch.zeros(28, 28, dtype=torch.bool)])
    band = [int((crc_regions(masks[:1], d)[:, 1:3]).sum()) for d in (1, 2, 4, 6)]
    assert band == sorted(band) and band[0] > 0
    reg = crc_regions(masks, 4)
    assert sizes(reg[1:2]) == [16, 128, 224, 416]  # same as alone
    assert sizes(reg[2:3]) == [0, 0, 0, 784]  # empty RoI: all background


def test_dilate_strict_and_closed_disks():
    m = torch.zeros(1, 9, 9, dtype=torch.bool)
    m[0, 4, 4] = True
    assert int(dilate(m, 1).sum()) == 5  # cross
    assert int(dilate(m, 1, strict=True).sum()) == 1
    assert int(dilate(m, 2).sum()) == 13  # offsets with a^2 + b^2 <= 4


def test_boundary_mask_width_one_is_one_row_each_side():
    m = torch.zeros(1, 14, 14, dtype=torch.bool)
    m[0, 4:10, 4:10] = True  # 6x6 square
    b = boundary_mask(m, 1)
    assert int((b & m).sum()) == 20  # inner ring: 36 - 16
    assert int((b & ~m).sum()) == 24  # 4 strips of 6 (diagonal corners are at distance sqrt 2)
    assert int(boundary_mask(m, 0).sum()) == 0
