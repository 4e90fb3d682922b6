"""Executors with real processes: ``local`` workers, submitit's Local/Debug executors, a ``kill -9``
of a worker, two concurrent ``run`` processes on one store, ``benchmark status``, option checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.check import tiny_profile_args
from benchmark.cli import main

REPO = Path(__file__).resolve().parents[2]
WATERSHED = ["--methods", "watershed", "--datasets", "synthetic", "--ratios", "1/8,1/2", "--quiet"]
MIXED = ["--methods", "watershed,maskrcnn", "--datasets", "synthetic", "--ratios", "1/8", "--quiet",
         *tiny_profile_args()]


def _env(tmp_path: Path) -> dict:
    # one thread everywhere: CPU float reductions then do not depend on how many workers share the cores
    plugins = tmp_path / "plugins"  # see test_a_failing_cell_is_recorded_as_inline_and_exits_1
    path = os.pathsep.join([str(REPO)] + ([str(plugins)] if plugins.is_dir() else []))
    return dict(os.environ, PYTHONPATH=path, NUCLEI_SSL_BENCH_CACHE=str(tmp_path / "cache"),
                OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(tmp_path))


def bench(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "benchmark", *args], env=_env(tmp_path), cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def metrics(out: Path) -> dict[str, pd.DataFrame]:
    """``{method/ratio: per-patch metrics}`` of every done cell."""
    found = {}
    for done in sorted(out.glob("synthetic/*/*/*/done.json")):
        cell = json.loads((done.parent / "cell.json").read_text())
        found[f"{cell['method']} {cell['ratio']}"] = pd.read_csv(done.parent / "metrics_patch.csv")
    return found


def fits(out: Path) -> list[int]:
    """How often each cell's ``fit`` ran (``run.log`` is appended by every attempt)."""
    return [log.read_text().count(" INFO fit ") for log in sorted(out.glob("synthetic/*/*/*/run.log"))]


@pytest.mark.parametrize("args, message", [
    (["--executor", "inline", "--workers", "2"], "need --executor local"),
    (["--executor", "bogus"], "available: inline, local, submitit"),
    (["--executor", "local", "--devices", "cuda:0"], "CUDA is not available"),
    (["--executor", "local", "--workers", "0"], "--workers 0"),
    (["--executor", "local", "--wait"], "need --executor submitit"),
    (["--executor", "submitit"], "sbatch is not on PATH"),
    (["--executor", "submitit", "--submitit-cluster", "local", "--slurm-time", "soon"], "--slurm-time"),
    (["--executor", "submitit", "--submitit-cluster", "local", "--slurm-mem", "lots"], "--slurm-mem"),
    (["--executor", "submitit", "--submitit-cluster", "moon"], "available: slurm, local, debug"),
    (["--executor", "submitit", "--submitit-cluster", "local", "--report"], "needs --wait"),
    (["--lock-timeout", "0"], "--lock-timeout"),
])
def test_bad_executor_options_exit_2_before_anything_runs(tmp_path, capsys, args, message):
    out = tmp_path / "results"
    assert main(["run", *WATERSHED, "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists(), "nothing may be written or submitted"


def test_workers_alone_selects_the_local_executor():
    from benchmark.cli import _exec_options, build_parser

    def executor(*flags):
        return _exec_options(build_parser().parse_args(["run", *WATERSHED, *flags])).executor

    assert executor() == "inline"
    assert executor("--workers", "2") == executor("--devices", "cpu") == "local"
    assert executor("--cells-per-device", "2") == "local"
    assert executor("--executor", "submitit") == "submitit"


def test_slurm_time_and_mem_spellings():
    from benchmark.executors import parse_slurm_mem, parse_slurm_time

    assert [parse_slurm_time(t) for t in ("90", "1:30:00", "2-00:00:00", "1-12", "30:00")] == [90, 90, 2880,
                                                                                            2160, 30]
    assert [parse_slurm_mem(m) for m in ("32G", "4096M", "4096", "1T")] == [32, 4, 4, 1024]


@pytest.mark.slow
def test_inline_local_and_submitit_give_identical_metrics(tmp_path):
    """Same grid (watershed + a toy maskrcnn) three ways: inline, 2 local CPU workers, submitit's
    LocalExecutor; every cell's per-patch metrics are identical."""
    t0 = time.time()
    bench(tmp_path, "run", *MIXED, "--out", str(tmp_path / "inline"))
    t1 = time.time()
    r = bench(tmp_path, "run", *MIXED, "--out", str(tmp_path / "local"), "--executor", "local",
              "--devices", "cpu", "--workers", "2")
    t2 = time.time()
    assert "2 local worker(s) (cpu, cpu)" in r.stderr
    bench(tmp_path, "run", *MIXED, "--out", str(tmp_path / "sub"), "--executor", "submitit",
          "--submitit-cluster", "local", "--wait")
    print(f"wall time: inline {t1 - t0:.1f} s, local x2 {t2 - t1:.1f} s, submitit-local {time.time() - t2:.1f} s")
    ref = metrics(tmp_path / "inline")
    assert sorted(ref) == ["maskrcnn 1/8", "watershed 1/8"]
    for other in ("local", "sub"):
        got = metrics(tmp_path / other)
        assert sorted(got) == sorted(ref)
        for key in ref:
            pd.testing.assert_frame_equal(got[key], ref[key], check_exact=True, obj=f"{other}: {key}")


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["local", "debug"])
def test_submitit_runs_a_grid_and_a_rerun_skips_done_cells(tmp_path, cluster):
    out = tmp_path / "results"
    args = ["run", *WATERSHED, "--out", str(out), "--executor", "submitit", "--submitit-cluster", cluster]
    r = bench(tmp_path, *args, "--wait", "--report")
    assert r.stdout.count("submitted job ") == 2
    assert len(list(out.glob("synthetic/*/watershed/*/done.json"))) == 2
    assert "watershed" in (out / "reports" / "table1.md").read_text(), "--report after --wait"
    assert fits(out) == [1, 1]
    ran = [json.loads(p.read_text()) for p in out.glob("synthetic/*/watershed/*/ran_by.json")]
    assert {r["executor"] for r in ran} == {"submitit"} and all(r["job_id"] for r in ran) == (cluster == "local")
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("synthetic/*/*/*/done.json")}
    again = bench(tmp_path, *args)
    assert "2 already done, 0 to submit" in again.stderr and "submitted job" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    status = bench(tmp_path, "status", "--out", str(out)).stdout
    assert "2 cell(s): 0 queued, 0 running, 2 done, 0 failed" in status and "submitit" in status


@pytest.mark.slow
def test_submitit_without_wait_returns_and_status_follows_the_jobs(tmp_path):
    out = tmp_path / "results"
    r = bench(tmp_path, "run", *WATERSHED, "--out", str(out), "--executor", "submitit",
              "--submitit-cluster", "local")
    ids = [line.split()[2].rstrip(":") for line in r.stdout.splitlines() if line.startswith("submitted job")]
    assert len(ids) == 2
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = json.loads(bench(tmp_path, "status", "--out", str(out), "--json").stdout)
        assert len(rows) == 2 and {row["job_id"] for row in rows} == set(ids)
        assert all(row["status"] in ("queued", "running", "done") for row in rows), rows
        if all(row["status"] == "done" for row in rows):
            break
        time.sleep(1)
    else:
        pytest.fail("submitted jobs did not finish")


@pytest.mark.slow
def test_a_full_disk_stops_the_local_executor_handing_out_cells(small_disk, tmp_path):
    out = small_disk / "store"
    r = bench(tmp_path, "run", "--methods", "maskrcnn", "--datasets", "synthetic", "--ratios", "1/8,1/4,1/2",
              "--quiet", *tiny_profile_args(), "--out", str(out), "--workers", "1", check=False)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "stopping: the disk is full" in r.stderr and "grid stopped: no space left" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(list(out.glob("synthetic/*/maskrcnn/*/cell.json"))) == 1, "no cell after the full disk"


@pytest.mark.slow
def test_after_a_full_disk_the_other_submitit_jobs_skip_and_a_resubmission_runs_them(small_disk, tmp_path):
    out = small_disk / "store"
    args = ["run", "--methods", "maskrcnn", "--datasets", "synthetic", "--ratios", "1/8,1/4,1/2", "--quiet",
            *tiny_profile_args(), "--out", str(out), "--executor", "submitit", "--submitit-cluster", "debug"]
    r = bench(tmp_path, *args, check=False)
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stderr.count("error: no space left on the disk holding") == 1
    assert r.stderr.count("skipped: an earlier job of this grid found the disk full") == 2, r.stderr[-3000:]
    assert len(list(out.glob("synthetic/*/maskrcnn/*/cell.json"))) == 1, "the skipped jobs claimed no cell"
    assert (out / ".disk-full.json").is_file()
    subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], check=True)  # space freed
    r = bench(tmp_path, *args)
    assert "skipped" not in r.stderr and len(list(out.glob("synthetic/*/maskrcnn/*/done.json"))) == 3
    assert not (out / ".disk-full.json").exists()


@pytest.mark.slow
def test_kill_9_of_a_local_worker_its_lock_is_taken_over(tmp_path):
    out = tmp_path / "results"
    args = ["-m", "benchmark", "run", "--methods", "maskrcnn", "--datasets", "synthetic", "--ratios", "1/8",
            "--quiet", *tiny_profile_args(iterations=30, checkpoint_every=2), "--out", str(out),
            "--executor", "local", "--devices", "cpu", "--workers", "1"]
    proc = subprocess.Popen([sys.executable, *args], env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline, pid = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        locked = list(out.glob("synthetic/1-8/maskrcnn/*/lock.json"))
        if locked and list(locked[0].parent.glob("work/*.pt")):
            pid = json.loads(locked[0].read_text())["pid"]
            break
        time.sleep(0.2)
    assert pid and pid != proc.pid, "a worker process must hold the lock"
    status = bench(tmp_path, "status", "--out", str(out)).stdout
    assert "running" in status and str(pid) in status and "local" in status
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "a worker died" in stderr
    cell = locked[0].parent
    assert (cell / "done.json").exists() and not (cell / "lock.json").exists()
    assert f"took over a stale lock: pid {pid} is dead" in (cell / "run.log").read_text()


@pytest.mark.slow
def test_two_concurrent_runs_on_one_store_train_each_cell_once(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmark", "run", "--methods", "watershed", "--datasets", "synthetic",
           "--ratios", "1/8,1/4,1/2", "--quiet", "--out", str(out)]
    procs = [subprocess.Popen(cmd, env=_env(tmp_path), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert fits(out) == [1, 1, 1], "a cell was trained twice"
    assert not list(out.glob("synthetic/*/*/*/lock*.json")), "no lock left, none taken over"
    for done in out.glob("synthetic/*/*/*/done.json"):
        json.loads(done.read_text())
        assert len(pd.read_csv(done.parent / "metrics_patch.csv")) > 0
    assert all("grid finished: 3/3 done, 0 failed" in e for e in errs), errs


PLUGIN = """
import numpy as np
from benchmark.api import Method


class AlwaysFails(Method):
    name = "test-always-fails"
    description = "raises in fit (executor test plugin)"

    def fit(self, data, **kw):
        raise RuntimeError("deliberate failure for the executor test")

    def predict(self, images):
        return [np.zeros(i.shape[:2], np.int32) for i in images]
"""




@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--executor", "local", "--devices", "cpu", "--workers", "2"],
                                      ["--executor", "submitit", "--submitit-cluster", "local", "--wait"]])
def test_a_failing_cell_is_recorded_as_inline_and_exits_1(tmp_path, executor, dist_writer):
    # a real installed-style plugin whose fit raises (_env puts tmp_path/plugins on PYTHONPATH)
    dist_writer(tmp_path / "plugins", "failing-plugin", "nuclei_ssl_bench.methods",
                {"test-always-fails": "failing_plugin:AlwaysFails"}, {"failing_plugin": PLUGIN})
    out = tmp_path / "results"
    r = bench(tmp_path, "run", "--methods", "test-always-fails,watershed", "--datasets", "synthetic",
              "--ratios", "1/8", "--quiet", "--out", str(out), *executor, check=False)
    assert r.returncode == 1, r.stderr[-3000:]
    failed = list(out.glob("synthetic/1-8/test-always-fails/*/failed.json"))
    assert len(failed) == 1 and len(list(out.glob("synthetic/1-8/watershed/*/done.json"))) == 1
    record = json.loads(failed[0].read_text())
    assert "deliberate failure" in record["error"] and "Traceback" in record["traceback"]
    status = bench(tmp_path, "status", "--out", str(out)).stdout
    assert "1 done, 1 failed" in status


def test_local_eta_prices_cells_left_by_stage_rates_over_the_workers(tmp_path):
    from types import SimpleNamespace

    from benchmark.executors.local import _Eta
    from benchmark.runner import CellSpec

    runner = SimpleNamespace(cfg=SimpleNamespace(profile=SimpleNamespace(iterations=100)))
    eta = _Eta(runner, workers=2)
    cells = {name: CellSpec(m, "synthetic", r, 0, ()) for name, m, r in (
        ("m8", "maskrcnn", "1/8"), ("m4", "maskrcnn", "1/4"), ("b8", "bass", "1/8"), ("b4", "bass", "1/4"))}
    (tmp_path / "done.json").write_text(json.dumps({  # 1 s per iteration, 1 s per predicted patch
        "fit_seconds": 100.0, "predict_seconds": 10.0, "n_test_patches": 10, "n_unlabeled": 100,
        "fit_info": {"train_seconds_last_call": 100.0}}))
    eta.start(cells["m8"])
    assert eta.text({cells["m8"]: tmp_path}, {}) == ""  # nothing measured: no made-up ETA
    eta.finish(cells["m8"], tmp_path)
    # maskrcnn 1/4: 100 + 10 s; each bass student: + 100 unlabeled patches at the predict rate = 210 s
    # on 2 workers: maskrcnn then a student on one (320 s), the other student on the other (210 s)
    # (priced at maskrcnn's rates, which the ETA says: a BASS student iteration costs more)
    assert eta.text({cells["m4"]: 0, cells["b8"]: 0, cells["b4"]: 0}, {}) == ", ETA 5m20s (bass not measured yet)"
    eta.start(cells["b8"])
    eta.started[cells["b8"]] -= 199.5  # running for ~200 s: ~10 s of it left
    left = eta.text({cells["b8"]: 0, cells["b4"]: 0}, {"future": cells["b8"]})
    # the idle worker takes b4 (210 s) while b8 finishes its last ~10 s
    assert left == ", ETA 3m30s (bass not measured yet)"
    eta.finish(cells["b8"], tmp_path)
    after = eta.text({cells["b4"]: 0}, {})
    assert after.startswith(", ETA ") and "not measured" not in after, "bass is measured now: no caveat"


def test_local_hands_out_teachers_first_so_no_worker_waits_at_the_end():
    from benchmark.executors.local import _next_cells
    from benchmark.runner import CellSpec

    m = {r: CellSpec("maskrcnn", "synthetic", r, 0, ()) for r in ("1/8", "1/4", "1/2")}
    b = {r: CellSpec("bass", "synthetic", r, 0, ()) for r in ("1/8", "1/4", "1/2")}
    # the two first teachers are done: their students are ready, and so is the last teacher
    pending = {b["1/8"]: 0, b["1/4"]: 0, m["1/2"]: 0, b["1/2"]: 0}
    assert _next_cells(pending, {}, 2) == [m["1/2"], b["1/8"]]
    assert _next_cells(pending, {"f": m["1/2"]}, 1) == [b["1/8"]]  # b 1/2 waits for its running teacher
    assert _next_cells(pending, {}, 0) == []
