"""The grid runner: result store, resumption, failures, supervision hygiene, and a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark import store
from benchmark.api import Method
from benchmark.catalog import METHODS
from benchmark.cli import main
from benchmark.profiles import get_profile
from benchmark.runner import GridConfig, Runner

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "patch-cache"))


class FailingMethod(Method):
    name = "test-always-fails"
    description = "raises in fit (runner test)"

    def fit(self, data, **kw):
        raise RuntimeError("deliberate failure for the runner test")

    def predict(self, images):
        return [np.zeros(i.shape[:2], np.int32) for i in images]


class ProbeMethod(Method):
    """Records what it was given; predicts nothing."""

    name = "test-probe"
    description = "records what fit receives (runner test)"
    seen: dict = {}

    def fit(self, data, **kw):
        ProbeMethod.seen[type(self).__name__] = {
            "unlabeled_labels": [p.label is not None for p in data.unlabeled],
            "unlabeled_points": [p.points is not None for p in data.unlabeled],
            "unlabeled_boxes": [p.boxes is not None for p in data.unlabeled],
            "n_labeled": len(data.labeled),
        }

    def predict(self, images):
        return [np.zeros(i.shape[:2], np.int32) for i in images]


class PointsProbe(ProbeMethod):
    name = "test-probe-points"
    needs = frozenset({"points"})


@pytest.fixture
def test_methods():
    for cls in (FailingMethod, ProbeMethod, PointsProbe):
        METHODS.register(cls.name, cls, dist="tests")
    yield
    for cls in (FailingMethod, ProbeMethod, PointsProbe):
        METHODS._entries.pop(cls.name, None)


def grid(tmp_path, methods, ratios=("1/8",), **kw):
    return GridConfig(methods=list(methods), datasets=["synthetic"], ratios=list(ratios), seeds=[0],
                      profile=get_profile("smoke"), out=tmp_path / "results", progress=False, **kw)


def test_cells_are_written_and_not_recomputed(tmp_path):
    cfg = grid(tmp_path, ["watershed"], ratios=("1/8", "1/2"))
    assert Runner(cfg, echo=lambda m: None).run() == 0
    done = sorted((tmp_path / "results").glob("synthetic/*/watershed/*/done.json"))
    assert len(done) == 2
    cell_dir = done[0].parent
    for name in ("cell.json", "env.json", "run.log", "predictions.npz", "metrics_patch.csv",
                 "metrics_image.csv", "examples.npz"):
        assert (cell_dir / name).exists(), name
    env = __import__("json").loads((cell_dir / "env.json").read_text())
    assert env["packages"]["numpy"] and "suite_git_commit" in env
    mtimes = [p.stat().st_mtime_ns for p in done]
    messages = []
    assert Runner(cfg, echo=messages.append).run() == 0
    assert "2 already done, 0 to run" in messages[0]
    assert [p.stat().st_mtime_ns for p in done] == mtimes
    # --force recomputes
    cfg.force = True
    Runner(cfg, echo=lambda m: None).run()
    assert [p.stat().st_mtime_ns for p in done] != mtimes


def test_failing_cell_is_recorded_and_grid_goes_on(tmp_path, test_methods):
    cfg = grid(tmp_path, ["test-always-fails", "watershed"])
    assert Runner(cfg, echo=lambda m: None).run() == 1
    failed = list((tmp_path / "results").glob("synthetic/1-8/test-always-fails/*/failed.json"))
    assert len(failed) == 1 and "deliberate failure" in failed[0].read_text()
    assert list((tmp_path / "results").glob("synthetic/1-8/watershed/*/done.json"))
    from benchmark.reports import build_report

    build_report(tmp_path / "results", tmp_path / "rep", figures=False)
    t1 = (tmp_path / "rep" / "table1.md").read_text()
    assert "| test-always-fails | failed | failed | failed |" in t1


def test_undeclared_needs_never_see_unlabeled_annotations(tmp_path, test_methods):
    ProbeMethod.seen.clear()
    Runner(grid(tmp_path, ["test-probe", "test-probe-points"]), echo=lambda m: None).run()
    plain, points = ProbeMethod.seen["ProbeMethod"], ProbeMethod.seen["PointsProbe"]
    assert plain["unlabeled_points"] and not any(plain["unlabeled_points"])
    assert not any(plain["unlabeled_boxes"]) and not any(plain["unlabeled_labels"])
    assert all(points["unlabeled_points"]) and not any(points["unlabeled_boxes"])
    assert not any(points["unlabeled_labels"]), "points may be given, never the masks"


def test_cli_run_exit_code_and_dry_run(tmp_path, capsys):
    out = tmp_path / "results"
    args = ["run", "--methods", "watershed", "--datasets", "synthetic", "--ratios", "1/8", "--out", str(out),
            "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--dry-run"]) == 0
    assert "done" in capsys.readouterr().out


@pytest.mark.slow
def test_sigkill_mid_grid_then_resume_equals_uninterrupted(tmp_path):
    """A real SIGKILL of ``benchmark run`` between cells; the re-run skips finished cells and the
    final Table 1 equals that of an uninterrupted run."""
    from benchmark.check import tiny_profile_args

    env = dict(os.environ, PYTHONPATH=str(REPO), NUCLEI_SSL_BENCH_CACHE=str(tmp_path / "cache"))
    base = [sys.executable, "-m", "benchmark", "run", "--methods", "watershed,maskrcnn",
            "--datasets", "synthetic", "--ratios", "1/8,1/2",
            *tiny_profile_args(iterations=12, checkpoint_every=4), "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + ["--out", str(killed)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    # kill once the first maskrcnn cell has finished and the next one has started
    while time.time() < deadline:
        done = list(killed.glob("synthetic/*/maskrcnn/*/done.json"))
        ckpts = list(killed.glob("synthetic/*/maskrcnn/*/work/*.pt"))
        if done and len({c.parents[1] for c in ckpts}) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.2)
    else:
        pytest.fail("timed out waiting for the first cell")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in killed.glob("synthetic/*/*/*/done.json")}
    assert 1 <= len(finished) < 4
    r = subprocess.run(base + ["--out", str(killed)], env=env, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(finished)} already done" in r.stderr
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was recomputed"
    clean = tmp_path / "clean"
    r2 = subprocess.run(base + ["--out", str(clean)], env=env, cwd=REPO, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr[-2000:]
    from benchmark.reports import build_report

    build_report(killed, tmp_path / "rep-killed", figures=False)
    build_report(clean, tmp_path / "rep-clean", figures=False)
    a = (tmp_path / "rep-killed" / "table1.md").read_text()
    b = (tmp_path / "rep-clean" / "table1.md").read_text()
    assert "maskrcnn" in a and a == b


@pytest.mark.slow
def test_a_full_disk_stops_the_grid_with_the_fix_and_the_rerun_resumes(small_disk, tmp_path):
    import json

    from benchmark.check import tiny_profile_args

    env = dict(os.environ, PYTHONPATH=str(REPO), NUCLEI_SSL_BENCH_CACHE=str(tmp_path / "cache"))
    out = small_disk / "store"
    base = [sys.executable, "-m", "benchmark", "run", "--methods", "watershed,maskrcnn", "--datasets",
            "synthetic", "--ratios", "1/8,1/4", *tiny_profile_args(), "--quiet", "--out", str(out)]
    r = subprocess.run(base, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "inline_container" not in r.stderr
    assert f"grid stopped: no space left on the disk holding {out}" in r.stderr
    assert "Finished cells are kept" in r.stderr and "re-run the same command" in r.stderr
    (failed,) = out.glob("synthetic/*/maskrcnn/*/failed.json")
    assert json.loads(failed.read_text())["error"].startswith("DiskFullError: no space left")
    assert len(list(out.glob("synthetic/*/maskrcnn/*/cell.json"))) == 1, "the grid went on after a full disk"
    finished = {p: p.stat().st_mtime_ns for p in out.glob("synthetic/*/*/*/done.json")}
    assert len(finished) == 1, "the watershed cell before it (no checkpoint) fits and is kept"
    subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], check=True)  # space freed
    r = subprocess.run(base, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 already done" in r.stderr and len(list(out.glob("synthetic/*/*/*/done.json"))) == 4
    assert not list(out.glob("synthetic/*/*/*/failed.json"))
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was recomputed"


def test_a_store_on_a_disk_already_full_stops_at_the_first_write(small_disk, tmp_path, capsys):
    """The first write (the cell's lock file) is outside the cell's own error handling: still the message."""
    with open(small_disk / "filler", "wb", buffering=0) as fh, pytest.raises(OSError):
        while True:
            fh.write(b"\0" * 2**20)
    out = small_disk / "store"
    code = main(["run", "--methods", "watershed", "--datasets", "synthetic", "--ratios", "1/8", "--quiet",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and f"grid stopped: no space left on the disk holding {out}" in err, err
    assert "0 MB free now" in err and "Traceback" not in err


def test_cells_are_evaluated_on_val_too_and_recipe_enters_key_only_when_not_paper(tmp_path):
    import json

    import pandas as pd

    cfg = grid(tmp_path, ["watershed"])
    assert Runner(cfg, echo=lambda m: None).run() == 0
    (paper_dir,) = (tmp_path / "results").glob("synthetic/1-8/watershed/*")
    val = pd.read_csv(paper_dir / "metrics_val.csv")
    assert len(val) == 54 and set(val.image_id.str.rpartition("@")[0]).isdisjoint(
        set(pd.read_csv(paper_dir / "metrics_patch.csv").image_id.str.rpartition("@")[0]))
    done = json.loads((paper_dir / "done.json").read_text())
    assert done["n_val_patches"] == 54
    cell = json.loads((paper_dir / "cell.json").read_text())
    assert cell["split_recipe"] == "paper"
    key = Runner(cfg).cell_key(__import__("benchmark.runner", fromlist=["CellSpec"]).CellSpec(
        "watershed", "synthetic", "1/8", 0))
    assert "split_recipe" not in key, "paper cells keep their pre-recipe keys"
    assert key["split_hash"] == store.stable_hash(json.loads(
        (Path(__file__).resolve().parents[2] / "splits" / "synthetic.json").read_text()), 16)

    img_cfg = grid(tmp_path, ["watershed"], split_recipe="image")
    assert Runner(img_cfg, echo=lambda m: None).run() == 0
    dirs = sorted((tmp_path / "results").glob("synthetic/1-8/watershed/*"))
    assert len(dirs) == 2, "the image recipe is a different cell"
    image_dir = next(d for d in dirs if d != paper_dir)
    icell = json.loads((image_dir / "cell.json").read_text())
    assert icell["split_recipe"] == "image" and icell["split_hash"] != cell["split_hash"]
    assert json.loads((image_dir / "done.json").read_text())["n_labeled"] == 18  # 2 whole images x 9
    from benchmark.reports import build_report

    build_report(tmp_path / "results", tmp_path / "rep", figures=False)
    t1 = (tmp_path / "rep" / "table1.md").read_text()
    assert "split recipe image" in t1 and "split recipe paper" in t1
