"""No function (or method) in ``benchmark/`` or ``methods/`` runs over 80 lines (the project's standard)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 80
FILES = sorted(p for pkg in ("benchmark", "methods") for p in (ROOT / pkg).rglob("*.py"))


def long_functions(path: Path, limit: int = LIMIT) -> list[str]:
    """``name:line (N lines)`` of every function in ``path`` longer than ``limit`` lines (decorators excluded)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{node.name}:{node.lineno} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_the_scan_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path / "m.py") == [f"long:5 ({LIMIT + 1} lines)"]


def test_the_scan_covers_both_packages():
    names = {p.relative_to(ROOT).parts[0] for p in FILES}
    assert names == {"benchmark", "methods"} and len(FILES) > 20


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_function_over_80_lines(path):
    too_long = long_functions(path)
    assert not too_long, f"{path.relative_to(ROOT)}: split {', '.join(too_long)} along its natural steps"
