"""InfoNCE (Eq. 7), key sampling, cross-RoI grouping and the vectorised CRC loss (Eq. 5-6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.core.bands import crc_regions
from methods.core.contrastive import CRCConfig, crc_loss, info_nce, make_groups, sample_regions


def test_info_nce_standard_equals_hand_computation():
    q = torch.tensor([1.0, 0.0])
    pos = torch.tensor([[3.0, 0.0]])  # cos = 1
    neg = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])  # cos = 0, -1
    tau = 0.5
    # -log(e^{1/tau} / (e^{1/tau} + e^{0} + e^{-1/tau})) = log(1 + e^{-2} + e^{-4})
    expected = math.log(1 + math.exp(-2) + math.exp(-4))
    assert float(info_nce(q, pos, neg, tau)) == pytest.approx(expected, rel=1e-6)


def test_info_nce_code_variant_equals_hand_computation():
    q = torch.tensor([1.0, 0.0])
    pos = torch.tensor([[2.0, 0.0]])  # k - q = (1, 0): s = 1
    neg = torch.tensor([[1.0, 1.0]])  # k - q = (0, 1): s = 0
    tau = 0.5
    # -log(e^{s_p/tau} / (e^{s_p} + e^{s_n/tau})) = log(e + 1) - 2  (positive not divided by tau)
    expected = math.log(math.e + 1) - 2
    assert float(info_nce(q, pos, neg, tau, "code")) == pytest.approx(expected, rel=1e-6)
    assert float(info_nce(q, pos, neg, tau)) != pytest.approx(expected, rel=1e-3)


def test_info_nce_averages_over_positives():
    q = torch.tensor([1.0, 0.0])
    p1, p2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    neg = torch.tensor([[0.0, 1.0]])
    both = info_nce(q, torch.cat([p1, p2]), neg, 0.3)
    assert float(both) == pytest.approx(float(info_nce(q, p1, neg, 0.3) + info_nce(q, p2, neg, 0.3)) / 2, rel=1e-6)


@pytest.mark.parametrize("variant", ["standard", "code"])
def test_info_nce_gradient_pulls_the_positive_towards_the_query(variant):
    q = torch.tensor([1.0, 0.0])
    pos = torch.tensor([[0.3, 1.0]], requires_grad=True)
    neg = torch.tensor([[0.0, -1.0], [-1.0, 0.2]])
    loss = info_nce(q, pos, neg, 0.5, variant)
    loss.backward()
    assert pos.grad is not None and torch.isfinite(pos.grad).all() and pos.grad.abs().sum() > 0
    before = F.cosine_similarity(pos.detach(), q[None])
    after = F.cosine_similarity(pos.detach() - 0.1 * pos.grad, q[None])
    assert float(after) > float(before)
    assert float(info_nce(q, pos.detach() - 0.1 * pos.grad, neg, 0.5, variant)) < float(loss.detach())


def test_sample_regions_takes_ceil_alpha_n_from_each_set():
    torch.manual_seed(0)
    regions = torch.zeros(2, 4, 5, 5, dtype=torch.bool)
    regions[0, 0, :2] = True  # 10 pixels
    regions[0, 1, 2, :3] = True  # 3
    regions[1, 3] = True  # 25
    got = sample_regions(regions, 0.7)
    assert not (got & ~regions).any()
    counts = got.flatten(2).sum(-1)
    assert counts.tolist() == [[7, 3, 0, 0], [0, 0, 0, 18]]  # ceil(7.0), ceil(2.1), ceil(17.5)
    assert torch.equal(sample_regions(regions, 1.0), regions)


def test_pairs_and_odd_roi():
    torch.manual_seed(0)
    g, n = make_groups(5, "pair")
    assert n == 2 and sorted(torch.bincount(g).tolist()) == [2, 3]
    g, n = make_groups(4, "pair")
    assert n == 2 and torch.bincount(g).tolist() == [2, 2]
    g, n = make_groups(7, "batch")
    assert n == 1 and g.tolist() == [0] * 7


def _toy_batch(r: int = 4, c: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(r, c, 28, 28, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    masks = torch.stack([(yy - 14) ** 2 + (xx - 14 + k) ** 2 <= (6 + k) ** 2 for k in range(r)])
    return emb, masks


def test_grouped_loss_equals_reference_info_nce_for_one_group():
    emb, masks = _toy_batch()
    regions = crc_regions(masks, 4)
    cfg = CRCConfig(alpha=1.0, group="batch", query="sampled", terms="all", tau_easy=0.3, tau_hard=0.7)
    loss, stats = crc_loss(emb, masks, regions, cfg)
    # reference: pooled keys of all RoIs, queries = mean of the fg (R_f + R_i) / bg (R_b + R_o) keys
    keys = emb.permute(0, 2, 3, 1)  # (R, H, W, C)
    k = {name: keys[regions[:, i]] for i, name in enumerate("fiob")}
    q_f = torch.cat([k["f"], k["i"]]).mean(0)
    q_b = torch.cat([k["b"], k["o"]]).mean(0)
    ref = (info_nce(q_b, k["b"], k["f"], 0.3) + info_nce(q_b, k["o"], k["i"], 0.7)
           + info_nce(q_f, k["f"], k["b"], 0.3) + info_nce(q_f, k["i"], k["o"], 0.7))
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert stats["rois"] == 4 and stats["groups"] == 1


def test_grouped_code_variant_equals_reference():
    emb, masks = _toy_batch()
    regions = crc_regions(masks, 4, "code")
    cfg = CRCConfig(alpha=1.0, group="batch", query="full", terms="hard", infonce="code", roi_min_pixels=5)
    loss, _ = crc_loss(emb, masks, regions, cfg)
    keys = emb.permute(0, 2, 3, 1)
    per_roi_f = torch.stack([keys[j][masks[j]].mean(0) for j in range(4)])
    per_roi_b = torch.stack([keys[j][~masks[j]].mean(0) for j in range(4)])
    q_f, q_b = per_roi_f.mean(0), per_roi_b.mean(0)
    k_i, k_o = keys[regions[:, 1]], keys[regions[:, 2]]
    ref = info_nce(q_f, k_i, k_o, 0.7, "code") + info_nce(q_b, k_o, k_i, 0.7, "code")
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)


def test_pair_groups_average_per_pair_terms():
    emb, masks = _toy_batch(r=2)
    regions = crc_regions(masks, 4)
    # with two RoIs, "pair" and "batch" are the same single group
    a, _ = crc_loss(emb, masks, regions, CRCConfig(alpha=1.0, group="pair"))
    b, _ = crc_loss(emb, masks, regions, CRCConfig(alpha=1.0, group="batch"))
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    emb4, masks4 = _toy_batch(r=4)
    torch.manual_seed(3)
    full, stats = crc_loss(emb4, masks4, crc_regions(masks4, 4), CRCConfig(alpha=1.0, group="pair"))
    assert stats["groups"] == 2 and torch.isfinite(full)


def test_crc_loss_gradients_and_empty_cases():
    emb, masks = _toy_batch()
    emb.requires_grad_(True)
    loss, _ = crc_loss(emb, masks, crc_regions(masks, 4), CRCConfig())
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    # no RoIs, and RoIs dropped by roi_min_pixels: a zero that keeps the graph
    z, _ = crc_loss(emb[:0], masks[:0], crc_regions(masks[:0], 4))
    assert float(z.detach()) == 0.0 and z.requires_grad
    blank = torch.zeros_like(masks)
    z2, stats = crc_loss(emb, blank, crc_regions(blank, 4), CRCConfig(roi_min_pixels=5))
    assert float(z2.detach()) == 0.0 and stats["rois"] == 0
    # d = 0 (no bands): only the easy terms remain in the paper mode
    z3, stats3 = crc_loss(emb, masks, crc_regions(masks, 0), CRCConfig(alpha=1.0, group="batch"))
    assert float(z3.detach()) > 0 and stats3["term_fi_o"] == 0.0 and stats3["term_ff_b"] > 0


def test_config_validation():
    with pytest.raises(ValueError, match="alpha"):
        CRCConfig(alpha=0.0)
    with pytest.raises(ValueError, match="infonce"):
        CRCConfig(infonce="fancy")
