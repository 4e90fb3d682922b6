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


def test_bad_ddp_options_exit_2(tmp_path, capsys, monkeypatch):
    base = ["run", "--methods", "watershed", "--datasets", "synthetic", "--ratios", "1/8",
            "--out", str(tmp_path / "r")]
    assert main(base + ["--ddp-lr-scaling", "sqrt"]) == 2
    assert "available: linear, none" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(base + ["--executor", "local"]) == 2
    assert "under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


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
