"""The README, the docs site's sources and the method READMEs: size, sync with CI, nothing users lack."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = sorted(p.name for p in (ROOT / "methods").iterdir()
                 if p.is_dir() and p.name not in ("core", "__pycache__"))
# files that exist only on the developers' machines, never in the package (spelled in pieces so that
# this test does not find itself)
NOT_SHIPPED = ["methods-" + "spec.md", "ecosystem-" + "notes.md", "cpu-training-" + "notes.md",
               "BASS" + ".md", "shared/" + "docs"]


def test_readme_is_short_and_starts_with_the_fresh_machine_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 15_000
    first = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1)
    assert first.startswith("pip install -e . && python -m benchmark run ")
    assert "--datasets synthetic" in first and "--profile" not in first


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marker = ci.index("# --- the README's test command, verbatim ---")
    command = ci[marker + 1]
    assert command.startswith("pip install -e \".[test]\"") and "pytest" in command
    assert f"```bash\n{command}\n```" in readme


@pytest.mark.parametrize("name", METHODS)
def test_method_readme_covers_paper_departures_options_results(name):
    text = (ROOT / "methods" / name / "README.md").read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "**What it is.**" in text
    headings = [h.lower() for h in re.findall(r"^## (.+)$", text, re.M)]
    assert any("options" in h for h in headings), headings
    assert any("measured results" in h for h in headings), headings
    assert "depart" in text.lower()


@pytest.mark.parametrize("name", METHODS)
def test_every_method_page_is_in_the_site_nav(name):
    assert f"methods/{name}.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_no_file_refers_to_a_file_users_do_not_have():
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for rel in tracked:
        path = ROOT / rel
        if path.suffix not in {".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".sh", ""} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        bad += [f"{rel}: {name}" for name in NOT_SHIPPED if name in text]
    assert not bad, bad


def test_every_test_the_guarantees_page_cites_exists():
    """docs/guarantees.md says each promise is checked by the test in brackets: those tests must exist."""
    text = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    cited = re.findall(r"`((?:tests/)?[\w/]*test_\w+\.py)::(test_\w+)`", text)
    assert len(cited) >= 10
    missing = []
    for file, name in cited:
        matches = [file] if file.startswith("tests/") else [str(p.relative_to(ROOT)) for p in
                                                            (ROOT / "tests").rglob(Path(file).name)]
        if not any(re.search(rf"^def {name}\(", (ROOT / m).read_text(encoding="utf-8"), re.M) for m in matches):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/guarantees.md cites tests that do not exist: {missing}"
