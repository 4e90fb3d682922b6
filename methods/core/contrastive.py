"""Cross-RoI contrastive learning (CRC, BASS Sec. 2.4): key sampling, queries and InfoNCE.

Inputs are per-pixel embeddings of the positive RoIs ``E (R, C, H, W)`` (the CRC projection head on a 28x28
RoIAlign of the FPN features) and the regions of :func:`methods.core.bands.crc_regions`
``(R, 4, H, W)`` in the order ``(R_f, R_i, R_o, R_b)``. Everything is vectorised over RoIs and pixels.

Pipeline of :func:`crc_loss` (defaults = the paper; each released-code choice is a :class:`CRCConfig`
field):

1. **RoI filter** (``roi_min_pixels``, default 0 = keep all; code: 5): RoIs with fewer pixels in any
   region are dropped.
2. **Sampling** (``alpha``, default 0.7): in every RoI and region, ``ceil(alpha * |region|)`` pixels are
   drawn uniformly without replacement (the global torch RNG, so seeded training stays reproducible and
   resumable). These are the keys ``k_f, k_i, k_o, k_b``.
3. **Groups** (``group``): ``"pair"`` (paper Eq. 5: RoIs are paired at random, ``f_i`` with ``f_j``; with
   an odd count the last RoI joins the last pair) or ``"batch"`` (code: one group of all RoIs).
4. **Queries** per group (``query``): ``"sampled"`` (paper Eq. 5: ``q_f`` = mean of the sampled
   foreground keys ``k_f, k_i`` of the group's RoIs, ``q_b`` = mean of ``k_b, k_o``) or ``"full"`` (code:
   per RoI the mean embedding of *all* mask / non-mask pixels, then the mean over the group's RoIs).
5. **InfoNCE** terms (``terms``): ``"all"`` (paper Eq. 6: ``CL(q_b, k_b, k_f) + CL(q_b, k_o, k_i) +
   CL(q_f, k_f, k_b) + CL(q_f, k_i, k_o)``, easy terms at ``tau_easy``, hard ones at ``tau_hard``) or
   ``"hard"`` (code: ``CL(q_f, k_i, k_o) + CL(q_b, k_o, k_i)`` only). Keys of a term are those of the query's
   group. ``CL`` averages over its positives (Eq. 7 written for one positive).
   ``infonce="standard"`` is Eq. 7 with cosine similarity; ``"code"`` reproduces ContrastMask's variant used
   by the released code: similarities ``cos(q, k - q)`` and the positive in the denominator *not* divided by
   tau. A term is the mean over groups that have a query, a positive and a negative; terms with none are 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

INFONCE_VARIANTS = ("standard", "code")
QUERY_MODES = ("sampled", "full")
GROUP_MODES = ("pair", "batch")
TERM_SETS = ("all", "hard")

_F, _I, _O, _B = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class CRCConfig:
    """Settings of the CRC loss (defaults: the paper; the released code in brackets).

    Attributes:
        alpha: sampling ratio of every region (0.7 [0.7]).
        terms: ``"all"`` four InfoNCE terms of Eq. 6 [``"hard"``: the two boundary terms].
        infonce: ``"standard"`` Eq. 7 [``"code"``: ContrastMask's k-q shift, positive not divided by tau].
        query: ``"sampled"`` mean of sampled keys (Eq. 5) [``"full"``: per-RoI mean of all fg/bg pixels].
        group: ``"pair"`` random RoI pairs (Eq. 5) [``"batch"``: one batch-wide query].
        tau_easy / tau_hard: temperatures of the easy (R_f/R_b) and hard (R_i/R_o) terms (0.3 / 0.7; the
            paper gives no value, these are the code's).
        roi_min_pixels: drop RoIs with fewer pixels in any region (0 [5]).
    """

    alpha: float = 0.7
    terms: str = "all"
    infonce: str = "standard"
    query: str = "sampled"
    group: str = "pair"
    tau_easy: float = 0.3
    tau_hard: float = 0.7
    roi_min_pixels: int = 0

    def __post_init__(self) -> None:
        checks = (("terms", TERM_SETS), ("infonce", INFONCE_VARIANTS), ("query", QUERY_MODES),
                  ("group", GROUP_MODES))
        for name, valid in checks:
            if getattr(self, name) not in valid:
                raise ValueError(f"CRC option {name}={getattr(self, name)!r} unknown; choose one of {', '.join(valid)}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"CRC sampling ratio alpha must be in (0, 1], got {self.alpha}")
        if self.tau_easy <= 0 or self.tau_hard <= 0:
            raise ValueError(f"CRC temperatures must be > 0, got tau_easy={self.tau_easy}, tau_hard={self.tau_hard}")

    def term_list(self) -> list[tuple[str, str, int, int, float]]:
        """``(name, query, positive region, negative region, tau)`` of each InfoNCE term used."""
        hard = [("fi_o", "f", _I, _O, self.tau_hard), ("bo_i", "b", _O, _I, self.tau_hard)]
        if self.terms == "hard":
            return hard
        return [("bb_f", "b", _B, _F, self.tau_easy), hard[1], ("ff_b", "f", _F, _B, self.tau_easy), hard[0]]


# ------------------------------------------------------------------------------------ reference InfoNCE
def info_nce(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, tau: float, variant: str = "standard") -> torch.Tensor:
    """Eq. 7 for one query, averaged over the positives (the readable reference of the grouped version).

    Args:
        q: ``(C,)`` query. pos: ``(P, C)`` positive keys. neg: ``(N, C)`` negative keys.
        tau: temperature. variant: ``"standard"`` or ``"code"`` (see the module doc).

    Returns:
        ``(1/P) sum_p -log( e^{s_p/tau} / (e^{s_p/tau} + sum_n e^{s_n/tau}) )`` with ``s = cos(q, k)``;
        for ``"code"``: ``s = cos(q, k - q)`` and the first denominator term is ``e^{s_p}``.
    """
    if variant not in INFONCE_VARIANTS:
        raise ValueError(f"InfoNCE variant {variant!r} unknown; choose one of {', '.join(INFONCE_VARIANTS)}")
    if variant == "code":
        pos, neg = pos - q, neg - q
    sp = F.cosine_similarity(pos, q[None], dim=1)
    sn = F.cosine_similarity(neg, q[None], dim=1)
    lse_n = torch.logsumexp(sn / tau, dim=0)
    first = sp if variant == "code" else sp / tau
    return (torch.logaddexp(first, lse_n) - sp / tau).mean()


# ------------------------------------------------------------------------------------ vectorised pieces
def sample_regions(regions: torch.Tensor, alpha: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``ceil(alpha * n)`` pixels uniformly without replacement from every (RoI, region) set.

    Args:
        regions: ``bool (R, K, H, W)``.
    Returns:
        ``bool (R, K, H, W)``, a subset of ``regions`` with exactly ``ceil(alpha * n)`` pixels per set
        (``ceil`` of a value within 1e-6 of an integer rounds to it).
    """
    r, k = regions.shape[:2]
    flat = regions.reshape(r, k, -1)
    if flat.numel() == 0:
        return regions.clone()
    n = flat.sum(-1)
    take = torch.ceil(n.float() * alpha - 1e-6).clamp_(min=0).long()
    if alpha >= 1.0:
        return regions.clone()
    u = torch.rand(flat.shape, generator=generator, device=flat.device)
    u = torch.where(flat, u, torch.full_like(u, 2.0))  # non-members sort last
    ranks = u.argsort(dim=-1).argsort(dim=-1)
    return (flat & (ranks < take[..., None])).reshape(regions.shape)


def make_groups(n: int, mode: str, device=None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Group index of each of ``n`` RoIs and the number of groups (``"pair"``: random pairs, an odd one out
    joins the last pair; ``"batch"``: one group)."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device), 0
    if mode == "batch" or n < 2:
        return torch.zeros(n, dtype=torch.long, device=device), 1
    perm = torch.randperm(n, generator=generator, device=device)
    g_of_rank = (torch.arange(n, device=device) // 2).clamp_(max=n // 2 - 1)
    groups = torch.empty(n, dtype=torch.long, device=device)
    groups[perm] = g_of_rank
    return groups, n // 2


def _group_sum(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Sum the leading-dim rows of ``values`` per group: ``(n_groups, *values.shape[1:])``."""
    out = values.new_zeros((n_groups,) + tuple(values.shape[1:]))
    return out.index_add_(0, groups, values)


def _queries(emb: torch.Tensor, fg: torch.Tensor, sampled: torch.Tensor, groups: torch.Tensor, g: int,
             mode: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per group ``{"f": (q (G, C), valid (G,)), "b": ...}``."""
    out = {}
    if mode == "sampled":
        sets = {"f": sampled[:, _F] | sampled[:, _I], "b": sampled[:, _B] | sampled[:, _O]}
        for name, m in sets.items():
            m = m.float()
            s = _group_sum(torch.einsum("rcp,rp->rc", emb, m), groups, g)
            cnt = _group_sum(m.sum(1), groups, g)
            out[name] = (s / cnt.clamp(min=1)[:, None], cnt > 0)
        return out
    sets = {"f": fg, "b": ~fg}
    for name, m in sets.items():
        m = m.float()
        cnt = m.sum(1)
        per_roi = torch.einsum("rcp,rp->rc", emb, m) / cnt.clamp(min=1)[:, None]
        has = (cnt > 0).float()
        s = _group_sum(per_roi * has[:, None], groups, g)
        n = _group_sum(has, groups, g)
        out[name] = (s / n.clamp(min=1)[:, None], n > 0)
    return out


def crc_loss(emb: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor, cfg: CRCConfig = CRCConfig(),
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The CRC loss of one batch (sum of the configured InfoNCE terms, unweighted).

    Args:
        emb: ``(R, C, H, W)`` pixel embeddings of the positive RoIs.
        mask: ``(R, H, W)`` binary mask targets (bool or 0/1 float).
        regions: ``bool (R, 4, H, W)`` from :func:`methods.core.bands.crc_regions`.
        cfg: :class:`CRCConfig`.
        generator: optional torch generator (default: the global RNG).

    Returns:
        ``(loss, stats)``: a scalar that is 0 (keeping the graph) when no term applies, and a dict with the
        number of RoIs used, groups, sampled keys per region and each term's value (floats).
    """
    r, c = emb.shape[:2]
    stats: dict[str, Any] = {"rois": 0, "groups": 0}
    zero = emb.sum() * 0.0
    if r == 0:
        return zero, stats
    fg = (mask if mask.dtype == torch.bool else mask > 0.5).reshape(r, -1)
    flat_regions = regions.reshape(r, 4, -1)
    keep = torch.ones(r, dtype=torch.bool, device=emb.device)
    if cfg.roi_min_pixels > 0:
        keep = (flat_regions.sum(-1) >= cfg.roi_min_pixels).all(dim=1)
    if not bool(keep.any()):
        return zero, stats
    e = emb.reshape(r, c, -1)[keep].float()
    fg, flat_regions = fg[keep], flat_regions[keep]
    n = e.shape[0]
    sampled = sample_regions(flat_regions, cfg.alpha, generator)
    groups, g = make_groups(n, cfg.group, e.device, generator)
    queries = _queries(e, fg, sampled, groups, g, cfg.query)
    stats.update(rois=n, groups=g, keys={name: int(sampled[:, k].sum()) for k, name in enumerate("fiob")})

    total = zero
    e_norm = F.normalize(e, dim=1)
    sims: dict[str, torch.Tensor] = {}
    for qname, (q, _valid) in queries.items():
        qr = q[groups]  # (n, C): each RoI's group query
        if cfg.infonce == "code":
            sims[qname] = F.cosine_similarity(e - qr[:, :, None], qr[:, :, None].expand_as(e), dim=1)
        else:
            sims[qname] = torch.einsum("rcp,rc->rp", e_norm, F.normalize(qr, dim=1))
    for name, qname, pos_k, neg_k, tau in cfg.term_list():
        s = sims[qname]
        valid_q = queries[qname][1]
        pos = sampled[:, pos_k].float()
        neg = sampled[:, neg_k].float()
        shift = 1.0 / tau  # logits are <= 1/tau: exp never overflows
        neg_sum = _group_sum((torch.exp(s / tau - shift) * neg).sum(1), groups, g)
        n_pos = _group_sum(pos.sum(1), groups, g)
        ok = valid_q & (n_pos > 0) & (neg_sum > 0)
        if not bool(ok.any()):
            stats[f"term_{name}"] = 0.0
            continue
        log_neg = torch.log(neg_sum.clamp(min=1e-30))[groups][:, None]  # (n, 1)
        first = s - shift if cfg.infonce == "code" else s / tau - shift
        per_pixel = torch.logaddexp(first, log_neg) - (s / tau - shift)
        per_group = _group_sum((per_pixel * pos).sum(1), groups, g) / n_pos.clamp(min=1)
        term = per_group[ok].mean()
        stats[f"term_{name}"] = float(term.detach())
        total = total + term
    return total, stats


def loss_ceiling(tau: float, n_neg: int) -> float:
    """Largest possible standard InfoNCE value with ``n_neg`` negatives (positive anti-aligned, negatives
    aligned): ``log(e^{-1/tau} + n e^{1/tau}) + 1/tau``; used in tests as a sanity bound."""
    return math.log(math.exp(-1 / tau) + n_neg * math.exp(1 / tau)) + 1 / tau
