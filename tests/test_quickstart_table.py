"""The README's quick-start table is the committed first run's, number for number."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("bench_first_run", ROOT / "scripts" / "bench_first_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_quickstart_block_is_the_committed_runs_table():
    script = _script()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(script.BEGIN, 1)[1].split(script.END, 1)[0]
    table = script.aji_table(pd.read_csv(ROOT / "reports" / "quickstart" / "results.csv"))
    assert table in block
    assert table in (ROOT / "reports" / "quickstart" / "README.md").read_text(encoding="utf-8")
    assert script.readme_command() in block  # the block describes the README's own first command
