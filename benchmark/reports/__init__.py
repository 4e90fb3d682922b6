"""``benchmark report``: tables, CSV/JSON and figures built from the result store only.

Nothing here trains or predicts, so a report is instant and can be rebuilt from a copied store on
another machine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from benchmark.reports.collect import collect, results_frame
from benchmark.reports.methods_info import report_sweeps
from benchmark.reports.tables import TableOptions, sweep_table, table1, table1_pvalues, table2
from benchmark.store import atomic_write_text, iter_cells

def build_report(
    results: Path = Path("results"),
    out: Path = Path("reports"),
    *,
    protocol: str = "patch",
    aggregation: str = "mean",
    reference: str | None = None,
    test: str = "wilcoxon",
    correction: str | None = None,
    methods: Sequence[str] | None = None,
    figures: bool = True,
) -> list[Path]:
    """Write ``table1.md``, ``table2.md``, sweep tables, ``table5.md``, ``results.csv/json``,
    ``report.md`` (all tables) and figures into ``out``. Returns the written paths."""
    results, out = Path(results), Path(out)
    if not results.is_dir():
        raise ValueError(f"result store {results} does not exist; run `python -m benchmark run ...` first "
                         f"or pass --results PATH")
    records = list(iter_cells(results))
    res = collect(records, protocol=protocol, aggregation=aggregation, methods=methods)
    opts = TableOptions(protocol=protocol, aggregation=aggregation, test=test, correction=correction,
                        reference=reference)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        atomic_write_text(out / name, text)
        written.append(out / name)

    pvals = table1_pvalues(res, opts)
    t1, t2 = table1(res, opts, pvalues=pvals), table2(res, opts)
    write("table1.md", t1)
    write("table2.md", t2)
    sections = [t1, t2]
    for option, title in report_sweeps().items():
        t = sweep_table(res, option, title)
        if t:
            write(f"sweep_{option}.md", t)
            sections.append(t)
    t5 = table5(sorted({r.dataset for r in res}))
    if t5:
        write("table5.md", t5)
        sections.append(t5)
    failed = [r for r in res if r.status == "failed"]
    if failed:
        lines = ["**Failed cells**", ""] + [
            f"- {r.method} {r.variant} on {r.dataset} {r.ratio}: {'; '.join(r.errors)}" for r in failed
        ]
        sections.append("\n".join(lines) + "\n")
    write("report.md", "\n\n".join(sections))
    frame = results_frame(res)
    keys = list(zip(frame["method"], frame["variant"], frame["dataset"], frame["ratio"])) if len(frame) else []
    frame["aji_reference"] = [pvals.get(k, (None, None))[0] for k in keys]
    frame["aji_p_value"] = [pvals.get(k, (None, None))[1] for k in keys]
    frame.to_csv(out / "results.csv", index=False)
    written.append(out / "results.csv")
    write("results.json", json.dumps(frame.to_dict(orient="records"), indent=2, default=str) + "\n")
    if figures and res:
        from benchmark.reports import figures as figs

        written += figs.aji_distributions(res, out)
        for option in sorted({k for r in res for k in r.options}):
            written += figs.sweep_plot(res, option, out)
        written += figs.qualitative_panel(records, out)
    return written


def table5(datasets: Sequence[str]) -> str | None:
    """Table 5 (split counts) for the datasets with a committed manifest."""
    from benchmark.data import SPLITS_DIR
    from benchmark.data import splits as sp

    parts = []
    for ds in datasets:
        path = SPLITS_DIR / f"{ds}.json"
        if path.exists():
            parts.append(f"*{ds}*\n\n" + sp.format_counts(sp.load_manifest(path), fmt="md"))
    if not parts:
        return None
    return "**Table 5.** Split counts (patches): labeled / unlabeled / val / test per ratio.\n\n" + "\n\n".join(parts)
