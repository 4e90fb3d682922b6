"""Paired significance tests, multiple-testing correction and bootstrap intervals (numpy/scipy only).

Typical use: per-image AJI of every method against a reference method, as in the paper's Table 1
markers (``†`` p < 0.001, ``‡`` p < 0.05)::

    rows = compare_to_reference({"bass": aji_bass, "sup": aji_sup, "nb": aji_nb}, reference="bass")
    for r in rows:
        print(r.method, r.result.mean_diff, r.p_adjusted, r.marker)

The suite's default (:func:`compare_images`) treats the *test image* as the unit: patches of one image
overlap and are not independent. It reports the mean ΔAJI, a 95 % paired bootstrap interval that
resamples whole images (with all their patches) and seeds, and the p-value of an image-level paired
sign-flip permutation test; :func:`direction_marker` turns (Δ, p) into direction-aware markers.
:func:`paired_test` on per-patch values is the paper's protocol (``--test wilcoxon-patch``).

Degenerate inputs give clear results with a ``note`` rather than exceptions: identical methods
(all differences zero) → ``p = 1.0``; fewer than 6 non-zero differences for Wilcoxon (its exact
two-sided p cannot go below 0.03) → a ``"n<6: too few pairs"`` note; pairs with a NaN are dropped and
counted in the note. Only misuse (different lengths, unknown test) raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as _sps

__all__ = [
    "PairedTestResult",
    "Comparison",
    "paired_test",
    "significance_marker",
    "adjust_pvalues",
    "bootstrap_ci",
    "compare_to_reference",
    "ImageComparison",
    "unit_image",
    "image_sums",
    "image_bootstrap",
    "image_permutation_test",
    "compare_images",
    "direction_marker",
    "MARKERS",
]

TESTS = ("wilcoxon", "ttest")
ALTERNATIVES = ("two-sided", "greater", "less")
ADJUST_METHODS = ("holm", "bh", None)


@dataclasses.dataclass(frozen=True)
class PairedTestResult:
    """Outcome of one paired test of ``a`` against ``b``.

    Attributes:
        statistic: Wilcoxon ``W`` (scipy's: the smaller rank sum for two-sided) or paired ``t``;
            ``nan`` when no test could be run.
        p_value: p-value in ``[0, 1]``; ``1.0`` when all differences are zero; ``nan`` when no test
            could be run (no pairs, or a t-test on a single pair).
        n: number of pairs used (after dropping pairs with a NaN).
        test: ``"wilcoxon"`` or ``"ttest"``.
        mean_diff: mean of ``a - b`` over the used pairs (``nan`` without pairs).
        note: ``"; "``-joined remarks (dropped NaNs, too few pairs, ...); ``""`` when none.
    """

    statistic: float
    p_value: float
    n: int
    test: str
    mean_diff: float
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One method against the reference (see :func:`compare_to_reference`).

    Attributes:
        method: the method's name.
        reference: the reference method's name.
        result: the paired test of ``method`` vs ``reference`` (``mean_diff`` = method − reference).
        p_adjusted: p-value after the multiple-testing correction over all compared methods.
        marker: :func:`significance_marker` of ``p_adjusted``.
    """

    method: str
    reference: str
    result: PairedTestResult
    p_adjusted: float
    marker: str


def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def paired_test(a: Sequence[float], b: Sequence[float], test: str = "wilcoxon",
                alternative: str = "two-sided") -> PairedTestResult:
    """Paired test of per-image scores ``a`` (a method) against ``b`` (the reference), same images.

    Args:
        a: per-image scores of one method, 1-D, length ``n``.
        b: per-image scores of the other method on the same images in the same order.
        test: ``"wilcoxon"`` (default; ``scipy.stats.wilcoxon``, signed-rank, zero differences dropped)
            or ``"ttest"`` (``scipy.stats.ttest_rel``).
        alternative: ``"two-sided"`` (default), ``"greater"`` (a > b) or ``"less"``.

    Returns:
        :class:`PairedTestResult`. Degenerate data gives a result with a note, never an exception.

    Raises:
        ValueError: ``a`` and ``b`` differ in length or are not 1-D, or ``test``/``alternative`` is
            unknown.
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    x = _as_1d(a, "a")
    y = _as_1d(b, "b")
    if x.size != y.size:
        raise ValueError(f"a and b must have the same length (paired by image), got {x.size} and {y.size}")
    notes: list[str] = []
    ok = ~(np.isnan(x) | np.isnan(y))
    n_nan = int(ok.size - np.count_nonzero(ok))
    if n_nan:
        notes.append(f"dropped {n_nan} pair(s) with NaN")
    x, y = x[ok], y[ok]
    n = int(x.size)
    nan = float("nan")
    if n == 0:
        notes.append("no pairs")
        return PairedTestResult(nan, nan, 0, test, nan, "; ".join(notes))
    d = x - y
    mean_diff = float(np.mean(d))
    if not np.any(d != 0):
        notes.append("identical: all differences are zero")
        return PairedTestResult(0.0, 1.0, n, test, 0.0, "; ".join(notes))

    if test == "wilcoxon":
        nz = int(np.count_nonzero(d))
        if nz < n:
            notes.append(f"{n - nz} zero difference(s) dropped (zero_method='wilcox')")
        if np.unique(np.abs(d[d != 0])).size < nz:
            notes.append("ties among |differences|: scipy's p is not the tie-free exact signed-rank p")
        if nz < 6:
            notes.append(
                f"n<6: too few pairs ({nz} non-zero difference(s); the exact two-sided p cannot go "
                f"below {min(1.0, 2.0 / 2**nz):.4g})"
            )
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = _sps.wilcoxon(x, y, alternative=alternative)
        return PairedTestResult(float(res.statistic), float(res.pvalue), n, test, mean_diff, "; ".join(notes))

    # paired t-test
    if n < 2:
        notes.append("n<2: too few pairs for a t-test")
        return PairedTestResult(nan, nan, n, test, mean_diff, "; ".join(notes))
    if n < 6:
        notes.append("n<6: too few pairs")
    if np.all(d == d[0]):
        notes.append("constant non-zero difference: zero variance, t is infinite")
        stat = math.copysign(math.inf, mean_diff)
        if alternative == "two-sided":
            p = 0.0
        elif alternative == "greater":
            p = 0.0 if mean_diff > 0 else 1.0
        else:
            p = 0.0 if mean_diff < 0 else 1.0
        return PairedTestResult(stat, p, n, test, mean_diff, "; ".join(notes))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = _sps.ttest_rel(x, y, alternative=alternative)
    return PairedTestResult(float(res.statistic), float(res.pvalue), n, test, mean_diff, "; ".join(notes))


def significance_marker(p: float) -> str:
    """Paper markers: ``"†"`` for ``p < 0.001``, ``"‡"`` for ``p < 0.05``, ``""`` otherwise (and NaN)."""
    if p is None or not (p == p):  # None or NaN
        return ""
    if p < 0.001:
        return "†"
    if p < 0.05:
        return "‡"
    return ""


def adjust_pvalues(pvals: Sequence[float], method: str | None = "holm") -> np.ndarray:
    """Multiple-testing correction of a family of p-values.

    Args:
        pvals: p-values in ``[0, 1]``, any order; NaNs are kept as NaN and are not counted in the
            family size ``m``.
        method: ``"holm"`` (Holm–Bonferroni step-down, controls FWER), ``"bh"`` (Benjamini–Hochberg
            step-up, controls FDR) or ``None`` (no correction, a copy).

    Returns:
        ``float64`` array, same length and order as ``pvals``: Holm ``p̃(i) = max_{j≤i} min(1,
        (m−j+1)·p(j))``; BH ``p̃(i) = min_{j≥i} min(1, m/j·p(j))`` over the ascending order.

    Raises:
        ValueError: unknown method, not 1-D, or a p-value outside ``[0, 1]``.
    """
    if method == "none":
        method = None
    if method not in ADJUST_METHODS:
        raise ValueError(f"method must be one of {ADJUST_METHODS}, got {method!r}")
    p = _as_1d(pvals, "pvals").copy()
    valid = ~np.isnan(p)
    pv = p[valid]
    if np.any((pv < 0) | (pv > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {pv[(pv < 0) | (pv > 1)].tolist()}")
    if method is None or pv.size == 0:
        return p
    m = pv.size
    order = np.argsort(pv, kind="stable")
    ps = pv[order]
    rank = np.arange(1, m + 1)
    if method == "holm":
        adj_sorted = np.maximum.accumulate(np.minimum(1.0, (m - rank + 1) * ps))
    else:
        adj_sorted = np.minimum.accumulate(np.minimum(1.0, m / rank * ps)[::-1])[::-1]
    adj = np.empty(m)
    adj[order] = adj_sorted
    p[valid] = adj
    return p


def bootstrap_ci(values: Sequence[float], n_boot: int = 10000, ci: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Args:
        values: 1-D per-image scores; NaNs are dropped.
        n_boot: number of bootstrap resamples (with replacement, same size as the data).
        ci: coverage in ``(0, 1)``, e.g. 0.95 → the 2.5 and 97.5 percentiles of the resampled means.
        seed: seed of ``numpy.random.default_rng``; same inputs and seed → same interval.

    Returns:
        ``(low, high)``; ``(nan, nan)`` without any finite value; ``(v, v)`` for a single value.

    Raises:
        ValueError: ``n_boot < 1``, ``ci`` outside ``(0, 1)``, or ``values`` not 1-D.
    """
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    if not (0.0 < ci < 1.0):
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    v = _as_1d(values, "values")
    v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_boot))
    chunk = max(1, (1 << 20) // n)
    for start in range(0, int(n_boot), chunk):
        stop = min(start + chunk, int(n_boot))
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = v[idx].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def compare_to_reference(values: Mapping[str, Sequence[float]], reference: str, test: str = "wilcoxon",
                         adjust: str | None = "holm", alternative: str = "two-sided") -> list[Comparison]:
    """Paired test of every method against ``reference``, with multiple-testing correction.

    Args:
        values: method name → per-image scores (e.g. AJI), all on the same images in the same order.
        reference: key of ``values`` every other method is compared with.
        test: ``"wilcoxon"`` or ``"ttest"`` (see :func:`paired_test`).
        adjust: correction over the family of compared methods (see :func:`adjust_pvalues`).
        alternative: passed to :func:`paired_test` (``a`` = method, ``b`` = reference).

    Returns:
        One :class:`Comparison` per method other than ``reference``, in ``values``' order.

    Raises:
        ValueError: ``reference`` missing, or lengths differ.
    """
    if reference not in values:
        raise ValueError(f"reference {reference!r} not among the methods {list(values)}")
    ref = values[reference]
    names = [k for k in values if k != reference]
    results = [paired_test(values[k], ref, test=test, alternative=alternative) for k in names]
    adj = adjust_pvalues([r.p_value for r in results], method=adjust)
    return [
        Comparison(k, reference, r, float(pa), significance_marker(float(pa)))
        for k, r, pa in zip(names, results, adj)
    ]


# ------------------------------------------------------------------------------ image-level inference
#: marker -> meaning; "worse"/"better" are the compared method relative to the reference.
MARKERS = {
    "†": "reference significantly better, p < 0.001",
    "‡": "reference significantly better, p < 0.05",
    "⇑": "significantly better than the reference, p < 0.001",
    "↑": "significantly better than the reference, p < 0.05",
}
#: exact enumeration of all sign flips up to this many images (2**16 = 65,536 flips).
EXACT_PERMUTATION_MAX = 16


@dataclasses.dataclass(frozen=True)
class ImageComparison:
    """A method against the reference with the test image as the unit.

    Attributes:
        delta: mean per-unit AJI difference (method − reference), averaged over seeds: the difference
            of the two table scores under the ``mean`` aggregation.
        ci_low, ci_high: percentile interval of ``delta`` from the paired image (and seed) bootstrap.
        p_value: two-sided p of the test named by ``test`` (before any correction).
        n_images: test images (resampling units); n_units: patches (or images) per seed.
        n_seeds: seeds paired between the two methods.
        test: ``"permutation"`` (image-level sign flips) or ``"wilcoxon-patch"`` (the paper's).
        note: remarks (unpaired seeds, too few images, ...).
    """

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_images: int
    n_units: int
    n_seeds: int
    test: str
    note: str = ""


def unit_image(unit_id: str) -> str:
    """The test image a unit belongs to: ``"img@128_256"`` → ``"img"``; a whole image is its own."""
    name, sep, _ = str(unit_id).rpartition("@")
    return name if sep else str(unit_id)


def image_sums(diff: Any, images: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-image sums of a per-unit difference matrix.

    Args:
        diff: ``(n_seeds, n_units)`` differences (method − reference), one row per paired seed.
        images: the image of each unit (length ``n_units``).

    Returns:
        ``(S, C, names)``: ``S[s, i]`` = Σ of seed ``s``'s differences over image ``i``'s units,
        ``C[i]`` = number of units of image ``i``, ``names`` in first-seen order.
    """
    d = np.atleast_2d(np.asarray(diff, dtype=np.float64))
    if d.shape[1] != len(images):
        raise ValueError(f"diff has {d.shape[1]} units but {len(images)} image names were given")
    names = list(dict.fromkeys(images))
    index = {n: i for i, n in enumerate(names)}
    member = np.zeros((len(images), len(names)))
    member[np.arange(len(images)), [index[n] for n in images]] = 1.0
    return d @ member, member.sum(axis=0), names


def image_bootstrap(S: Any, C: Any, n_boot: int = 10000, ci: float = 0.95,
                    seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap interval of Δ = mean over seeds of (Σ_i S[s,i] / Σ_i C[i]).

    Each resample draws ``n_images`` images with replacement (an image brings all its units) and,
    independently, ``n_seeds`` seeds with replacement. Same inputs and ``seed`` → same interval.
    """
    S = np.atleast_2d(np.asarray(S, dtype=np.float64))
    C = np.asarray(C, dtype=np.float64)
    if not (0.0 < ci < 1.0) or int(n_boot) < 1:
        raise ValueError(f"need 0 < ci < 1 and n_boot >= 1, got ci={ci!r}, n_boot={n_boot!r}")
    n_seeds, n_img = S.shape
    if n_img == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=int(n_boot)).astype(np.float64)
    v = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=int(n_boot)).astype(np.float64)
    per_seed = (w @ S.T) / (w @ C)[:, None]
    deltas = (v * per_seed).sum(axis=1) / n_seeds
    alpha = (1.0 - ci) / 2.0
    low, high = np.percentile(deltas, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def image_permutation_test(S: Any, C: Any, n_perm: int = 20000, seed: int = 0) -> float:
    """Two-sided paired sign-flip permutation p of Σ_i T_i / Σ_i C_i, T_i = seed mean of S[:, i].

    Under the null the sign of each image's difference is exchangeable. Exact over all ``2**n``
    flips up to :data:`EXACT_PERMUTATION_MAX` images (so with ``n`` images p ≥ ``2 / 2**n``: 1/32
    for 6 images), else ``n_perm`` seeded random flips with p = (1 + #extreme) / (1 + n_perm).
    """
    S = np.atleast_2d(np.asarray(S, dtype=np.float64))
    t = S.mean(axis=0)
    n = t.size
    if n == 0:
        return float("nan")
    obs = abs(t.sum())
    if obs == 0.0:
        return 1.0
    tol = 1e-12 * max(1.0, float(np.abs(t).sum()))
    if n <= EXACT_PERMUTATION_MAX:
        codes = np.arange(2**n, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ t) >= obs - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(int(n_perm), n))
    return float((1 + np.sum(np.abs(signs @ t) >= obs - tol)) / (1 + int(n_perm)))


def compare_images(a: Any, b: Any, units: Sequence[str], test: str = "permutation", *,
                   n_boot: int = 10000, seed: int = 0) -> ImageComparison:
    """Method ``a`` against reference ``b``, the test image as the unit.

    Args:
        a, b: ``(n_seeds, n_units)`` per-unit AJI of the method and of the reference, rows paired by
            seed, columns by unit (patch ids ``image@r_c`` or whole-image names).
        units: the unit ids (the image of a unit is :func:`unit_image`).
        test: ``"permutation"`` (default) or ``"wilcoxon-patch"``: the paper's signed-rank test on
            per-unit values averaged over seeds (treats overlapping patches as independent).
        n_boot, seed: bootstrap resamples and the fixed seed of bootstrap and permutations.
    """
    if test not in ("permutation", "wilcoxon-patch"):
        raise ValueError(f"test must be 'permutation' or 'wilcoxon-patch', got {test!r}")
    x = np.atleast_2d(np.asarray(a, dtype=np.float64))
    y = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape or x.shape[1] != len(units):
        raise ValueError(f"a {x.shape}, b {y.shape} and {len(units)} unit ids do not pair up")
    keep = ~np.isnan(x - y).any(axis=0)
    x, y, kept = x[:, keep], y[:, keep], [u for u, k in zip(units, keep) if k]
    notes = [f"dropped {int((~keep).sum())} unit(s) with NaN"] if not keep.all() else []
    S, C, names = image_sums(x - y, [unit_image(u) for u in kept])
    n_img = len(names)
    if n_img < 5:
        notes.append(f"only {n_img} test image(s): the test has almost no power")
    delta = float(np.mean(S.sum(axis=1) / C.sum())) if n_img else float("nan")
    low, high = image_bootstrap(S, C, n_boot=n_boot, seed=seed)
    if test == "permutation":
        p = image_permutation_test(S, C, seed=seed)
    else:
        p = paired_test(x.mean(axis=0), y.mean(axis=0), test="wilcoxon").p_value
    return ImageComparison(delta, low, high, float(p), n_img, len(kept), x.shape[0], test, "; ".join(notes))


def direction_marker(delta: float, p: float) -> str:
    """Direction-aware markers (see :data:`MARKERS`): † / ‡ when the method is significantly *worse*
    than the reference (the paper's meaning), ⇑ / ↑ when it is significantly *better*."""
    if p is None or delta is None or math.isnan(p) or math.isnan(delta) or delta == 0 or p >= 0.05:
        return ""
    if delta < 0:
        return "†" if p < 0.001 else "‡"
    return "⇑" if p < 0.001 else "↑"
