"""Instance-segmentation metrics for nuclei: Dice, AJI, AJI+ and PQ (pure numpy/scipy).

Every public function takes ``(true, pred)``: two integer instance maps of the same shape, ``0`` =
background and every other value = one instance. Ids may be anything non-negative: gaps, huge values
(``2**31 - 1``, ``2**64 - 1``) and maps without any background pixel are fine. Ids are taken as given:
a non-contiguous id is *one* instance (HoVer-Net's ``remap_label`` convention); relabel connected
components yourself (``skimage.measure.label``) to replicate BASS/tiseg.

The definitions follow HoVer-Net's ``metrics/stats_utils.py`` (``get_dice_1``, ``get_fast_aji``,
``get_fast_aji_plus``, ``get_fast_pq``):

* **Dice** -- binary foreground Dice ``2|T∩P| / (|T| + |P|)``.
* **AJI** (Kumar et al.) -- every true instance is paired with the prediction of highest IoU (a
  prediction may serve several true instances); ``AJI = Σ paired I / (Σ paired U + area of every
  unpaired true instance + area of every prediction paired with no true instance)``. A true instance
  that overlaps no prediction is unpaired.
* **AJI+** -- as AJI but with a one-to-one pairing that maximises the summed pair score (Hungarian).
* **PQ** -- a true/pred pair matches when ``IoU > match_iou`` (strictly). For ``match_iou >= 0.5``
  such pairs are unique by construction; below 0.5 the pairing is the Hungarian assignment maximising
  summed IoU, then pairs with ``IoU <= match_iou`` are dropped (as HoVer-Net).
  ``DQ = TP / (TP + FP/2 + FN/2)``, ``SQ = ΣIoU / TP``, ``PQ = DQ · SQ``.

Tie rule (AJI and AJI+): pairs are scored exactly as in the reference code, ``I / (U + 1e-6)``, so on
an exact IoU tie the pair with the larger union wins; on a complete tie (same I and U) AJI takes the
lowest prediction id (``np.argmax``'s rule). AJI+ maximises ``Σ I / (U + 1e-6)`` over one-to-one
matchings, so between matchings with exactly equal total IoU the reference's choice is reproduced too.
PQ uses the exact IoU ``I / U`` (as the reference); among PQ matchings with exactly equal total IoU
(``match_iou < 0.5`` only) the one returned is scipy's, which may differ from the reference's dense
solve.

Conventions (the reference code crashes or divides 0/0 here):

* both maps without foreground → every metric is ``1.0``;
* exactly one map without foreground → every metric is ``0.0``;
* ``SQ`` with ``TP = 0`` (and some foreground) is ``0.0``; HoVer-Net's ``SQ = ΣIoU / (TP + 1e-6)``
  is computed here without the ``1e-6`` (a difference below ``1e-6``).

Implementation: one pass builds the sparse contingency table of ``(true id, pred id)`` pixel counts
(ids compacted with a look-up table or ``np.unique``, then one ``np.bincount`` on a combined key);
every metric is then computed from the table's non-zero entries. The Hungarian steps are solved per
connected component of the overlap graph (equivalent to the dense problem, since zero-overlap pairs
never count), so cost does not grow with the square of the number of instances.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "InstanceCounts",
    "Matching",
    "PQResult",
    "METRIC_NAMES",
    "COUNT_FIELDS",
    "AGGREGATION_MODES",
    "instance_counts",
    "scores_from_counts",
    "aggregate",
    "dice",
    "aji",
    "aji_plus",
    "pq",
    "match_instances",
]

#: Score keys returned by :func:`scores_from_counts` and :func:`aggregate`, in table order.
METRIC_NAMES = ("dice", "aji", "aji_plus", "dq", "sq", "pq")

#: Offset added to unions when scoring AJI/AJI+ pairs, exactly as HoVer-Net (drives the tie rule).
_AJI_EPS = 1.0e-6

#: Largest dense contingency table (cells) built with ``np.bincount``; beyond it ``np.unique`` is used.
_DENSE_TABLE_MAX = 1 << 20
#: ... or up to this many cells when there are at least a quarter as many overlapping pixels.
_DENSE_TABLE_CAP = 1 << 24


# ---------------------------------------------------------------------------------------------------
# Data classes
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InstanceCounts:
    """Raw counts of one image, from which every score (and every dataset aggregate) follows.

    Attributes:
        dice_intersection: foreground pixels in both maps, ``|T ∩ P|``.
        dice_total: ``|T| + |P|`` (foreground pixels of true plus of pred).
        aji_intersection: AJI numerator, Σ intersections of the AJI pairs.
        aji_union: AJI denominator, Σ unions of the AJI pairs + unpaired true and pred areas.
        ajip_intersection: AJI+ numerator (one-to-one pairs).
        ajip_union: AJI+ denominator.
        tp: PQ true positives (pairs with ``IoU > match_iou``).
        fp: PQ false positives (unmatched predictions).
        fn: PQ false negatives (unmatched true instances).
        iou_sum: Σ IoU over the PQ true positives.
        n_true: number of true instances.
        n_pred: number of predicted instances.
        match_iou: the PQ threshold these counts were made with.
    """

    dice_intersection: int
    dice_total: int
    aji_intersection: int
    aji_union: int
    ajip_intersection: int
    ajip_union: int
    tp: int
    fp: int
    fn: int
    iou_sum: float
    n_true: int
    n_pred: int
    match_iou: float = 0.5


#: Names of the :class:`InstanceCounts` fields, in declaration order.
COUNT_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceCounts))


@dataclasses.dataclass(frozen=True)
class PQResult:
    """Panoptic quality of one image.

    Attributes:
        dq: detection quality ``TP / (TP + FP/2 + FN/2)``.
        sq: segmentation quality ``ΣIoU / TP``.
        pq: ``DQ · SQ``.
        tp, fp, fn: matched pairs, unmatched predictions, unmatched true instances.
        iou_sum: Σ IoU over the matched pairs.
    """

    dq: float
    sq: float
    pq: float
    tp: int
    fp: int
    fn: int
    iou_sum: float


@dataclasses.dataclass(frozen=True)
class Matching:
    """Pairs chosen by one pairing rule (see :func:`match_instances`).

    Attributes:
        true_ids: ``int`` array ``(K,)`` of true instance ids (original values), ascending.
        pred_ids: ``int`` array ``(K,)`` of the paired prediction ids.
        intersection: ``int64`` array ``(K,)``, pixels shared by each pair.
        union: ``int64`` array ``(K,)``, pixels in the union of each pair.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    intersection: np.ndarray
    union: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        """``float64`` array ``(K,)``, exact IoU of each pair."""
        return self.intersection / np.maximum(self.union, 1)


# ---------------------------------------------------------------------------------------------------
# Contingency table
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Table:
    """Sparse contingency table of one (true, pred) pair of maps (compact indices 0..n-1)."""

    true_ids: np.ndarray  # original ids, ascending, (n_true,)
    pred_ids: np.ndarray  # (n_pred,)
    true_area: np.ndarray  # int64 (n_true,)
    pred_area: np.ndarray  # int64 (n_pred,)
    ti: np.ndarray  # intp (E,) compact true index of each overlapping pair, sorted by (ti, pj)
    pj: np.ndarray  # intp (E,)
    inter: np.ndarray  # int64 (E,) > 0
    union: np.ndarray  # int64 (E,)

    @property
    def n_true(self) -> int:
        return int(self.true_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)


def _check_map(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name} must be an integer instance map (0 = background), got dtype {arr.dtype}; "
            f"convert explicitly, e.g. {name}.astype(np.int32)"
        )
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger):
        lo = arr.min()
        if lo < 0:
            raise ValueError(f"{name} must not contain negative ids, found {int(lo)}")
    return arr


def _validate(true: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _check_map(true, "true")
    p = _check_map(pred, "pred")
    if t.shape != p.shape:
        raise ValueError(f"true and pred must have the same shape, got true {t.shape} and pred {p.shape}")
    return t.reshape(-1), p.reshape(-1)


def _index_ids(fg: np.ndarray) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Ids present among a map's foreground values, their areas, and a map id → compact index.

    Args:
        fg: flat array of the map's non-zero values (any non-negative integer dtype).

    Returns:
        ``(ids, areas, to_index)``: the distinct ids ascending ``(n,)``, their pixel counts ``(n,)``
        int64, and a function mapping an array of present ids to ``0..n-1``. Small ids use
        ``np.bincount`` and a look-up table; large ids (e.g. ``2**31 - 1``) are sorted with ``np.unique``.
    """
    if fg.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), lambda v: v.astype(np.intp)
    mx = int(fg.max())
    if mx <= 4 * fg.size + (1 << 16):
        counts = np.bincount(fg if fg.dtype.itemsize < 8 or fg.dtype.kind == "i" else fg.astype(np.intp))
        ids = np.flatnonzero(counts)
        areas = counts[ids].astype(np.int64, copy=False)
        if ids.size == mx:  # ids are exactly 1..mx
            return ids, areas, lambda v: v.astype(np.intp) - 1
        lut = np.zeros(mx + 1, dtype=np.intp)
        lut[ids] = np.arange(ids.size, dtype=np.intp)
        return ids, areas, lambda v: lut[v]
    ids, areas = np.unique(fg, return_counts=True)
    return ids, areas.astype(np.int64, copy=False), lambda v: np.searchsorted(ids, v).astype(np.intp)


def _table(true: Any, pred: Any) -> _Table:
    t, p = _validate(true, pred)
    t_fg = t != 0
    p_fg = p != 0
    t_ids, t_area, t_index = _index_ids(t[t_fg])
    p_ids, p_area, p_index = _index_ids(p[p_fg])
    n_t, n_p = t_ids.size, p_ids.size
    if n_t == 0 or n_p == 0:
        empty_i = np.zeros(0, dtype=np.intp)
        empty_c = np.zeros(0, dtype=np.int64)
        return _Table(t_ids, p_ids, t_area, p_area, empty_i, empty_i, empty_c, empty_c)
    both = t_fg & p_fg
    key = t_index(t[both]) * n_p
    key += p_index(p[both])
    cells = n_t * n_p
    if cells <= max(_DENSE_TABLE_MAX, min(4 * key.size, _DENSE_TABLE_CAP)):
        dense = np.bincount(key, minlength=cells)
        flat = np.flatnonzero(dense)
        inter = dense[flat].astype(np.int64, copy=False)
    else:
        flat, inter = np.unique(key, return_counts=True)
        inter = inter.astype(np.int64, copy=False)
    ti, pj = np.divmod(flat, n_p)
    ti = ti.astype(np.intp, copy=False)
    pj = pj.astype(np.intp, copy=False)
    union = t_area[ti] + p_area[pj] - inter
    return _Table(t_ids, p_ids, t_area, p_area, ti, pj, inter, union)


# ---------------------------------------------------------------------------------------------------
# Pairings (indices into the table's pair arrays)
# ---------------------------------------------------------------------------------------------------


def _aji_score(tab: _Table) -> np.ndarray:
    return tab.inter / (tab.union + _AJI_EPS)


def _pairs_aji(tab: _Table) -> np.ndarray:
    """Best pair of every true instance that overlaps a prediction (HoVer-Net ``get_fast_aji``)."""
    if tab.ti.size == 0:
        return np.zeros(0, dtype=np.intp)
    score = _aji_score(tab)
    # by true index, then score descending, then lowest pred index (np.argmax's first-max rule)
    order = np.lexsort((tab.pj, -score, tab.ti))
    ti_sorted = tab.ti[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = ti_sorted[1:] != ti_sorted[:-1]
    return order[first]


def _pairs_hungarian(tab: _Table, weight: np.ndarray) -> np.ndarray:
    """One-to-one pairing maximising Σ weight (weights > 0 on the overlapping pairs only).

    Solved independently on each connected component of the bipartite overlap graph, which gives the
    same optimum as the dense assignment (zero-weight pairs are dropped afterwards anyway). A component
    with a single true or a single predicted instance (a star: one pair, a split or a merge) takes its
    heaviest edge (ties: lowest pred id, then lowest true id); the others go to
    ``scipy.optimize.linear_sum_assignment``.
    """
    n_e = tab.ti.size
    if n_e == 0:
        return np.zeros(0, dtype=np.intp)
    n_t, n_p = tab.n_true, tab.n_pred
    graph = coo_matrix(
        (np.ones(n_e, dtype=np.int8), (tab.ti, n_t + tab.pj)), shape=(n_t + n_p, n_t + n_p)
    ).tocsr()
    n_comp, labels = connected_components(graph, directed=False)
    comp = labels[tab.ti]
    trues_in = np.bincount(labels[:n_t], minlength=n_comp)
    preds_in = np.bincount(labels[n_t:], minlength=n_comp)
    star = (trues_in[comp] == 1) | (preds_in[comp] == 1)
    chosen = []
    s_idx = np.flatnonzero(star)
    if s_idx.size:
        order = s_idx[np.lexsort((tab.ti[s_idx], tab.pj[s_idx], -weight[s_idx], comp[s_idx]))]
        c_sorted = comp[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = c_sorted[1:] != c_sorted[:-1]
        chosen.append(order[first])
    multi = np.flatnonzero(~star)
    if multi.size:
        local = _rank_within(labels, n_t)  # node index within its component, trues and preds apart
        multi = multi[np.argsort(comp[multi], kind="stable")]
        bounds = np.flatnonzero(np.diff(comp[multi])) + 1
        r_loc = local[tab.ti]
        c_loc = local[n_t + tab.pj]
        for group in np.split(multi, bounds):
            c = comp[group[0]]
            w = np.zeros((trues_in[c], preds_in[c]), dtype=np.float64)
            edge = np.full(w.shape, -1, dtype=np.intp)
            w[r_loc[group], c_loc[group]] = weight[group]
            edge[r_loc[group], c_loc[group]] = group
            r, cc = linear_sum_assignment(w, maximize=True)
            keep = w[r, cc] > 0
            chosen.append(edge[r[keep], cc[keep]])
    return np.sort(np.concatenate(chosen))


def _rank_within(labels: np.ndarray, n_t: int) -> np.ndarray:
    """Rank of every node among the nodes of the same side (true/pred) and component, by index."""
    local = np.empty(labels.size, dtype=np.intp)
    for lo, hi in ((0, n_t), (n_t, labels.size)):
        lab = labels[lo:hi]
        order = np.argsort(lab, kind="stable")
        sorted_lab = lab[order]
        starts = np.flatnonzero(np.r_[True, sorted_lab[1:] != sorted_lab[:-1]])
        run_start = np.repeat(starts, np.diff(np.r_[starts, sorted_lab.size]))
        local[lo + order] = np.arange(sorted_lab.size) - run_start
    return local


def _pairs_ajip(tab: _Table) -> np.ndarray:
    return _pairs_hungarian(tab, _aji_score(tab))


def _pairs_pq(tab: _Table, match_iou: float) -> np.ndarray:
    if tab.ti.size == 0:
        return np.zeros(0, dtype=np.intp)
    iou = tab.inter / tab.union
    if match_iou >= 0.5:
        return np.flatnonzero(iou > match_iou)
    sel = _pairs_hungarian(tab, iou)
    return sel[iou[sel] > match_iou]


def _check_match_iou(match_iou: float) -> float:
    m = float(match_iou)
    if not (0.0 <= m <= 1.0):
        raise ValueError(f"match_iou must be in [0, 1], got {match_iou!r}")
    return m


def _aji_parts(tab: _Table, sel: np.ndarray) -> tuple[int, int]:
    """(numerator, denominator) of AJI for the chosen pairs ``sel``."""
    inter = int(tab.inter[sel].sum())
    union = int(tab.union[sel].sum())
    t_paired = np.zeros(tab.n_true, dtype=bool)
    t_paired[tab.ti[sel]] = True
    p_paired = np.zeros(tab.n_pred, dtype=bool)
    p_paired[tab.pj[sel]] = True
    union += int(tab.true_area[~t_paired].sum()) + int(tab.pred_area[~p_paired].sum())
    return inter, union


def _pq_parts(tab: _Table, sel: np.ndarray) -> tuple[int, int, int, float]:
    tp = int(sel.size)
    iou_sum = float(np.sum(tab.inter[sel] / tab.union[sel])) if tp else 0.0
    return tp, tab.n_pred - tp, tab.n_true - tp, iou_sum


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def instance_counts(true: Any, pred: Any, match_iou: float = 0.5) -> InstanceCounts:
    """All raw counts of one image in one pass over its contingency table.

    Args:
        true: ground-truth instance map, integer array of any shape (0 = background, ids ≥ 0).
        pred: predicted instance map, integer array of the same shape.
        match_iou: PQ threshold; a pair matches when ``IoU > match_iou``. In ``[0, 1]``.

    Returns:
        :class:`InstanceCounts`; feed it to :func:`scores_from_counts` or :func:`aggregate`.

    Raises:
        ValueError: shapes differ, a map is not of integer (or bool) dtype, a map has negative ids,
            or ``match_iou`` is outside ``[0, 1]``.
    """
    m = _check_match_iou(match_iou)
    tab = _table(true, pred)
    aji_i, aji_u = _aji_parts(tab, _pairs_aji(tab))
    ajip_i, ajip_u = _aji_parts(tab, _pairs_ajip(tab))
    tp, fp, fn, iou_sum = _pq_parts(tab, _pairs_pq(tab, m))
    fg_t = int(tab.true_area.sum())
    fg_p = int(tab.pred_area.sum())
    return InstanceCounts(
        dice_intersection=int(tab.inter.sum()),
        dice_total=fg_t + fg_p,
        aji_intersection=aji_i,
        aji_union=aji_u,
        ajip_intersection=ajip_i,
        ajip_union=ajip_u,
        tp=tp,
        fp=fp,
        fn=fn,
        iou_sum=iou_sum,
        n_true=tab.n_true,
        n_pred=tab.n_pred,
        match_iou=m,
    )


def _ratio(num: float, den: float) -> float:
    """``num / den`` with ``0 / 0 = 1`` (both maps empty)."""
    return 1.0 if den == 0 else float(num) / float(den)


def _scores(
    dice_i: float, dice_t: float, aji_i: float, aji_u: float, ajip_i: float, ajip_u: float,
    tp: float, fp: float, fn: float, iou_sum: float, n_inst: float,
) -> dict[str, float]:
    dq_den = tp + 0.5 * fp + 0.5 * fn
    dq = _ratio(tp, dq_den)
    if tp > 0:
        sq = float(iou_sum) / float(tp)
    else:
        sq = 1.0 if n_inst == 0 else 0.0
    return {
        "dice": _ratio(2 * dice_i, dice_t),
        "aji": _ratio(aji_i, aji_u),
        "aji_plus": _ratio(ajip_i, ajip_u),
        "dq": dq,
        "sq": sq,
        "pq": dq * sq,
    }


def scores_from_counts(counts: InstanceCounts) -> dict[str, float]:
    """Scores of one image from its counts.

    Args:
        counts: output of :func:`instance_counts`.

    Returns:
        ``{"dice", "aji", "aji_plus", "dq", "sq", "pq"}`` → float in ``[0, 1]``, with the module's
        empty-map conventions (both empty → 1.0, one empty → 0.0).
    """
    c = counts
    return _scores(
        c.dice_intersection, c.dice_total, c.aji_intersection, c.aji_union,
        c.ajip_intersection, c.ajip_union, c.tp, c.fp, c.fn, c.iou_sum, c.n_true + c.n_pred,
    )


AGGREGATION_MODES = ("mean", "aggregated")


def aggregate(counts_list: Iterable[InstanceCounts], mode: str = "mean") -> dict[str, float]:
    """Dataset-level scores from per-image counts.

    Args:
        counts_list: one :class:`InstanceCounts` per image (all with the same ``match_iou``).
        mode: ``"mean"`` (default, HoVer-Net / "imw" convention): every metric is computed per image
            and averaged over images (an image with both maps empty scores 1.0 and is included).
            ``"aggregated"`` (BASS/tiseg "m" metrics): counts are summed over images first --
            Dice = 2ΣI / Σ(|T|+|P|), AJI = ΣI / ΣU (AJI+ alike), PQ from ΣTP, ΣFP, ΣFN, ΣIoU; images
            with both maps empty contribute nothing.

    Returns:
        ``{"dice", "aji", "aji_plus", "dq", "sq", "pq"}`` → float, plus ``"n_images"`` → int.
        In ``"mean"`` mode ``pq`` is the mean of per-image PQ (not mean DQ × mean SQ).

    Raises:
        ValueError: unknown ``mode``, no images, or mixed ``match_iou``.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"mode must be one of {AGGREGATION_MODES}, got {mode!r}")
    items: Sequence[InstanceCounts] = list(counts_list)
    if not items:
        raise ValueError("aggregate() needs at least one image")
    thresholds = {float(c.match_iou) for c in items}
    if len(thresholds) > 1:
        raise ValueError(f"counts were made with different match_iou values: {sorted(thresholds)}")
    out: dict[str, Any]
    if mode == "mean":
        per = [scores_from_counts(c) for c in items]
        out = {k: float(math.fsum(s[k] for s in per) / len(per)) for k in METRIC_NAMES}
    else:
        def tot(name: str) -> float:
            return math.fsum(getattr(c, name) for c in items)

        out = _scores(
            tot("dice_intersection"), tot("dice_total"), tot("aji_intersection"), tot("aji_union"),
            tot("ajip_intersection"), tot("ajip_union"), tot("tp"), tot("fp"), tot("fn"),
            tot("iou_sum"), tot("n_true") + tot("n_pred"),
        )
    out["n_images"] = len(items)
    return out


def dice(true: Any, pred: Any) -> float:
    """Binary foreground Dice ``2|T∩P| / (|T| + |P|)``; both maps empty → 1.0.

    Args:
        true, pred: integer instance maps of equal shape (only ``> 0`` matters).

    Returns:
        float in ``[0, 1]``.
    """
    t, p = _validate(true, pred)
    tf = t != 0
    pf = p != 0
    total = int(np.count_nonzero(tf)) + int(np.count_nonzero(pf))
    inter = int(np.count_nonzero(tf & pf))
    return _ratio(2 * inter, total)


def aji(true: Any, pred: Any) -> float:
    """Aggregated Jaccard Index (Kumar et al.), HoVer-Net ``get_fast_aji`` pairing.

    Args:
        true, pred: integer instance maps of equal shape.

    Returns:
        float in ``[0, 1]``; both maps empty → 1.0, exactly one empty → 0.0.
    """
    tab = _table(true, pred)
    i, u = _aji_parts(tab, _pairs_aji(tab))
    return _ratio(i, u)


def aji_plus(true: Any, pred: Any) -> float:
    """AJI+ : AJI with one-to-one (Hungarian, maximising pair score) pairing.

    Args:
        true, pred: integer instance maps of equal shape.

    Returns:
        float in ``[0, 1]``; both maps empty → 1.0, exactly one empty → 0.0.
    """
    tab = _table(true, pred)
    i, u = _aji_parts(tab, _pairs_ajip(tab))
    return _ratio(i, u)


def pq(true: Any, pred: Any, match_iou: float = 0.5) -> PQResult:
    """Panoptic quality with HoVer-Net ``get_fast_pq`` matching (``IoU > match_iou``).

    Args:
        true, pred: integer instance maps of equal shape.
        match_iou: threshold in ``[0, 1]``; ``>= 0.5`` → unique matches by construction, lower →
            Hungarian pairing on IoU first.

    Returns:
        :class:`PQResult` (dq, sq, pq, tp, fp, fn, iou_sum).
    """
    m = _check_match_iou(match_iou)
    tab = _table(true, pred)
    tp, fp, fn, iou_sum = _pq_parts(tab, _pairs_pq(tab, m))
    s = _scores(0, 0, 0, 0, 0, 0, tp, fp, fn, iou_sum, tab.n_true + tab.n_pred)
    return PQResult(dq=s["dq"], sq=s["sq"], pq=s["pq"], tp=tp, fp=fp, fn=fn, iou_sum=iou_sum)


def match_instances(true: Any, pred: Any, rule: str = "aji_plus", match_iou: float = 0.5) -> Matching:
    """The pairs a metric uses, for inspection and plotting.

    Args:
        true, pred: integer instance maps of equal shape.
        rule: ``"aji"`` (best prediction per true instance, predictions may repeat), ``"aji_plus"``
            (one-to-one, Hungarian) or ``"pq"`` (matches with ``IoU > match_iou``).
        match_iou: PQ threshold (only for ``rule="pq"``).

    Returns:
        :class:`Matching` with original ids, sorted by true id.
    """
    tab = _table(true, pred)
    if rule == "aji":
        sel = _pairs_aji(tab)
    elif rule == "aji_plus":
        sel = _pairs_ajip(tab)
    elif rule == "pq":
        sel = _pairs_pq(tab, _check_match_iou(match_iou))
    else:
        raise ValueError(f"rule must be 'aji', 'aji_plus' or 'pq', got {rule!r}")
    sel = sel[np.lexsort((tab.pj[sel], tab.ti[sel]))]
    return Matching(
        true_ids=tab.true_ids[tab.ti[sel]],
        pred_ids=tab.pred_ids[tab.pj[sel]],
        intersection=tab.inter[sel].copy(),
        union=tab.union[sel].copy(),
    )
