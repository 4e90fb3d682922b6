"""Reports read method facts from the registry: a new method needs no edit in report code."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import numpy as np
import pytest

import benchmark.reports as reports
from benchmark.catalog import METHODS
from benchmark.reports import collect as collect_mod
from benchmark.reports import tables as tables_mod
from benchmark.reports.collect import collect
from benchmark.reports.methods_info import ablation_rows, method_info, method_sort_key, report_sweeps
from benchmark.reports.tables import table1, table2

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("store_fixture", HERE / "store_fixture.py")
store_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(store_fixture)

PLUGIN = '''
from benchmark.api import Method


class Throwaway(Method):
    name = "throwaway-test"
    description = "a method that exists only in this test"
    needs = frozenset({"boxes"})
    table_order = 15  # between watershed (10) and maskrcnn (20)

    def fit(self, data, **kwargs):
        pass

    def predict(self, images):
        return []


class ThrowawayAblation(Method):
    name = "bass-crc-test"
    family = "bass"
    ablation = "CRC"
    table_order = 95  # between bass-lrd (90) and bass-nmh-lrd (100)

    def fit(self, data, **kwargs):
        pass

    def predict(self, images):
        return []
'''


@pytest.fixture
def throwaway(tmp_path, monkeypatch):
    """Two methods in a temporary module, registered like an entry point would (removed afterwards)."""
    (tmp_path / "throwaway_plugin_mod.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    METHODS.register("throwaway-test", "throwaway_plugin_mod:Throwaway", dist="throwaway-dist")
    METHODS.register("bass-crc-test", "throwaway_plugin_mod:ThrowawayAblation", dist="throwaway-dist")
    yield
    for name in ("throwaway-test", "bass-crc-test"):
        METHODS._entries.pop(name, None)


def _table(store: Path, method: str, shift: float) -> None:
    ajis = np.linspace(0.4, 0.6, 12) + shift
    for ds in ("cryonuseg", "monuseg"):
        for ratio in ("1/8", "1/2"):
            table = store_fixture.counts_table(ajis, ajis + 0.2, ajis - 0.02)
            needs = ("boxes",) if "throwaway" in method else ()
            store_fixture.write_cell(store, method, ds, ratio, 0, table, needs=needs)


def test_report_code_holds_no_method_lists():
    assert not hasattr(collect_mod, "METHOD_ORDER")
    assert not hasattr(tables_mod, "ABLATIONS")
    assert not hasattr(reports, "SWEEPS")


def test_builtin_order_ablations_and_sweeps_come_from_the_classes():
    names = ["bass", "bass-code", "bass-nmh-lrd", "bass-lrd", "bass-nmh", "pg-fanet", "noisyboundary",
             "shapeprop", "pointwssis", "mmt-psm", "maskrcnn", "watershed"]
    assert sorted(names, key=method_sort_key) == names[::-1]
    assert method_sort_key("not-registered") > method_sort_key("bass")
    assert [(n, sorted(p)) for n, p in ablation_rows()] == [
        ("bass-nmh", ["NMH"]), ("bass-lrd", ["LRD"]), ("bass-nmh-lrd", ["LRD", "NMH"]),
        ("bass", ["CRC", "LRD", "NMH"])]
    assert list(report_sweeps()) == ["box_threshold", "pixel_threshold", "alpha", "d"]
    assert method_info("pointwssis")["needs"] == ["points"] and method_info("bass")["family"] == "bass"


def test_a_new_registered_method_appears_in_table1_and_table2_without_report_edits(tmp_path, throwaway):
    store = store_fixture.build_store(tmp_path / "store")
    _table(store, "throwaway-test", 0.0)
    _table(store, "bass-crc-test", 0.02)
    results = collect(store)
    text = table1(results)
    block = text.split("| 1/2")[0]
    rows = [line.split("|")[2].strip() for line in block.splitlines() if line.startswith("|") and "---" not in line]
    assert "throwaway-test +boxes" in rows
    assert rows.index("throwaway-test +boxes") < rows.index("maskrcnn"), "table_order 15 sorts before maskrcnn"
    t2 = table2(results)
    marks = [[c.strip() for c in line.split("|")[2:5]] for line in t2.split("| 1/2")[0].splitlines()
             if line.startswith("|") and "---" not in line and "Ratio" not in line]
    assert marks == [["✓", "", ""], ["", "✓", ""], ["", "", "✓"], ["✓", "✓", ""], ["✓", "✓", "✓"]], t2
    assert "| Ratio | NMH | LRD | CRC |" in t2
