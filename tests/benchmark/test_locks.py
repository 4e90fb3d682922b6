"""Cell locks with real processes: exclusive claims, stale take-over, heartbeat, racing claimers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmark import locks

REPO = Path(__file__).resolve().parents[2]

HOLD = """
import sys, time
from benchmark import locks
lock = locks.try_claim(sys.argv[1], executor="test")
print("claimed" if lock else "busy", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _spawn(cell: Path, hold: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", HOLD, str(cell), str(hold)], env=env,
                            stdout=subprocess.PIPE, text=True)


def test_claim_is_exclusive_and_records_its_holder(tmp_path):
    first = locks.try_claim(tmp_path / "cell", executor="inline", log=tmp_path / "cell" / "run.log")
    assert first is not None and first.took_over is None
    info = locks.read_lock(tmp_path / "cell")
    assert info["pid"] == os.getpid() and info["host"] == locks.hostname()
    assert info["executor"] == "inline" and info["started"] and info["log"].endswith("run.log")
    assert locks.try_claim(tmp_path / "cell") is None, "a live holder keeps its cell"
    first.release()
    assert locks.read_lock(tmp_path / "cell") is None
    again = locks.try_claim(tmp_path / "cell")
    assert again is not None
    again.release()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    cell = tmp_path / "cell"
    proc = _spawn(cell, 60)
    assert proc.stdout.readline().strip() == "claimed"
    assert locks.try_claim(cell) is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = locks.try_claim(cell)
    assert lock is not None and f"pid {proc.pid} is dead" in lock.took_over
    stale = list(cell.glob("lock.stale-*.json"))
    assert len(stale) == 1 and json.loads(stale[0].read_text())["pid"] == proc.pid
    lock.release()


def test_lock_from_another_host_goes_stale_without_heartbeat(tmp_path):
    cell = tmp_path / "cell"
    cell.mkdir()
    record = {"host": "some-other-node", "pid": 1, "job_id": None, "executor": "local", "token": "x"}
    (cell / locks.LOCK).write_text(json.dumps(record))
    assert locks.try_claim(cell, stale_after=600) is None, "fresh heartbeat: still held"
    old = time.time() - 3600
    os.utime(cell / locks.LOCK, (old, old))
    lock = locks.try_claim(cell, stale_after=600)
    assert lock is not None and "no heartbeat" in lock.took_over
    lock.release()


def test_heartbeat_keeps_a_long_hold_fresh(tmp_path):
    lock = locks.try_claim(tmp_path / "cell", heartbeat=0.2)
    old = time.time() - 3600
    os.utime(tmp_path / "cell" / locks.LOCK, (old, old))
    time.sleep(0.8)
    assert locks.read_lock(tmp_path / "cell")["age_s"] < 5
    lock.release()


def test_racing_processes_claim_once(tmp_path):
    cell = tmp_path / "cell"
    procs = [_spawn(cell, 6) for _ in range(4)]
    answers = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.wait()
    assert sorted(answers) == ["busy", "busy", "busy", "claimed"]
