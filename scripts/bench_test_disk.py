"""Measure how much temporary disk the test suite takes, and what it leaves behind.

Runs ``python -m pytest -q -p no:cacheprovider`` (the README's test command in this interpreter, without
pytest's cache folder) with ``TMPDIR`` and
``NUCLEI_SSL_BENCH_CACHE`` pointed into one empty folder, as ``.ci/run`` does, and samples that folder's
size every ``--every`` seconds. Writes the peak, the size left when pytest exits (the patch cache is
expected; test folders are not) and pytest's summary line to ``--out``::

    python scripts/bench_test_disk.py --out reports/ci_disk.md

Why it exists: the tests that train write ~100 MB checkpoints, and pytest keeps the ``tmp_path``
folders of its last three sessions by default. A CI run once failed with ENOSPC because of that.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (files that vanish mid-walk count as 0)."""
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                pass
    return total


def sample(root: Path, every: float, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    """Append ``(seconds since start, bytes under root)`` to ``out`` every ``every`` s until ``stop``."""
    t0 = time.perf_counter()
    while not stop.is_set():
        out.append((time.perf_counter() - t0, tree_bytes(root)))
        stop.wait(every)


def leftovers(root: Path) -> dict[str, int]:
    """Bytes under each top-level entry of ``root``."""
    return {p.name: tree_bytes(p) if p.is_dir() else p.stat().st_size for p in sorted(root.iterdir())}


def main(argv: list[str] | None = None) -> int:
    """Run the suite, write the report to ``--out``; returns pytest's exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "ci_disk.md")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples (default 2)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. a test path")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-test-disk-"))
    env = dict(os.environ, TMPDIR=str(root), NUCLEI_SSL_BENCH_CACHE=str(root / "cache"),
               PYTHONPATH=str(REPO))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=sample, args=(root, args.every, stop, samples), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    left = leftovers(root)
    shutil.rmtree(root, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    summary = next((ln for ln in reversed(proc.stdout.splitlines()) if " in " in ln and "passed" in ln), "?")
    peak_t, peak = max(samples, key=lambda s: s[1])
    mb = 1e6
    text = "\n".join([
        "# Temporary disk used by the test suite",
        "",
        f"`python scripts/bench_test_disk.py` at commit {commit}, {when}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Everything the tests write outside the "
        "checkout went to one `TMPDIR`, as in `.ci/run`; its size was sampled every "
        f"{args.every:g} s ({len(samples)} samples).",
        "",
        f"- pytest: `{summary.strip('= ')}` (exit {proc.returncode}, {wall:.0f} s wall)",
        f"- **peak: {peak / mb:.0f} MB**, at {peak_t:.0f} s",
        f"- left when pytest exited: {sum(left.values()) / mb:.0f} MB: "
        + (", ".join(f"`{k}` {v / mb:.1f} MB" for k, v in left.items()) or "nothing"),
        "",
        "`cache` is the patch cache (`NUCLEI_SSL_BENCH_CACHE`), kept on purpose. A passed test's `tmp_path`",
        "is deleted when it ends (`tmp_path_retention_policy = \"failed\"` in `pyproject.toml`), and",
        "pytest's base folder when every test passed.",
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
