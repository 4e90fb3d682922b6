"""The shape every method folder has: ``methods/<name>/method.py`` + ``README.md``, no cross imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

METHODS_DIR = Path(__file__).resolve().parents[2] / "methods"
PLUGINS = sorted(p.name for p in METHODS_DIR.iterdir()
                 if p.is_dir() and p.name not in ("core", "__pycache__"))


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_every_builtin_method_lives_in_its_own_folder():
    from benchmark.catalog import BUILTIN_METHODS

    for name, target in BUILTIN_METHODS.items():
        module = target.partition(":")[0]
        parts = module.split(".")
        assert parts[0] == "methods" and parts[2:] == ["method"], f"{name}: {target} is not methods/<name>/method.py"
        assert parts[1] in PLUGINS


@pytest.mark.parametrize("plugin", PLUGINS)
def test_method_folder_has_method_module(plugin):
    assert (METHODS_DIR / plugin / "method.py").is_file()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_method_folder_imports_no_other_method_folder(plugin):
    bad = []
    for f in sorted((METHODS_DIR / plugin).rglob("*.py")):
        for mod in _imported_modules(f):
            parts = mod.split(".")
            if parts[0] == "methods" and len(parts) > 1 and parts[1] not in ("core", plugin):
                bad.append(f"{f.relative_to(METHODS_DIR.parent)} imports {mod}")
    assert not bad, "method folders may import only methods.core and benchmark: " + "; ".join(bad)


def test_core_imports_no_method_folder():
    bad = [f"{f.name} imports {m}" for f in sorted((METHODS_DIR / "core").rglob("*.py"))
           for m in _imported_modules(f) if m.split(".")[0] == "methods" and m.split(".")[1:2] != ["core"]]
    assert not bad, bad
