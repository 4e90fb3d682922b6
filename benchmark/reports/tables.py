"""Paper-style tables (Table 1, Table 2, the sweep tables) and the comparisons behind their markers.

Formatting rules (checked by golden-file tests):
- numbers are percentages with two decimals; with two or more seeds a cell is ``mean ± std`` over
  seeds (sample std), with one seed the mean only;
- within each ratio block, the best mean of a column is **bold** and the second best is underlined
  with ``<ins>…</ins>`` (GitHub renders it); ties share the mark;
- each non-reference method's AJI carries a direction-aware marker (:func:`benchmark.stats.direction_marker`)
  from the image-level comparison with the block's reference on the same test images;
- a missing cell is ``–``, a failed one ``failed``, an unfinished one ``k of n seeds`` (``k`` of the
  ``n`` seeds found in the store have finished: the report cannot tell a running cell from a stopped one);
- rows of methods that use extra supervision on unlabeled patches say so (``+points``, ``+boxes``);
  rows whose method records an ``approximation`` carry its short tag and a footnote letter.

The same :class:`Grid` renders to Markdown here and to LaTeX in :mod:`benchmark.reports.latex`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmark.reports.collect import METRICS, RATIO_ORDER, Result, method_sort_key
from benchmark.reports.methods_info import ablation_columns, ablation_rows

MISSING = "–"
METRIC_NAMES = {"dice": "Dice", "aji": "AJI", "pq": "PQ"}
TESTS = ("permutation", "wilcoxon-patch")
CORRECTIONS = (None, "holm", "bh")
FEW_IMAGES = 5


@dataclasses.dataclass(frozen=True)
class TableOptions:
    """How the tables are computed (goes into their captions).

    Attributes:
        protocol: ``"patch"`` or ``"image"``; aggregation: ``"mean"`` or ``"aggregated"``.
        test: ``"permutation"`` (default: image-level paired sign-flip test) or ``"wilcoxon-patch"``
            (the paper's per-patch signed-rank test; patches treated as independent).
        correction: ``"holm"`` (default), ``"bh"`` or ``None``, over the comparisons of a block
            (one dataset and ratio).
        reference: reference method (``None``: ``bass`` if present, else the best mean AJI).
        select_on: ``"val"`` (default) or ``"test"``: the split that selects a sweep's value.
        n_boot, boot_seed: bootstrap resamples and the fixed seed of the resampling.
    """

    protocol: str = "patch"
    aggregation: str = "mean"
    test: str = "permutation"
    correction: str | None = "holm"
    reference: str | None = None
    select_on: str = "val"
    n_boot: int = 10000
    boot_seed: int = 0

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"--test {self.test!r}: use one of {', '.join(TESTS)}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"--correction {self.correction!r}: use none, holm or bh")
        if self.select_on not in ("val", "test"):
            raise ValueError(f"--select-on {self.select_on!r}: use val or test")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One table cell: ``text`` plus its rank ``mark`` (best/second) and significance ``marker``."""

    text: str
    mark: str = ""
    marker: str = ""
    footnote: str = ""


@dataclasses.dataclass
class Grid:
    """A rendered-agnostic table: header, rows of cells, caption (Markdown) and footnotes."""

    header: list[str]
    rows: list[list[Cell]]
    n_left: int
    caption: str
    footnotes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    """One method against its block's reference (see :func:`comparisons`)."""

    method: str
    variant: str
    dataset: str
    ratio: str
    reference: str
    result: Any  # benchmark.stats.ImageComparison
    p_corrected: float
    marker: str
    setting: tuple[str, str] = ("", "paper")


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


def _paired(r: Result, ref: Result) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Per-unit AJI of ``r`` and ``ref`` on common units, rows paired by common seed."""
    a, b = r.per_unit.align(ref.per_unit, join="inner", axis=0)
    common = [s for s in a.columns if s in set(b.columns)]
    if common:
        return a[common].to_numpy().T, b[common].to_numpy().T, [str(u) for u in a.index], ""
    note = "no common seed: seed means compared"
    return (a.mean(axis=1).to_numpy()[None], b.mean(axis=1).to_numpy()[None], [str(u) for u in a.index], note)


def comparisons(results: Sequence[Result], opts: TableOptions = TableOptions()) -> list[ComparisonRow]:
    """Every done default-option result against its (dataset, ratio) block's reference.

    The family of the multiple-testing correction is one block: the methods compared with one
    reference on one test set.
    """
    from benchmark.stats import adjust_pvalues, compare_images, direction_marker

    results = [r for r in results if not r.variant]
    out: list[ComparisonRow] = []
    for ratio in sorted({r.ratio for r in results}, key=_ratio_sort):
        block = [r for r in results if r.ratio == ratio]
        for ds in _datasets_of(block):
            ref_name = choose_reference(block, ds, opts.reference)
            if ref_name is None:
                continue
            ref = next(r for r in block if r.dataset == ds and r.method == ref_name)
            rows = []
            for r in block:
                if r.dataset != ds or r.status != "done" or r is ref:
                    continue
                a, b, units, note = _paired(r, ref)
                res = compare_images(a, b, units, test=opts.test, n_boot=opts.n_boot, seed=opts.boot_seed)
                if note:
                    res = dataclasses.replace(res, note="; ".join(x for x in (res.note, note) if x))
                rows.append((r, res))
            adj = adjust_pvalues([res.p_value for _, res in rows], method=opts.correction) if rows else []
            for (r, res), p in zip(rows, adj):
                out.append(ComparisonRow(r.method, r.variant, ds, ratio, ref_name, res, float(p),
                                         direction_marker(res.delta, float(p)), r.setting))
    return out


def _ratio_sort(x: str) -> int:
    return RATIO_ORDER.index(x) if x in RATIO_ORDER else 9


def _value_text(r: Result, metric: str) -> str:
    vals = r.per_seed[metric]
    if len(vals) > 1:
        return f"{_fmt(r.scores[metric])} ± {_fmt(float(np.std(vals, ddof=1)))}"
    return _fmt(r.scores[metric])


def _cell(r: Result | None, metric: str, mark: str, marker: str = "") -> Cell:
    if r is None:
        return Cell(MISSING)
    if r.status == "failed":
        return Cell("failed")
    if r.status != "done":
        return Cell(f"{len(r.seeds_done)} of {len(r.seeds)} seeds")
    return Cell(_value_text(r, metric), mark, marker)


def _datasets_of(results: Sequence[Result]) -> list[str]:
    order = ("cryonuseg", "digestpath", "monuseg")
    return sorted({r.dataset for r in results}, key=lambda d: (order.index(d) if d in order else 9, d))


def short_tag(r: Result) -> str:
    """The short form of a method's ``approximation``: its own tag, else its first clause."""
    if r.approximation_tag:
        return r.approximation_tag
    text = re.split(r"[:;,(]", r.approximation or "", maxsplit=1)[0].strip()
    # 48: "torchvision Mask R-CNN instead of mmdetection" (every Mask R-CNN row's first clause) fits whole
    return text if len(text) <= 48 else text[:47].rstrip() + "…"


def _method_cells(block: Sequence[Result], methods: Sequence[str], notes: dict[str, str]) -> dict[str, Cell]:
    """Row label cells: method, ``+needs`` and the approximation tag with a footnote letter."""
    out = {}
    for method in methods:
        r = next(x for x in block if x.method == method)
        label = method + "".join(f" +{n}" for n in r.needs)
        letter = ""
        if r.approximation:
            key = f"{method}: {r.approximation}"
            notes.setdefault(key, "abcdefghijklmnopqrstuvwxyz"[len(notes) % 26])
            letter = notes[key]
            label += f" [{short_tag(r)}]"
        out[method] = Cell(label, footnote=letter)
    return out


def _block_marks(block: Sequence[Result], datasets: Sequence[str], names: Any) -> dict:
    marks = {}
    for ds in datasets:
        for m in METRICS:
            vals = {r.method: (r.scores[m] if r.status == "done" else None) for r in block
                    if r.dataset == ds and r.method in names}
            marks[(ds, m)] = rank_marks(vals)
    return marks


def table1_grid(results: Sequence[Result], opts: TableOptions, comps: Sequence[ComparisonRow]) -> Grid:
    """The cells of Table 1 (default-option results only)."""
    results = [r for r in results if not r.variant]
    datasets = _datasets_of(results)
    markers = {(c.method, c.dataset, c.ratio): c.marker for c in comps}
    header = ["Ratio", "Method"] + [f"{ds} {METRIC_NAMES[m]}" for ds in datasets for m in METRICS]
    rows: list[list[Cell]] = []
    notes: dict[str, str] = {}
    for ratio in sorted({r.ratio for r in results}, key=_ratio_sort):
        block = [r for r in results if r.ratio == ratio]
        methods = sorted({r.method for r in block}, key=method_sort_key)
        marks = _block_marks(block, datasets, set(methods))
        labels = _method_cells(block, methods, notes)
        for i, method in enumerate(methods):
            row = [Cell(ratio if i == 0 else ""), labels[method]]
            for ds in datasets:
                r = next((x for x in block if x.method == method and x.dataset == ds), None)
                for m in METRICS:
                    marker = markers.get((method, ds, ratio), "") if m == "aji" else ""
                    row.append(_cell(r, m, marks[(ds, m)].get(method, ""), marker))
            rows.append(row)
    footnotes = [f"{letter}: {text}" for text, letter in notes.items()]
    return Grid(header, rows, 2, table_caption(results, opts, comps), footnotes)


def render_markdown(grid: Grid) -> str:
    """Markdown (GitHub) rendering of a :class:`Grid`: caption, table, footnotes."""
    lines = ["| " + " | ".join(grid.header) + " |",
             "|" + "|".join(["---"] * grid.n_left + ["---:"] * (len(grid.header) - grid.n_left)) + "|"]
    for row in grid.rows:
        texts = [_decorate(c.text, c.mark) + c.marker + (f"<sup>{c.footnote}</sup>" if c.footnote else "")
                 for c in row]
        lines.append("| " + " | ".join(texts) + " |")
    notes = "".join(f"\n<sup>{n.split(':', 1)[0]}</sup>{n.split(':', 1)[1]}  " for n in grid.footnotes)
    return grid.caption + "\n\n" + "\n".join(lines) + "\n" + (notes.rstrip() + "\n" if notes else "")


def table1(results: Sequence[Result], opts: TableOptions = TableOptions(), comps=None) -> str:
    """Table 1 in Markdown: rows = methods grouped by ratio, columns = Dice / AJI / PQ per dataset.

    Only default-option results enter Table 1 (sweeps go to their own tables). ``comps``:
    :func:`comparisons` of the same results and options when the caller already has them.
    """
    if not [r for r in results if not r.variant]:
        return "_No results in the store._\n"
    if comps is None:
        comps = comparisons(results, opts)
    return render_markdown(table1_grid(results, opts, comps))


TEST_TEXT = {
    "permutation": "paired sign-flip permutation test over test images (unit: the test image, its patches "
                   "kept together; seeds averaged per image)",
    "wilcoxon-patch": "the paper's protocol: Wilcoxon signed-rank test on per-unit AJI averaged over seeds "
                      "(overlapping patches of one image treated as independent, which overstates significance)",
}
CORRECTION_TEXT = {None: "no correction", "holm": "Holm-corrected",
                   "bh": "Benjamini–Hochberg-corrected"}


def _setting_text(results: Sequence[Result]) -> str:
    seeds = sorted({s for r in results for s in r.seeds})
    counts = sorted({len(r.seeds) for r in results if r.status == "done"})
    profiles = ", ".join(sorted({r.profile for r in results if r.profile})) or "–"
    recipes = ", ".join(sorted({r.split_recipe for r in results})) or "paper"
    listed = ", ".join(map(str, seeds)) or "–"
    if counts and counts[0] > 1:
        seed_text = f"mean ± std (sample) over {_span(counts)} seeds ({listed})"
    elif counts and counts[-1] > 1:
        seed_text = (f"mean ± std (sample) over {_span(counts[1:])} seeds where a row has several "
                     f"(seeds {listed}); rows with one seed show the mean only")
    elif counts:
        seed_text = f"one seed ({listed}): mean only, no seed spread"
    else:  # nothing finished yet: say so rather than count the seeds of unfinished cells as one
        seed_text = f"no finished row yet (seeds {listed} started)"
    return f"profile {profiles}; split recipe {recipes}; {seed_text}"


def _span(values: Sequence[int]) -> str:
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def _evidence_text(results: Sequence[Result], comps: Sequence[ComparisonRow]) -> str:
    parts, warn = [], []
    for ds in _datasets_of(results):
        cs = [c for c in comps if c.dataset == ds]
        if not cs:
            continue
        n_img = max(c.result.n_images for c in cs)
        seeds = _span(sorted({c.result.n_seeds for c in cs}))
        refs = ", ".join(sorted({c.reference for c in cs}))
        parts.append(f"{ds}: {n_img} test image(s), {seeds} paired seed(s), "
                     f"reference {refs}, min. possible permutation p {2 / 2 ** n_img:.2g}")
        if n_img < FEW_IMAGES:
            warn.append(f"**Warning:** {ds} has only {n_img} test image(s): the test has almost no power.")
    return "; ".join(parts) + ("." if parts else "") + (" " + " ".join(warn) if warn else "")


def _evaluated_text(opts: TableOptions) -> str:
    protocol = {
        "patch": "per 256×256 test patch (overlap 128, the paper's protocol)",
        "image": "per whole test image (patch predictions stitched)",
    }[opts.protocol]
    agg = {
        "mean": "mean over test units",
        "aggregated": "aggregated over the test set (Σ intersections / Σ unions; Σ TP/FP/FN/IoU)",
    }[opts.aggregation]
    return f"Dice, AJI and PQ (%) evaluated {protocol}, {agg}"


def table_caption(results: Sequence[Result], opts: TableOptions, comps: Sequence[ComparisonRow] = ()) -> str:
    return (
        f"**Table 1.** {_evaluated_text(opts)}; {_setting_text(results)}. "
        f"Best per ratio in **bold**, second <ins>underlined</ins>. AJI markers compare a method with the "
        f"block's reference on the same test images: † p < 0.001 / ‡ p < 0.05 the reference is better; "
        f"⇑ p < 0.001 / ↑ p < 0.05 the method is better than the reference. Test: {TEST_TEXT[opts.test]}, "
        f"{CORRECTION_TEXT[opts.correction]} over the comparisons of each dataset and ratio; ΔAJI with 95 % "
        f"paired-bootstrap CIs (images with all their patches, and seeds) in comparisons.md. "
        f"{_evidence_text(results, comps)} `+points`/`+boxes`: extra weak labels on the unlabeled patches. "
        f"[tag]: departs from the published method (footnotes). – not run."
        + (" *k of n seeds*: only k of the n seeds in the store have finished, so the cell is not scored."
           if any(r.status not in ("done", "failed") for r in results) else "")
    )


def table2_grid(results: Sequence[Result], opts: TableOptions = TableOptions()) -> Grid | None:
    """The cells of Table 2 (BASS head ablations), or ``None`` without any ablation result."""
    ablations = ablation_rows("bass")
    columns = ablation_columns(ablations)
    names = [a[0] for a in ablations]
    results = [r for r in results if r.method in names and not r.variant]
    if not results:
        return None
    datasets = _datasets_of(results)
    header = ["Ratio", *columns] + [f"{ds} {METRIC_NAMES[m]}" for ds in datasets for m in METRICS]
    rows = []
    for ratio in sorted({r.ratio for r in results}, key=_ratio_sort):
        block = [r for r in results if r.ratio == ratio]
        marks = _block_marks(block, datasets, set(names))
        for i, (name, parts) in enumerate(ablations):
            row = [Cell(ratio if i == 0 else "")] + [Cell("✓" if c in parts else "") for c in columns]
            for ds in datasets:
                r = next((x for x in block if x.method == name and x.dataset == ds), None)
                row += [_cell(r, m, marks[(ds, m)].get(name, "")) for m in METRICS]
            rows.append(row)
    caption = (
        "**Table 2.** BASS segmentation-head ablations: naive mask head (NMH), low-resolution denoising "
        f"(LRD), cross-RoI contrastive learning (CRC). {_evaluated_text(opts)}; {_setting_text(results)}. "
        "Best per ratio in **bold**, second <ins>underlined</ins>. No significance markers in this table."
    )
    return Grid(header, rows, 1 + len(columns), caption)


def table2(results: Sequence[Result], opts: TableOptions = TableOptions()) -> str:
    """Table 2 in Markdown: BASS head ablations (NMH / LRD / CRC check marks), one block per ratio."""
    grid = table2_grid(results, opts)
    if grid is None:
        return "_No BASS ablation results in the store (run --methods bass-nmh,bass-lrd,bass-nmh-lrd,bass)._\n"
    return render_markdown(grid)


def comparisons_markdown(results: Sequence[Result], opts: TableOptions, comps: Sequence[ComparisonRow]) -> str:
    """``comparisons.md``: every comparison with ΔAJI, its 95 % CI, raw and corrected p."""
    corr = opts.correction or "none"
    head = (
        f"**Comparisons** ({_setting_text(results)}). ΔAJI = method − reference in AJI points (%), mean "
        f"over test units and seeds. 95 % CI: paired bootstrap resampling test images with all their "
        f"units, and seeds ({opts.n_boot} resamples, fixed seed {opts.boot_seed}). p: {TEST_TEXT[opts.test]}; "
        f"corrected: {CORRECTION_TEXT[opts.correction]} within each dataset and ratio. Markers: "
        f"† / ‡ reference better (p < 0.001 / 0.05), ⇑ / ↑ method better.\n\n"
    )
    if not comps:
        return head + "_No comparisons: no block has a reference and another finished method._\n"
    lines = [(f"| Ratio | Dataset | Method | Reference | ΔAJI | 95 % CI | p (raw) | p ({corr}) | Marker "
              f"| Images | Seeds | Note |"), "|---|---|---|---|---:|---|---:|---:|---|---:|---:|---|"]
    for c in comps:
        res = c.result
        lines.append(
            f"| {c.ratio} | {c.dataset} | {c.method} | {c.reference} | {100 * res.delta:+.2f} | "
            f"[{100 * res.ci_low:+.2f}, {100 * res.ci_high:+.2f}] | {res.p_value:.3g} | {c.p_corrected:.3g} | "
            f"{c.marker} | {res.n_images} | {res.n_seeds} | {res.note} |"
        )
    few = sorted({(c.dataset, c.result.n_images) for c in comps if c.result.n_images < FEW_IMAGES})
    warn = "".join(f"\n**Warning:** {ds} has only {n} test image(s): the test has almost no power.\n"
                   for ds, n in few)
    return head + "\n".join(lines) + "\n" + warn


def comparison_columns(comps: Sequence[ComparisonRow], opts: TableOptions) -> dict[tuple, dict[str, Any]]:
    """``(method, variant, dataset, ratio, profile, split recipe) → export columns`` (results.csv/json)."""
    return {
        (c.method, c.variant, c.dataset, c.ratio, *c.setting): {
            "aji_reference": c.reference, "aji_delta": c.result.delta, "aji_ci_low": c.result.ci_low,
            "aji_ci_high": c.result.ci_high, "aji_p_raw": c.result.p_value, "aji_p_corrected": c.p_corrected,
            "aji_p_value": c.p_corrected, "aji_marker": c.marker, "aji_test": opts.test,
            "aji_correction": opts.correction or "none", "n_images": c.result.n_images,
            "n_seeds_paired": c.result.n_seeds,
        }
        for c in comps
    }
