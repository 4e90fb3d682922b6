"""``benchmark report``: tables, CSV/JSON and figures built from the result store only.

Nothing here trains or predicts, so a report is instant and can be rebuilt from a copied store on
another machine. Results of different profiles or split recipes never share a table: each setting
gets its own Table 1 / Table 2 / comparisons section, and its caption names it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from benchmark.reports.collect import Result, collect, results_frame
from benchmark.reports.methods_info import report_sweeps
from benchmark.reports.sweeps import sweep_table
from benchmark.reports.tables import (
    TableOptions,
    comparison_columns,
    comparisons,
    comparisons_markdown,
    table1,
    table1_grid,
    table2,
    table2_grid,
)
from benchmark.store import atomic_write_text, iter_cells

__all__ = ["TableOptions", "build_report", "filter_results", "table1", "table2", "table5"]


def filter_results(res: list[Result], *, profile: str | None = None, split: str | None = None,
                   split_recipe: str | None = None) -> list[Result]:
    """Keep the results of one profile / split hash (prefix) / split recipe.

    Raises:
        ValueError: a filter matches nothing (names what the store holds).
    """
    for name, value, get in (("--profile", profile, lambda r: r.profile),
                             ("--split", split, lambda r: r.split_hash),
                             ("--split-recipe", split_recipe, lambda r: r.split_recipe)):
        if value is None:
            continue
        kept = [r for r in res if (get(r).startswith(value) if name == "--split" else get(r) == value)]
        if not kept:
            have = ", ".join(sorted({get(r) or "(none)" for r in res})) or "nothing"
            raise ValueError(f"{name} {value!r} matches no result in the store; it holds: {have}")
        res = kept
    return res


def _settings(res: Sequence[Result]) -> list[tuple[str, str]]:
    return sorted({r.setting for r in res})


def build_report(
    results: Path = Path("results"),
    out: Path | None = None,
    *,
    opts: TableOptions | None = None,
    methods: Sequence[str] | None = None,
    profile: str | None = None,
    split: str | None = None,
    split_recipe: str | None = None,
    figures: bool = True,
    skip_damaged: bool = False,
    **option_kwargs,
) -> list[Path]:
    """Write ``table1.md/.tex``, ``table2.md/.tex``, ``comparisons.md``, sweep tables, ``table5.md``,
    ``results.csv/json``, ``report.md`` (all tables) and figures into ``out`` (default:
    ``<results>/reports``). Returns the written paths.

    ``option_kwargs`` (``protocol``, ``aggregation``, ``test``, ``correction``, ``reference``,
    ``select_on``) build the :class:`TableOptions` when ``opts`` is not given. Every done cell is
    verified against the checksums in its ``done.json`` first; a damaged cell raises
    :class:`benchmark.store.StoreError` naming the file, unless ``skip_damaged`` (then it is left out
    with a warning).
    """
    results = Path(results)
    out = Path(out) if out is not None else results / "reports"
    if not results.is_dir():
        raise ValueError(f"result store {results} does not exist; run `python -m benchmark run ...` first "
                         f"or pass --results PATH")
    opts = opts or TableOptions(**option_kwargs)
    records = list(iter_cells(results, skip_damaged=skip_damaged))
    res = collect(records, protocol=opts.protocol, aggregation=opts.aggregation, methods=methods)
    res = filter_results(res, profile=profile, split=split, split_recipe=split_recipe)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        atomic_write_text(out / name, text)
        written.append(out / name)

    sections, comps_all = _write_tables(res, opts, write)
    t5 = table5(sorted({(r.dataset, r.split_recipe) for r in res}))
    if t5:
        write("table5.md", t5)
        sections.append(t5)
    failed = [r for r in res if r.status == "failed"]
    if failed:
        sections.append("\n".join(["**Failed cells**", ""] + [
            f"- {r.method} {r.variant} on {r.dataset} {r.ratio} ({r.profile}): {'; '.join(r.errors)}"
            for r in failed]) + "\n")
    write("report.md", "\n\n".join(sections))
    written += _write_exports(res, comps_all, opts, out, write)
    if figures and res:
        written += _write_figures(res, records, out)
    return written


def _write_figures(res: Sequence[Result], records, out: Path) -> list[Path]:
    """Figures per setting; with several settings each goes to ``out/<profile>-<recipe>/``."""
    from benchmark.reports import figures as figs
    settings = _settings(res)
    methods = {r.method for r in res}
    written: list[Path] = []
    for profile, recipe in settings:
        sub = [r for r in res if r.setting == (profile, recipe)]
        where = out if len(settings) == 1 else out / f"{profile or 'unknown'}-{recipe}"
        recs = [r for r in records if str(r.cell.get("profile", "")) == profile
                and str(r.cell.get("split_recipe") or "paper") == recipe and r.method in methods]
        written += figs.aji_distributions(sub, where)
        for option in sorted({k for r in sub for k in r.options}):
            written += figs.sweep_plot(sub, option, where)
        written += figs.qualitative_panel(recs, where)
    return written


def _write_tables(res, opts, write):
    """Table 1 / 2, comparisons and sweeps, one section per (profile, split recipe) setting."""
    from benchmark.reports.latex import to_latex

    md = {"table1": [], "table2": [], "comparisons": []}
    tex = {"table1": [], "table2": []}
    sweeps: dict[str, list[str]] = {}
    comps_all = []
    for i, setting in enumerate(_settings(res) or [("", "paper")]):
        sub = [r for r in res if r.setting == setting]
        comps = comparisons(sub, opts)
        comps_all += comps
        suffix = f"-{i + 1}" if len(_settings(res)) > 1 else ""
        md["table1"].append(table1(sub, opts, comps))
        md["table2"].append(table2(sub, opts))
        md["comparisons"].append(comparisons_markdown(sub, opts, comps))
        if [r for r in sub if not r.variant]:
            tex["table1"].append(to_latex(table1_grid(sub, opts, comps), f"tab:table1{suffix}"))
        grid2 = table2_grid(sub, opts)
        if grid2 is not None:
            tex["table2"].append(to_latex(grid2, f"tab:table2{suffix}"))
        for option, title in report_sweeps().items():
            t = sweep_table(sub, option, title, select_on=opts.select_on)
            if t:
                sweeps.setdefault(option, []).append(t)
    for name, parts in md.items():
        write(f"{name}.md", "\n\n".join(parts))
    for name, parts in tex.items():
        if parts:
            write(f"{name}.tex", "\n".join(parts))
    for option, parts in sweeps.items():
        write(f"sweep_{option}.md", "\n\n".join(parts))
    sections = md["table1"] + md["table2"] + md["comparisons"] + [p for ps in sweeps.values() for p in ps]
    return sections, comps_all


def _write_exports(res, comps, opts, out: Path, write) -> list[Path]:
    frame = results_frame(res)
    cols = comparison_columns(comps, opts)
    names = ["aji_reference", "aji_delta", "aji_ci_low", "aji_ci_high", "aji_p_raw", "aji_p_corrected",
             "aji_p_value", "aji_marker", "aji_test", "aji_correction", "n_images", "n_seeds_paired"]
    keys = (list(zip(frame["method"], frame["variant"], frame["dataset"], frame["ratio"], frame["profile"],
                     frame["split_recipe"])) if len(frame) else [])
    for n in names:
        frame[n] = [cols.get(k, {}).get(n) for k in keys]
    frame.to_csv(out / "results.csv", index=False)
    write("results.json", json.dumps(frame.to_dict(orient="records"), indent=2, default=str) + "\n")
    return [out / "results.csv"]


def table5(datasets: Sequence[tuple[str, str] | str]) -> str | None:
    """Table 5 (split counts, labeled area, overlaps) for the ``(dataset, split recipe)`` pairs with a
    committed manifest (a bare name means the ``paper`` recipe)."""
    from benchmark.data import manifest_path
    from benchmark.data import splits as sp

    parts = []
    for item in datasets:
        ds, recipe = (item, "paper") if isinstance(item, str) else item
        path = manifest_path(ds, recipe)
        if path.exists():
            parts.append(f"*{ds}, split recipe {recipe}*\n\n" + sp.format_counts(sp.load_manifest(path), fmt="md"))
    if not parts:
        return None
    return "**Table 5.** Split counts (patches): labeled / unlabeled / val / test per ratio.\n\n" + "\n\n".join(parts)
