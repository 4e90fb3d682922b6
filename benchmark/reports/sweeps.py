"""Sweep tables (Tables 3/4, the α and d figures' numbers): validation and test for every value.

A sweep's result is the test score of the value that *validation* AJI selects (``select_on="val"``,
the default). ``select_on="test"`` reproduces the habit of picking the best value on the test
split; its caption says so in a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.reports.collect import METRICS, Result, method_sort_key
from benchmark.reports.tables import (
    METRIC_NAMES,
    MISSING,
    _datasets_of,
    _fmt,
    _setting_text,
)

SELECTED = "✓"


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def selected_values(rows: Sequence[Result], option: str, select_on: str = "val") -> dict[tuple, Result]:
    """``(method, ratio, dataset) → the result whose value of ``option`` maximises AJI on
    ``select_on``; groups where some value has no validation score select nothing."""
    groups: dict[tuple, list[Result]] = {}
    for r in rows:
        groups.setdefault((r.method, r.ratio, r.dataset), []).append(r)
    out = {}
    for key, rs in groups.items():
        scores = [(r.val_scores or {}).get("aji") if select_on == "val" else r.scores["aji"] for r in rs]
        if any(s is None for s in scores):
            continue
        rs_sorted = sorted(zip(scores, rs), key=lambda t: (-t[0], _num(str(t[1].options[option]))))
        out[key] = rs_sorted[0][1]
    return out


def sweep_table(results: Sequence[Result], option: str, title: str, select_on: str = "val") -> str | None:
    """One row per value of ``option`` per method family and ratio: val AJI and test Dice/AJI/PQ."""
    rows = [r for r in results if option in r.options and r.status == "done"]
    if not rows:
        return None
    datasets = _datasets_of(rows)
    chosen = selected_values(rows, option, select_on)
    header = ["Method", "Ratio", option] + [
        f"{ds} {name}" for ds in datasets for name in ["val AJI"] + [METRIC_NAMES[m] for m in METRICS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    keys = sorted({(r.method, r.ratio, str(r.options[option])) for r in rows},
                  key=lambda k: (method_sort_key(k[0]), k[1], _num(k[2])))
    for method, ratio, value in keys:
        row = [method, ratio, value]
        for ds in datasets:
            r = next((x for x in rows if (x.method, x.ratio, str(x.options[option]), x.dataset)
                      == (method, ratio, value, ds)), None)
            if r is None:
                row += [MISSING] * (1 + len(METRICS))
                continue
            mark = f" {SELECTED}" if chosen.get((method, ratio, ds)) is r else ""
            row.append((_fmt(r.val_scores["aji"]) if r.val_scores else MISSING) + (mark if select_on == "val" else ""))
            row += [_fmt(r.scores[m]) + (mark if m == "aji" else "") for m in METRICS]
        lines.append("| " + " | ".join(row) + " |")
    return f"**{title}.** {_sweep_caption(rows, select_on)}\n\n" + "\n".join(lines) + "\n" + _selected_lines(
        chosen, option, select_on)


def _sweep_caption(rows: Sequence[Result], select_on: str) -> str:
    text = (f"Every value evaluated on the validation patches (val AJI) and on test (Dice / AJI / PQ, %); "
            f"{_setting_text(rows)}. {SELECTED} marks the value selected by {select_on} AJI; the sweep's "
            f"result is that value's test score")
    if select_on == "val":
        return text + " (selected on validation). Val AJI – : the cell predates validation scoring."
    return text + (". **Warning: selected on the test split** (`--select-on test`): the reported score "
                   "is optimistically biased and not a held-out estimate.")


def _selected_lines(chosen: dict[tuple, Result], option: str, select_on: str) -> str:
    if not chosen:
        return ""
    how = "selected on validation" if select_on == "val" else "selected on TEST (biased)"
    lines = [f"- {m} {ratio} {ds}: {option}={r.options[option]} ({how}) → test AJI {_fmt(r.scores['aji'])}"
             for (m, ratio, ds), r in sorted(chosen.items(), key=lambda kv: (method_sort_key(kv[0][0]), kv[0][1:]))]
    return "\n" + "\n".join(lines) + "\n"
