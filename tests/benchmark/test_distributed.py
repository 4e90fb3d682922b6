"""DDP for one cell with real ``torchrun`` processes (gloo on CPU): a toy maskrcnn cell to the end,
the same labeled subset / pseudo-labels / weights on every rank, and a resume after ``kill -9``."""

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

from benchmark import distributed
from benchmark.check import tiny_profile_args
from benchmark.cli import main

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict:
    # TMPDIR: torchrun leaves a torchelastic_* log folder in the temp dir; this keeps it in tmp_path
    return dict(os.environ, PYTHONPATH=str(REPO), NUCLEI_SSL_BENCH_CACHE=str(tmp_path / "cache"),
                OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))


def torchrun(method: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "benchmark", "run", "--methods", method, "--datasets", "synthetic", "--ratios", "1/8",
            "--quiet", "--out", str(out), *extra]


def run(tmp_path: Path, cmd: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cell(out: Path, method: str) -> Path:
    (found,) = list(out.glob(f"synthetic/1-8/{method}/*/done.json"))
    return found.parent


def ranks_agree(ddp: dict, *kinds: str) -> None:
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo" and ddp["ok"] == [True, True]
    r0, r1 = ddp["ranks"]
    for kind in kinds:
        assert r0[kind] and r0[kind] == r1[kind], f"{kind} differs between ranks: {r0[kind]} vs {r1[kind]}"


def test_single_process_helpers_are_identities():
    assert distributed.context() is None and distributed.lr_factor() == 1.0 and distributed.describe() is None
    assert distributed.shard_map(lambda xs: [x * 2 for x in xs], [1, 2, 3]) == [2, 4, 6]
    assert distributed.all_gather("a") == ["a"] and distributed.broadcast(5) == 5
    assert distributed.all_failed() is False


def test_bad_ddp_options_exit_2(tmp_path, capsys, monkeypatch):
    base = ["run", "--methods", "watershed", "--datasets", "synthetic", "--ratios", "1/8",
            "--out", str(tmp_path / "r")]
    assert main(base + ["--ddp-lr-scaling", "sqrt"]) == 2
    assert "available: linear, none" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(base + ["--executor", "local"]) == 2
    assert "under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    for bad in ("soon", "0", "-5", "nan"):
        monkeypatch.setenv("NUCLEI_SSL_BENCH_DDP_AGREE_SECONDS", bad)
        with pytest.raises(ValueError, match=r"NUCLEI_SSL_BENCH_DDP_AGREE_SECONDS=.*positive number"):
            distributed.agree_seconds()
    monkeypatch.setenv("NUCLEI_SSL_BENCH_DDP_AGREE_SECONDS", "7.5")
    assert distributed.agree_seconds() == 7.5


@pytest.mark.slow
def test_torchrun_a_full_disk_ends_every_rank_instead_of_hanging(small_disk, tmp_path):
    """The rank whose write fails enters no collective (the other may be in a gradient all-reduce): it
    exits with the message, and torchrun stops the other rank."""
    out = small_disk / "store"
    t0 = time.time()
    r = subprocess.run(torchrun("maskrcnn", out, *tiny_profile_args()), env=_env(tmp_path), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and time.time() - t0 < 240
    assert "grid stopped: no space left on the disk holding" in r.stderr, r.stderr[-3000:]
    assert not list(out.glob("synthetic/1-8/maskrcnn/*/done.json"))
    assert not list(out.glob("synthetic/1-8/maskrcnn/*/lock.json")), "the lock is released"


RANK1_FAILS = """
import time

import numpy as np
import torch
import torch.distributed as dist
from benchmark.api import Method


class RankOneFails(Method):
    name = "test-rank1-fails"
    description = "all-reduces like a DDP training loop; rank 1 raises at step 5 (torchrun test plugin)"

    def fit(self, data, **kw):
        for step in range(600):
            if dist.get_rank() == 1 and step == 5:
                raise RuntimeError("deliberate failure on rank 1")
            dist.all_reduce(torch.ones(4))
            time.sleep(0.01)

    def predict(self, images):
        return [np.zeros(i.shape[:2], np.int32) for i in images]


class EveryRankFails(RankOneFails):
    name = "test-every-rank-fails"
    description = "every rank raises at step 5, as a diverged loss does (torchrun test plugin)"

    def fit(self, data, **kw):
        for _step in range(5):
            dist.all_reduce(torch.ones(4))
        raise RuntimeError("deliberate failure on every rank")
"""


def _plugin_env(tmp_path: Path, dist_writer) -> dict:
    plugins = tmp_path / "plugins"
    dist_writer(plugins, "ddp-plugins", "nuclei_ssl_bench.methods", {
        "test-rank1-fails": "ddp_plugins:RankOneFails", "test-every-rank-fails": "ddp_plugins:EveryRankFails"},
        {"ddp_plugins": RANK1_FAILS})
    # a failing rank waits this long for the others to report the same failure (default 60 s)
    return dict(_env(tmp_path), PYTHONPATH=os.pathsep.join([str(REPO), str(plugins)]),
                NUCLEI_SSL_BENCH_DDP_AGREE_SECONDS="5")


@pytest.mark.slow
def test_torchrun_a_cell_failing_on_one_rank_ends_the_run_instead_of_hanging(tmp_path, dist_writer):
    """Rank 0 is inside an all-reduce when rank 1 fails: rank 1 must exit (torchrun then stops rank 0)
    rather than wait in a gather that rank 0 never reaches."""
    env = _plugin_env(tmp_path, dist_writer)
    t0 = time.time()
    r = subprocess.run(torchrun("test-rank1-fails", tmp_path / "out"), env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and time.time() - t0 < 240, r.stderr[-3000:]
    assert "grid stopped: test-rank1-fails | synthetic | 1/8 | seed 0 failed on rank 1" in r.stderr, r.stderr[-3000:]
    assert "deliberate failure on rank 1" in r.stderr


@pytest.mark.slow
def test_torchrun_a_cell_failing_on_every_rank_is_recorded_and_the_grid_goes_on(tmp_path, dist_writer):
    """Every rank fails the cell (as a diverged loss does: it is detected on all ranks at once): they agree
    on it, rank 0 records it, and the next cell runs, as in a single-process grid."""
    out = tmp_path / "out"
    env = _plugin_env(tmp_path, dist_writer)
    r = subprocess.run(torchrun("test-every-rank-fails,watershed", out), env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0, r.stderr[-3000:]
    assert "grid stopped" not in r.stderr and "grid finished: 1/2 done, 1 failed" in r.stderr, r.stderr[-3000:]
    (failed,) = out.glob("synthetic/1-8/test-every-rank-fails/*/failed.json")
    assert "deliberate failure on every rank" in json.loads(failed.read_text())["error"]
    assert json.loads((failed.parent / "ddp.json").read_text())["ok"] == [False, False]
    assert not list(failed.parent.glob(".ddp-rank*")) and not (failed.parent / "lock.json").exists()
    assert len(list(out.glob("synthetic/1-8/watershed/*/done.json"))) == 1


@pytest.mark.slow
def test_torchrun_two_ranks_train_a_toy_maskrcnn_cell(tmp_path):
    out = tmp_path / "ddp"
    run(tmp_path, torchrun("maskrcnn", out, *tiny_profile_args()))
    path = cell(out, "maskrcnn")
    key = json.loads((path / "cell.json").read_text())["ddp"]
    assert key == {"world_size": 2, "backend": "gloo", "lr_scaling": "linear", "lr_factor": 2.0,
                   "per_rank_batch": "profile.batch_size", "global_batch": "2 x profile.batch_size"}
    ranks_agree(json.loads((path / "ddp.json").read_text()), "labeled", "maskrcnn_weights")
    assert not list(path.glob(".ddp-rank*")), "rank 1's scratch directory is removed"
    assert not (path / "lock.json").exists()
    # --ddp-lr-scaling none is another cell (its key differs), recorded as such
    run(tmp_path, torchrun("maskrcnn", out, *tiny_profile_args(), "--ddp-lr-scaling", "none"))
    keys = [json.loads(p.read_text())["ddp"] for p in out.glob("synthetic/1-8/maskrcnn/*/cell.json")]
    assert sorted(k["lr_factor"] for k in keys) == [1.0, 2.0]


@pytest.mark.slow
def test_torchrun_pseudo_labels_are_sharded_and_identical_on_every_rank(tmp_path):
    out = tmp_path / "ddp"
    run(tmp_path, torchrun("bass", out, *tiny_profile_args()))
    bass = json.loads((cell(out, "bass") / "ddp.json").read_text())
    ranks_agree(bass, "labeled", "pseudo_labels", "student_weights")
    teacher = json.loads((cell(out, "maskrcnn") / "ddp.json").read_text())
    ranks_agree(teacher, "labeled", "maskrcnn_weights")


@pytest.mark.slow
def test_torchrun_cell_resumes_after_kill_9(tmp_path):
    args = tiny_profile_args(iterations=24, checkpoint_every=2)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(torchrun("maskrcnn", killed, *args), env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if list(killed.glob("synthetic/1-8/maskrcnn/*/work/maskrcnn_checkpoint.pt")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    ranks = children(proc.pid)  # torchrun starts its ranks in sessions of their own
    assert len(ranks) == 2
    for pid in [proc.pid, *ranks]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    (path,) = [p.parents[1] for p in killed.glob("synthetic/1-8/maskrcnn/*/work/maskrcnn_checkpoint.pt")]
    assert not (path / "done.json").exists()
    run(tmp_path, torchrun("maskrcnn", killed, *args))
    info = json.loads((path / "work" / "model.json").read_text())
    assert info["resumed_from"] > 0 and info["iterations"] == 24
    assert "took over a stale lock" in (path / "run.log").read_text()
    ranks_agree(json.loads((path / "ddp.json").read_text()), "labeled", "maskrcnn_weights")
    clean = tmp_path / "clean"
    run(tmp_path, torchrun("maskrcnn", clean, *args))
    pd.testing.assert_frame_equal(pd.read_csv(path / "metrics_patch.csv"),
                                  pd.read_csv(cell(clean, "maskrcnn") / "metrics_patch.csv"), check_exact=True)
