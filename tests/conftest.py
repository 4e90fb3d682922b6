"""Shared fixtures.

``shared_datasets`` points at ``../shared/datasets`` (the real data staged beside the checkout). When it is
absent (a user's clone) tests that need it are skipped with a clear reason; ``.ci/run`` refuses to run
without it, so in CI these tests can never be silently skipped.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NUCLEI_SSL_BENCH_SHARED", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Path to the real datasets folder, or skip."""
    path = SHARED / "datasets"
    if not path.is_dir():
        if os.environ.get("NUCLEI_SSL_BENCH_REQUIRE_DATA"):
            pytest.fail(f"NUCLEI_SSL_BENCH_REQUIRE_DATA is set but {path} does not exist")
        pytest.skip(f"real data not found at {path} (set NUCLEI_SSL_BENCH_SHARED to the 'shared' folder)")
    return path


@pytest.fixture(scope="session")
def monuseg_root(shared_datasets: Path) -> Path:
    return shared_datasets / "monuseg"


def torch_threads() -> int:
    """Threads per test process: the cores (at most 2, as on CI) shared among the pytest-xdist workers."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keep torch at :func:`torch_threads` threads, so two workers do not oversubscribe two cores."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(torch_threads())
    yield


@pytest.fixture
def small_disk(tmp_path):
    """A real 30 MB filesystem (a tmpfs mounted in ``tmp_path``): a toy cell's first checkpoint does not
    fit. Skips where this process may not mount (not root)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)



def make_dist(site: Path, dist: str, group: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """Write a real installed distribution (``*.dist-info`` + modules) into ``site``; put ``site`` on
    ``sys.path`` (or PYTHONPATH) to install it."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = [f"[{group}]"] + [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, code in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(code))


@pytest.fixture
def dist_writer():
    """:func:`make_dist`, for test modules (a conftest is not imported by name)."""
    return make_dist
