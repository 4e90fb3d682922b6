"""docs/writing-a-method.md, followed literally: its files, a real ``pip install``, ``list`` and ``check-method``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "writing-a-method.md"
FILE_BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.S | re.M)


def guide_files() -> dict[str, str]:
    """The page's code blocks that carry a ``title="path"``: the plugin's files, as written."""
    return dict(FILE_BLOCK.findall(GUIDE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> dict[str, str]:
    """Write the guide's files into a folder, ``pip install`` it into a target dir; the env to use it."""
    base = tmp_path_factory.mktemp("plugin_guide")
    src, site = base / "nuclei-gray", base / "site"
    for rel, code in guide_files().items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code, encoding="utf-8")
    # --no-deps: the guide's package depends on nuclei-ssl-bench, which runs here from the checkout
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]),
               NUCLEI_SSL_BENCH_CACHE=str(base / "cache"))
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_guide_has_the_whole_package():
    files = guide_files()
    assert set(files) == {"pyproject.toml", "nuclei_gray/__init__.py", "nuclei_gray/method.py"}
    assert "[build-system]" in files["pyproject.toml"] and "[project]" in files["pyproject.toml"]
    assert '[project.entry-points."nuclei_ssl_bench.methods"]' in files["pyproject.toml"]
    assert "uses_unlabeled = False" in files["nuclei_gray/method.py"]


def test_installed_guide_plugin_is_listed_as_labeled_only(installed_plugin):
    out = run_cli(installed_plugin, "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {m["name"]: m for m in json.loads(out.stdout)["methods"]}
    assert "gray-threshold" in rows, sorted(rows)
    assert rows["gray-threshold"]["supervision"] == "L"
    assert rows["gray-threshold"]["dist"] == "nuclei-gray"


def test_installed_guide_plugin_passes_check_method(installed_plugin):
    out = run_cli(installed_plugin, "check-method", "gray-threshold")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout
