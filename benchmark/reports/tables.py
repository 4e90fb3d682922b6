"""Paper-style Markdown tables (Table 1, Table 2, Tables 3/4) from collected results.

Formatting rules (checked by golden-file tests):
- numbers are percentages with two decimals;
- within each ratio block, the best value of a column is **bold** and the second best is underlined
  with ``<ins>…</ins>`` (GitHub renders it); ties share the mark;
- each non-reference method's AJI carries † (p < 0.001) or ‡ (p < 0.05) from the paired test on
  per-image AJI against the reference method on the same dataset and ratio;
- a missing cell is ``–``, a failed one ``failed``, an unfinished one ``running``;
- rows of methods that use extra supervision on unlabeled patches say so (``+points``, ``+boxes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmark.reports.collect import METRICS, RATIO_ORDER, Result, method_sort_key
from benchmark.reports.methods_info import ablation_columns, ablation_rows

MISSING = "–"
METRIC_NAMES = {"dice": "Dice", "aji": "AJI", "pq": "PQ"}


@dataclasses.dataclass(frozen=True)
class TableOptions:
    """How a table was computed (goes into its caption).

    Attributes:
        protocol: ``"patch"`` or ``"image"``.
        aggregation: ``"mean"`` or ``"aggregated"``.
        test: ``"wilcoxon"`` or ``"ttest"``.
        correction: ``None``, ``"holm"`` or ``"bh"``.
        reference: reference method of the paired tests (``None``: ``bass`` if present, else the best
            method by mean AJI in each block).
    """

    protocol: str = "patch"
    aggregation: str = "mean"
    test: str = "wilcoxon"
    correction: str | None = None
    reference: str | None = None


def _fmt(v: float) -> str:
    return f"{100 * v:.2f}"


def rank_marks(values: dict[Any, float | None]) -> dict[Any, str]:
    """``"best"`` / ``"second"`` / ``""`` per key; ties share a rank; ``None`` values are unranked."""
    rounded = {k: round(100 * v, 2) for k, v in values.items() if v is not None and np.isfinite(v)}
    distinct = sorted(set(rounded.values()), reverse=True)
    marks = {k: "" for k in values}
    for k, v in rounded.items():
        if distinct and v == distinct[0]:
            marks[k] = "best"
        elif len(distinct) > 1 and v == distinct[1]:
            marks[k] = "second"
    return marks


def _decorate(text: str, mark: str) -> str:
    if mark == "best":
        return f"**{text}**"
    if mark == "second":
        return f"<ins>{text}</ins>"
    return text


def choose_reference(block: Sequence[Result], dataset: str, preferred: str | None) -> str | None:
    """The reference method of a block: ``preferred`` if done there, else ``bass``, else best AJI."""
    done = [r for r in block if r.dataset == dataset and r.status == "done" and not r.variant]
    names = {r.method for r in done}
    for cand in (preferred, "bass"):
        if cand and cand in names:
            return cand
    if not done:
        return None
    return max(done, key=lambda r: r.scores["aji"]).method


def significance(
    block: Sequence[Result], datasets: Sequence[str], opts: TableOptions
) -> dict[tuple[str, str, str], tuple[float, str]]:
    """``(method, variant, dataset) → (p-value, marker)`` for every non-reference done result."""
    from benchmark.stats import adjust_pvalues, paired_test, significance_marker

    keys, pvals = [], []
    for ds in datasets:
        ref_name = choose_reference(block, ds, opts.reference)
        if ref_name is None:
            continue
        ref = next(r for r in block if r.dataset == ds and r.method == ref_name and not r.variant)
        for r in block:
            if r.dataset != ds or r.status != "done" or (r.method == ref_name and not r.variant):
                continue
            a, b = r.per_image.align(ref.per_image, join="inner")
            res = paired_test(a.to_numpy(), b.to_numpy(), test=opts.test)
            keys.append((r.method, r.variant, ds))
            pvals.append(res.p_value)
    if opts.correction and pvals:
        pvals = list(adjust_pvalues(pvals, method=opts.correction))
    return {k: (p, significance_marker(p)) for k, p in zip(keys, pvals)}


def table1_pvalues(
    results: Sequence[Result], opts: TableOptions = TableOptions()
) -> dict[tuple[str, str, str, str], tuple[str, float]]:
    """The paired tests behind Table 1's markers, for the CSV/JSON exports.

    Returns ``(method, variant, dataset, ratio) → (reference method, p-value)`` for every done
    default-option result that is not its block's reference (p-values corrected as ``opts.correction``).
    """
    results = [r for r in results if not r.variant]
    datasets = _datasets_of(results)
    out = {}
    for ratio in sorted({r.ratio for r in results}):
        block = [r for r in results if r.ratio == ratio]
        for (method, variant, ds), (p, _) in significance(block, datasets, opts).items():
            out[(method, variant, ds, ratio)] = (choose_reference(block, ds, opts.reference), float(p))
    return out


def _cell_text(r: Result | None, metric: str, mark: str, marker: str = "") -> str:
    if r is None:
        return MISSING
    if r.status == "failed":
        return "failed"
    if r.status != "done":
        return "running"
    return _decorate(_fmt(r.scores[metric]), mark) + marker


def _datasets_of(results: Sequence[Result]) -> list[str]:
    order = ("cryonuseg", "digestpath", "monuseg")
    names = sorted({r.dataset for r in results}, key=lambda d: (order.index(d) if d in order else 9, d))
    return names


def table1(results: Sequence[Result], opts: TableOptions = TableOptions(), pvalues=None) -> str:
    """Table 1: rows = methods grouped by ratio, columns = Dice / AJI / PQ per dataset.

    Only default-option results enter Table 1 (sweeps go to their own tables/figures). ``pvalues``:
    :func:`table1_pvalues` of the same results and options when the caller already has them
    (``build_report`` exports them too), so the paired tests run once.
    """
    results = [r for r in results if not r.variant]
    if not results:
        return "_No results in the store._\n"
    from benchmark.stats import significance_marker

    if pvalues is None:
        pvalues = table1_pvalues(results, opts)
    datasets = _datasets_of(results)
    ratios = sorted({r.ratio for r in results}, key=lambda x: RATIO_ORDER.index(x) if x in RATIO_ORDER else 9)
    header = ["Ratio", "Method"] + [f"{ds} {METRIC_NAMES[m]}" for ds in datasets for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    references: dict[tuple[str, str], str | None] = {}
    for ratio in ratios:
        block = [r for r in results if r.ratio == ratio]
        for ds in datasets:
            references[(ratio, ds)] = choose_reference(block, ds, opts.reference)
        marks = {}
        for ds in datasets:
            for m in METRICS:
                vals = {r.method: (r.scores[m] if r.status == "done" else None) for r in block if r.dataset == ds}
                marks[(ds, m)] = rank_marks(vals)
        methods = sorted({r.method for r in block}, key=method_sort_key)
        for i, method in enumerate(methods):
            cls_needs = next((r.needs for r in block if r.method == method), [])
            label = method + "".join(f" +{n}" for n in cls_needs)
            row = [ratio if i == 0 else "", label]
            for ds in datasets:
                r = next((x for x in block if x.method == method and x.dataset == ds), None)
                for m in METRICS:
                    marker = ""
                    if m == "aji" and r is not None:
                        p = pvalues.get((method, "", ds, ratio), (None, None))[1]
                        marker = significance_marker(p) if p is not None else ""
                    row.append(_cell_text(r, m, marks[(ds, m)].get(method, ""), marker))
            lines.append("| " + " | ".join(row) + " |")
    caption = table_caption(results, opts, references)
    return caption + "\n\n" + "\n".join(lines) + "\n"


def table_caption(results: Sequence[Result], opts: TableOptions, references=None) -> str:
    seeds = sorted({s for r in results for s in r.seeds})
    profiles = sorted({r.profile for r in results if r.profile})
    test = {"wilcoxon": "Wilcoxon signed-rank", "ttest": "paired t-test"}[opts.test]
    refs = sorted({v for v in (references or {}).values() if v})
    corr = {None: "no correction", "holm": "Holm-corrected", "bh": "Benjamini–Hochberg-corrected"}[opts.correction]
    protocol = {
        "patch": "per 256×256 test patch (overlap 128, the paper's protocol)",
        "image": "per whole test image (patch predictions stitched)",
    }[opts.protocol]
    agg = {
        "mean": "mean over test units",
        "aggregated": "aggregated over the test set (Σ intersections / Σ unions; Σ TP/FP/FN/IoU)",
    }[opts.aggregation]
    return (
        f"**Table 1.** Dice, AJI and PQ (%) evaluated {protocol}, {agg}; mean over seed(s) "
        f"{', '.join(map(str, seeds)) or '–'}; profile {', '.join(profiles) or '–'}. "
        f"Best per ratio in **bold**, second <ins>underlined</ins>. † p < 0.001, ‡ p < 0.05: {test} "
        f"on per-unit AJI against {', '.join(refs) or 'the reference'} ({corr}). "
        f"`+points`/`+boxes`: extra weak labels on the unlabeled patches. – not run."
    )


def table2(results: Sequence[Result], opts: TableOptions = TableOptions()) -> str:
    """Table 2: BASS head ablations (NMH / LRD / CRC check marks), one block per ratio."""
    ablations = ablation_rows("bass")
    columns = ablation_columns(ablations)
    names = [a[0] for a in ablations]
    results = [r for r in results if r.method in names and not r.variant]
    if not results:
        return f"_No BASS ablation results in the store (run --methods {','.join(names)})._\n"
    datasets = _datasets_of(results)
    header = ["Ratio", *columns] + [f"{ds} {METRIC_NAMES[m]}" for ds in datasets for m in METRICS]
    n_left = 1 + len(columns)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * n_left + ["---:"] * (len(header) - n_left)) + "|"]
    ratios = sorted({r.ratio for r in results}, key=lambda x: RATIO_ORDER.index(x) if x in RATIO_ORDER else 9)
    for ratio in ratios:
        block = [r for r in results if r.ratio == ratio]
        marks = {}
        for ds in datasets:
            for m in METRICS:
                vals = {r.method: (r.scores[m] if r.status == "done" else None) for r in block if r.dataset == ds}
                marks[(ds, m)] = rank_marks(vals)
        for i, (name, parts) in enumerate(ablations):
            row = [ratio if i == 0 else ""] + ["✓" if c in parts else "" for c in columns]
            for ds in datasets:
                r = next((x for x in block if x.method == name and x.dataset == ds), None)
                for m in METRICS:
                    row.append(_cell_text(r, m, marks[(ds, m)].get(name, "")))
            lines.append("| " + " | ".join(row) + " |")
    caption = (
        "**Table 2.** BASS segmentation-head ablations: naive mask head (NMH), low-resolution denoising "
        "(LRD), cross-RoI contrastive learning (CRC). " + table_caption(results, opts).split(". ", 1)[1]
    )
    return caption + "\n\n" + "\n".join(lines) + "\n"


def sweep_table(results: Sequence[Result], option: str, title: str) -> str | None:
    """Tables 3/4 (and the α / d sweeps): one row per value of ``option`` of a method family."""
    rows = [r for r in results if option in r.options and r.status == "done"]
    if not rows:
        return None
    datasets = _datasets_of(rows)
    header = ["Method", "Ratio", option] + [f"{ds} {METRIC_NAMES[m]}" for ds in datasets for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    keys = sorted({(r.method, r.ratio, str(r.options[option])) for r in rows},
                  key=lambda k: (method_sort_key(k[0]), k[1], _num(k[2])))
    for method, ratio, value in keys:
        row = [method, ratio, value]
        for ds in datasets:
            r = next((x for x in rows if (x.method, x.ratio, str(x.options[option]), x.dataset)
                      == (method, ratio, value, ds)), None)
            for m in METRICS:
                row.append(_fmt(r.scores[m]) if r else MISSING)
        lines.append("| " + " | ".join(row) + " |")
    return f"**{title}**\n\n" + "\n".join(lines) + "\n"


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")
