"""The committed MoNuSeg store: intact, done for its command, and the committed tables are what it builds."""

from __future__ import annotations

from pathlib import Path

from benchmark.cli import main
from benchmark.reports import build_report

REPO = Path(__file__).resolve().parents[3]
FOLDER = REPO / "reports" / "monuseg_cpu_1-8"
STORE = FOLDER / "store"


def test_committed_store_verifies_and_rebuilds_the_committed_tables(tmp_path, capsys):
    assert main(["verify", "--out", str(STORE)]) == 0
    assert "6 done cell(s) checked, 0 damaged" in capsys.readouterr().out
    build_report(STORE, tmp_path, figures=False)
    for name in ("table1.md", "table1.tex", "comparisons.md", "results.csv"):
        assert (tmp_path / name).read_text() == (FOLDER / name).read_text(), f"{name} no longer matches its store"
    build_report(STORE, tmp_path / "image", figures=False, protocol="image")
    assert (tmp_path / "image" / "table1.md").read_text() == (FOLDER / "table1_image_protocol.md").read_text()
    assert "53.70 ± 0.29" in (FOLDER / "table1.md").read_text()  # the README quotes these numbers
