"""Golden-file tests of the Markdown tables, plus the rules behind them."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from benchmark.reports import build_report
from benchmark.reports.collect import collect
from benchmark.reports.tables import TableOptions, rank_marks, table1, table2

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
_spec = importlib.util.spec_from_file_location("store_fixture", HERE / "store_fixture.py")
store_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(store_fixture)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"


@pytest.fixture
def results(tmp_path):
    return collect(store_fixture.build_store(tmp_path / "store"))


def test_table1_golden(results):
    text = table1(results, TableOptions())
    check_golden("table1.md", text)


def test_table1_marks_best_second_markers_missing_failed(results):
    text = table1(results)
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| 1/8")
            or line.startswith("|  |")}
    first_block = text.split("| 1/2")[0]
    bass = next(l for l in first_block.splitlines() if "| bass |" in l)
    mrcnn = next(l for l in first_block.splitlines() if "| maskrcnn |" in l)
    assert bass.count("**") >= 2, "bass is the best method and must be bold"
    assert "†" in mrcnn, "maskrcnn is consistently worse than bass: p < 0.001"
    assert "†" not in bass and "‡" not in bass, "the reference gets no marker"
    assert "failed" in first_block, "the failed noisyboundary cell must show as failed"
    assert "–" in text.split("| 1/2")[1], "the missing pointwssis cell must show as –"
    assert "pointwssis +points" in text
    assert "<ins>" in first_block
    assert "Wilcoxon signed-rank" in text and "mean over test units" in text
    del rows


def test_table1_aggregation_and_test_in_caption(results):
    text = table1(results, TableOptions(aggregation="aggregated", test="ttest", correction="holm"))
    assert "aggregated over the test set" in text and "paired t-test" in text and "Holm" in text


def test_table2_rows_and_check_marks(results):
    text = table2(results)
    lines = [l for l in text.splitlines() if l.startswith("| 1/") or l.startswith("|  |")]
    assert len(lines) == 8, "four ablation rows per ratio"
    full = [l for l in lines if "| ✓ | ✓ | ✓ |" in l]
    assert len(full) == 2 and all("**" in l for l in full), "bass (NMH+LRD+CRC) is the only one run: bold"
    nmh_only = lines[0]
    assert "| ✓ |  |  |" in nmh_only and "–" in nmh_only, "bass-nmh was not run: dashes"
    assert "No BASS ablation results" in table2([r for r in results if r.method != "bass"])


def test_rank_marks_ties_share_rank():
    marks = rank_marks({"a": 0.5, "b": 0.5, "c": 0.4, "d": None, "e": 0.1})
    assert marks == {"a": "best", "b": "best", "c": "second", "d": "", "e": ""}


def test_build_report_writes_everything(tmp_path):
    store = store_fixture.build_store(tmp_path / "store")
    written = build_report(store, tmp_path / "rep", figures=True)
    names = {p.name for p in written}
    for expected in ("table1.md", "table2.md", "report.md", "results.csv", "results.json",
                     "aji_distribution_monuseg.png", "aji_distribution_monuseg.svg"):
        assert expected in names
    import pandas as pd

    df = pd.read_csv(tmp_path / "rep" / "results.csv")
    bass = df[(df.method == "bass") & (df.dataset == "monuseg") & (df.ratio == "1/8")].iloc[0]
    expected = np.clip(np.linspace(0.40, 0.62, 12) + 0.08, 0, 1).mean()
    assert abs(bass.aji - expected) < 1e-3
    assert "Failed cells" in (tmp_path / "rep" / "report.md").read_text()
    # the paired tests behind Table 1's markers are exported: reference rows and failed cells have none
    assert pd.isna(bass.aji_p_value) and pd.isna(bass.aji_reference)
    failed = df[(df.method == "noisyboundary") & (df.dataset == "monuseg") & (df.ratio == "1/8")].iloc[0]
    assert failed.status == "failed" and pd.isna(failed.aji_p_value)
    from scipy.stats import wilcoxon

    from benchmark.reports.collect import collect
    from benchmark.store import iter_cells

    res = {(r.method, r.dataset, r.ratio): r for r in collect(list(iter_cells(store)))}
    for method in ("maskrcnn", "pointwssis"):
        row = df[(df.method == method) & (df.dataset == "cryonuseg") & (df.ratio == "1/8")].iloc[0]
        a, b = res[(method, "cryonuseg", "1/8")].per_image, res[("bass", "cryonuseg", "1/8")].per_image
        a, b = a.align(b, join="inner")
        assert row.aji_reference == "bass"
        assert row.aji_p_value == pytest.approx(wilcoxon(a.to_numpy(), b.to_numpy()).pvalue, rel=1e-9)


def test_report_on_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_report(tmp_path / "nope", tmp_path / "rep")
