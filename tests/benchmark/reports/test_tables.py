"""Golden-file tests of the Markdown tables, plus the rules behind them."""

from __future__ import annotations

import dataclasses
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


def _block(text, ratio):
    body = text.split("\n\n", 1)[1]
    first, second = body.split("| 1/2")[0], "| 1/2" + body.split("| 1/2")[1]
    return first if ratio == "1/8" else second


def _row(block, method):
    return next(l for l in block.splitlines() if l.startswith("|") and f"| {method}" in l)


def test_table1_marks_best_second_markers_missing_failed(results):
    text = table1(results)
    first = _block(text, "1/8")
    bass, mrcnn = _row(first, "bass"), _row(first, "maskrcnn")
    assert bass.count("**") >= 2, "bass is the best method at 1/8 and must be bold"
    assert "‡" in mrcnn.split("|")[4] and "†" in mrcnn.split("|")[7], "maskrcnn is worse than bass on every image"
    for mark in "†‡⇑↑":
        assert mark not in bass, "the reference gets no marker"
    assert "failed" in first, "the failed noisyboundary cell must show as failed"
    assert "–" in _block(text, "1/2"), "the missing pointwssis cell must show as –"
    assert "pointwssis +points" in text
    assert "<ins>" in first
    assert "permutation test over test images" in text and "mean over test units" in text
    assert "Holm-corrected" in text and "reference bass" in text and "12 test image(s)" in text


def test_table1_direction_aware_markers(results):
    """noisyboundary beats the reference at 1/2: it gets ⇑/↑, never the paper's †/‡."""
    nb = _row(_block(table1(results), "1/2"), "noisyboundary")
    assert "⇑" in nb and "↑" in nb and "†" not in nb and "‡" not in nb
    assert "the method is better than the reference" in table1(results)


def test_table1_seeds_mean_std_and_one_seed_mean_only(results):
    second = _block(table1(results), "1/2")
    monuseg_aji = _row(second, "maskrcnn").split("|")[7]
    assert "±" in monuseg_aji and "56.20 ± 0.28" in monuseg_aji, "monuseg 1/2 has two seeds: mean ± std"
    assert "± 0.00" not in table1(results)
    assert "±" not in _row(second, "maskrcnn").split("|")[4], "cryonuseg has one seed: mean only"
    assert "over 2 seeds" in table1(results)
    one = [r for r in results if len(r.seeds) == 1]
    assert "±" not in table1(one).split("\n\n", 1)[1] and "one seed (0): mean only" in table1(one)
    running = [dataclasses.replace(r, status="running") for r in one]  # a grid still in progress
    assert "no finished row yet" in table1(running) and "one seed" not in table1(running)


def test_table1_a_cell_with_an_unfinished_seed_shows_how_many_seeds_are_done(tmp_path):
    store = store_fixture.build_store(tmp_path / "store")
    (unfinished,) = store.glob("monuseg/1-2/maskrcnn/seed1-*/done.json")
    unfinished.unlink()  # seed 1 started and was stopped: its cell.json stays, done.json does not
    text = table1(collect(store))
    assert "only k of the n seeds in the store have finished" in text
    assert "k of n seeds" not in table1(collect(store_fixture.build_store(tmp_path / "whole")))
    row = _row(_block(text, "1/2"), "maskrcnn")
    assert row.split("|")[7].strip() == "1 of 2 seeds", row
    assert "running" not in row, "the store cannot tell a running seed from a stopped one"


def test_table1_aggregation_and_test_in_caption(results):
    text = table1(results, TableOptions(aggregation="aggregated", test="wilcoxon-patch", correction="bh"))
    assert "aggregated over the test set" in text and "paper's protocol: Wilcoxon" in text
    assert "Benjamini–Hochberg" in text
    assert "no correction" in table1(results, TableOptions(correction=None))
    with pytest.raises(ValueError, match="--test"):
        TableOptions(test="ttest")


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
    # the comparisons behind Table 1's markers are exported: reference rows and failed cells have none
    assert pd.isna(bass.aji_p_value) and pd.isna(bass.aji_reference)
    failed = df[(df.method == "noisyboundary") & (df.dataset == "monuseg") & (df.ratio == "1/8")].iloc[0]
    assert failed.status == "failed" and pd.isna(failed.aji_p_value)
    mr = df[(df.method == "maskrcnn") & (df.dataset == "monuseg") & (df.ratio == "1/2")].iloc[0]
    assert mr.aji_reference == "bass" and mr.aji_delta == pytest.approx(-0.08)
    assert mr.aji_ci_low <= mr.aji_delta <= mr.aji_ci_high
    assert mr.n_images == 12 and mr.n_seeds == 2 and mr.n_seeds_paired == 2
    assert mr.aji_p_raw == pytest.approx(2 / 2**12) and mr.aji_p_corrected == pytest.approx(3 * 2 / 2**12)
    assert mr.aji_test == "permutation" and mr.aji_correction == "holm"
    assert mr.aji_seed_std > 0 and pd.isna(bass.aji_seed_std), "one seed: no std (not 0.0)"
    assert mr.val_aji == pytest.approx(np.mean(np.linspace(0.40, 0.62, 24)[:8] + 0.05 - 0.01 + 0.002), abs=1e-3)
    comps = (tmp_path / "rep" / "comparisons.md").read_text()
    assert "| 1/2 | monuseg | maskrcnn | bass | -8.00 |" in comps and "95 % CI" in comps


def test_wilcoxon_patch_is_the_papers_per_patch_test(tmp_path):
    from scipy.stats import wilcoxon

    store = store_fixture.build_store(tmp_path / "store")
    build_report(store, tmp_path / "rep", figures=False, test="wilcoxon-patch", correction=None)
    import pandas as pd

    df = pd.read_csv(tmp_path / "rep" / "results.csv")
    res = {(r.method, r.dataset, r.ratio): r for r in collect(store)}
    for method in ("maskrcnn", "pointwssis"):
        row = df[(df.method == method) & (df.dataset == "cryonuseg") & (df.ratio == "1/8")].iloc[0]
        a, b = res[(method, "cryonuseg", "1/8")].per_image, res[("bass", "cryonuseg", "1/8")].per_image
        a, b = a.align(b, join="inner")
        assert row.aji_p_value == pytest.approx(wilcoxon(a.to_numpy(), b.to_numpy()).pvalue, rel=1e-9)


def test_table1_latex_golden(tmp_path):
    store = store_fixture.build_store(tmp_path / "store")
    build_report(store, tmp_path / "rep", figures=False)
    tex = (tmp_path / "rep" / "table1.tex").read_text()
    check_golden("table1.tex", tex)
    md = (tmp_path / "rep" / "table1.md").read_text()
    # the same numbers, marks and markers as the Markdown
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert md.count("**") // 2 - 2 == tex.count(r"\textbf{") - 1  # caption: 2 in md, 1 in tex
    assert md.count("<ins>") - 1 == tex.count(r"\underline{") - 1
    assert md.count("‡") == tex.count(r"$^{\ddagger}$") and md.count("⇑") == tex.count(r"$^{\Uparrow}$")
    assert "56.20 $\\pm$ 0.28" in tex
    assert (tmp_path / "rep" / "table2.tex").exists()


def test_report_on_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_report(tmp_path / "nope", tmp_path / "rep")


def test_comparisons_golden(tmp_path):
    store = store_fixture.build_store(tmp_path / "store")
    build_report(store, tmp_path / "rep", figures=False)
    check_golden("comparisons.md", (tmp_path / "rep" / "comparisons.md").read_text())


def test_cli_report_flags(tmp_path, capsys):
    from benchmark.cli import main

    store = store_fixture.build_store(tmp_path / "store")
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "rep"), "--no-figures",
                 "--test", "wilcoxon-patch", "--correction", "none", "--select-on", "test",
                 "--bootstrap", "200"]) == 0
    t1 = (tmp_path / "rep" / "table1.md").read_text()
    assert "paper's protocol: Wilcoxon" in t1 and "no correction" in t1
    assert "200 resamples" in (tmp_path / "rep" / "comparisons.md").read_text()
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "r2"), "--profile", "paper"]) == 2
    assert "--profile 'paper' matches no result" in capsys.readouterr().err
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "r3"), "--bootstrap", "5"]) == 2
