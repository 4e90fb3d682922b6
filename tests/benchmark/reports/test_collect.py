"""Results are identified by their full cell key minus the seed; sweeps select on validation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.reports import build_report
from benchmark.reports.collect import collect
from benchmark.reports.sweeps import sweep_table
from benchmark.reports.tables import table1

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("store_fixture", HERE / "store_fixture.py")
sf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sf)

AJI_A = np.full(24, 0.515)
AJI_B = np.full(24, 0.624)


def test_two_folder_datasets_with_the_same_name_are_not_merged(tmp_path):
    """Two ``folder:`` datasets .../a/cells and .../b/cells are both ``folder-cells``: the split hash
    (their different images) keeps them apart; each keeps its own AJI and seed."""
    out = tmp_path / "store"
    sf.write_cell(out, "maskrcnn", "folder-cells", "1/8", 0, sf._table(AJI_A), split_hash="aaaa1111bbbb2222")
    sf.write_cell(out, "maskrcnn", "folder-cells", "1/8", 0, sf._table(AJI_B), split_hash="cccc3333dddd4444")
    res = collect(out)
    assert len(res) == 2 and all(r.seeds == [0] for r in res)
    assert {r.dataset for r in res} == {"folder-cells#aaaa1111", "folder-cells#cccc3333"}
    assert sorted(round(r.scores["aji"], 4) for r in res) == [0.515, 0.624]
    text = table1(res)
    assert "folder-cells#aaaa1111 AJI" in text and "folder-cells#cccc3333 AJI" in text
    assert "51.50" in text and "62.40" in text and "56.95" not in text  # never their mean


def test_smoke_and_cpu_runs_get_separate_tables(tmp_path):
    out = tmp_path / "store"
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_A), profile="smoke")
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_B), profile="cpu")
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 1, sf._table(AJI_B + 0.01), profile="cpu")
    res = collect(out)
    assert sorted((r.profile, tuple(r.seeds)) for r in res) == [("cpu", (0, 1)), ("smoke", (0,))]
    build_report(out, tmp_path / "rep", figures=False)
    t1 = (tmp_path / "rep" / "table1.md").read_text()
    tables = [t for t in t1.split("**Table 1.**") if t.strip()]
    assert len(tables) == 2, "one Table 1 per profile"
    cpu = next(t for t in tables if "profile cpu" in t)
    smoke = next(t for t in tables if "profile smoke" in t)
    assert "62.90 ± 0.71" in cpu and "over 2 seeds (0, 1)" in cpu and "51.50" not in cpu
    assert "51.50" in smoke and "one seed (0)" in smoke and "62." not in smoke.split("\n\n", 1)[1]
    df = pd.read_csv(tmp_path / "rep" / "results.csv")
    assert sorted(df.profile) == ["cpu", "smoke"] and sorted(df.seeds.astype(str)) == ["0", "0,1"]


def test_profile_and_split_filters(tmp_path):
    out = tmp_path / "store"
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_A), profile="smoke", split_hash="ab12")
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_B), profile="cpu", split_hash="ab12")
    build_report(out, tmp_path / "rep", figures=False, profile="cpu")
    t1 = (tmp_path / "rep" / "table1.md").read_text()
    assert t1.count("**Table 1.**") == 1 and "profile cpu" in t1 and "62.40" in t1
    with pytest.raises(ValueError, match=r"--profile 'paper' matches no result.*cpu, smoke"):
        build_report(out, tmp_path / "rep2", figures=False, profile="paper")
    with pytest.raises(ValueError, match="--split 'ff'"):
        build_report(out, tmp_path / "rep2", figures=False, split="ff")
    build_report(out, tmp_path / "rep3", figures=False, split="ab", profile="smoke")
    assert "51.50" in (tmp_path / "rep3" / "table1.md").read_text()


def test_split_recipes_get_separate_tables(tmp_path):
    out = tmp_path / "store"
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_A), split_hash="p1")
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_B), split_hash="i1",
                  extra={"split_recipe": "image"})
    build_report(out, tmp_path / "rep", figures=False)
    t1 = (tmp_path / "rep" / "table1.md").read_text()
    assert "split recipe image" in t1 and "split recipe paper" in t1 and t1.count("**Table 1.**") == 2


def test_duplicate_seed_is_an_error(tmp_path):
    out = tmp_path / "store"
    a = sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_A))
    b = a.parent / (a.name + "-copy")
    import shutil

    shutil.copytree(a, b)
    with pytest.raises(ValueError, match="same key have seed 0") as info:
        collect(out)
    assert str(a) in str(info.value) and str(b) in str(info.value)


def test_sweep_reports_val_and_test_and_selects_on_val(tmp_path):
    out = tmp_path / "store"
    sf.add_sweep(out)
    res = collect(out)
    text = sweep_table(res, "alpha", "Fig. 3")
    rows = {l.split("|")[3].strip(): l for l in text.splitlines() if l.startswith("| bass")}
    assert "✓" in rows["0.3"] and "✓" not in rows["0.7"], "val AJI prefers 0.3 (test would prefer 0.7)"
    assert "selected on validation" in text and "val AJI" in text and "Warning" not in text
    assert "alpha=0.3 (selected on validation) → test AJI 60.00" in text
    biased = sweep_table(res, "alpha", "Fig. 3", select_on="test")
    assert "alpha=0.7" in biased and "Warning: selected on the test split" in biased
    build_report(out, tmp_path / "rep", figures=False, select_on="test")
    assert "Warning: selected on the test split" in (tmp_path / "rep" / "sweep_alpha.md").read_text()


def test_sweep_without_val_scores_selects_nothing(tmp_path):
    out = tmp_path / "store"
    for alpha in (0.1, 0.3):
        sf.write_cell(out, "bass", "monuseg", "1/8", 0, sf._table(AJI_A + alpha), options={"alpha": alpha})
    text = sweep_table(collect(out), "alpha", "Fig. 3")
    rows = [l for l in text.splitlines() if l.startswith("| bass")]
    assert len(rows) == 2 and not any("✓" in l for l in rows) and "predates validation" in text
    assert "selected on validation) →" not in text


def test_few_test_images_warn_in_caption_and_comparisons(tmp_path):
    out = tmp_path / "store"
    one_image = [f"only@{128 * i}_0" for i in range(24)]
    for method, aji in (("maskrcnn", AJI_A), ("bass", AJI_B)):
        t = sf._table(aji)
        t["image_id"] = one_image
        sf.write_cell(out, method, "folder-six", "1/8", 0, t)
    build_report(out, tmp_path / "rep", figures=False)
    for name in ("table1.md", "comparisons.md"):
        text = (tmp_path / "rep" / name).read_text()
        assert "folder-six has only 1 test image(s): the test has almost no power" in text


def test_approximation_tag_and_budget_come_from_the_cells(tmp_path):
    """A new method needs no edit of the report code: its tag and footnote come from cell.json."""
    out = tmp_path / "store"
    sf.write_cell(out, "brand-new", "monuseg", "1/8", 0, sf._table(AJI_A), extra={
        "approximation": "Mask R-CNN adaptation: not the original network",
        "profile_config": {"iterations": 500}, "teacher": "maskrcnn"})
    d = next(out.glob("monuseg/1-8/brand-new/*"))
    import json

    (d / "done.json").write_text(json.dumps({"summary": {}, "fit_info": {
        "teacher": {"iterations": 500}, "student": {"iterations": 250}}}))
    sf.write_cell(out, "tagged", "monuseg", "1/8", 0, sf._table(AJI_B), extra={
        "approximation": "long text; many details", "approximation_tag": "no MaskRefineNet"})
    text = table1(collect(out))
    assert "brand-new [Mask R-CNN adaptation]<sup>a</sup>" in text
    assert "<sup>a</sup> brand-new: Mask R-CNN adaptation: not the original network" in text
    assert "tagged [no MaskRefineNet]<sup>b</sup>" in text
    build_report(out, tmp_path / "rep", figures=False)
    df = pd.read_csv(tmp_path / "rep" / "results.csv").set_index("method")
    assert df.loc["brand-new", "profile_iterations"] == 500
    assert df.loc["brand-new", "stage_iterations"] == "student=250; teacher=500"
    assert df.loc["brand-new", "starts_from_teacher"] == "maskrcnn"


def test_figures_of_several_settings_do_not_mix(tmp_path):
    out = tmp_path / "store"
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_A), profile="smoke")
    sf.write_cell(out, "maskrcnn", "monuseg", "1/8", 0, sf._table(AJI_B), profile="cpu")
    sf.add_sweep(out)
    written = {p.relative_to(tmp_path / "rep").as_posix() for p in build_report(out, tmp_path / "rep")}
    assert {"cpu-paper/aji_distribution_monuseg.png", "smoke-paper/aji_distribution_monuseg.png",
            "smoke-paper/sweep_alpha.png"} <= written


def test_empty_store_reports_nothing_without_error(tmp_path):
    (tmp_path / "store").mkdir()
    build_report(tmp_path / "store", tmp_path / "rep", figures=False)
    assert "No results" in (tmp_path / "rep" / "table1.md").read_text()
    cols = (tmp_path / "rep" / "results.csv").read_text().strip().split(",")
    assert len(cols) == len(set(cols)) and "aji_ci_low" in cols
