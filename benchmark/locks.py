"""Cell locks: a result store that is safe under concurrent writers.

A worker (an inline ``run``, a ``local`` worker process, a submitit/SLURM job) claims a cell before it
trains it by creating ``<cell>/lock.json`` with ``O_CREAT | O_EXCL``. The lock records host, pid, job
id, executor, start time and log path; its holder refreshes its modification time every
``heartbeat`` seconds. Every create, take-over and release happens while holding an exclusive
``fcntl.flock`` on ``<cell>/.lock.guard``, so a stale lock is removed by one process only and never
after a live holder has replaced it.

A lock is *stale* (and is taken over, the old record kept as ``lock.stale-<time>.json``) when

- its pid is dead (or a zombie) and it was taken on this host;
- its heartbeat is older than ``stale_after`` seconds (a dead holder on another host);
- its SLURM job has ended (``squeue`` no longer lists it; checked only where ``squeue`` exists).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK = "lock.json"
GUARD = ".lock.guard"
#: Seconds without a heartbeat after which a lock from another host is stale.
DEFAULT_STALE_AFTER = 1800.0
#: Seconds between heartbeats (modification-time refreshes) of a held lock.
DEFAULT_HEARTBEAT = 30.0


def hostname() -> str:
    return socket.gethostname()


def current_job_id() -> tuple[str | None, str | None]:
    """``(job id, scheduler)`` of the SLURM or submitit-local job this process runs in, if any."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}", "slurm"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"], "slurm"
    if env.get("SUBMITIT_LOCAL_JOB_ID"):
        return env["SUBMITIT_LOCAL_JOB_ID"], "submitit-local"
    return None, None


@contextmanager
def _guard(cell_dir: Path):
    cell_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cell_dir / GUARD, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_lock(cell_dir: Path) -> dict[str, Any] | None:
    """The lock record of ``cell_dir`` (with ``age_s``: seconds since its last heartbeat), or ``None``."""
    path = Path(cell_dir) / LOCK
    try:
        info = json.loads(path.read_text())
        info["age_s"] = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        # being written right now (seen outside the guard only), or its writer died mid-claim
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            age = 0.0
        return {"host": "?", "pid": None, "claiming": True, "age_s": age}
    return info


def pid_alive(pid: int) -> bool:
    """``True`` if ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def slurm_job_ended(job_id: str) -> bool | None:
    """``True`` if SLURM no longer runs ``job_id``; ``None`` where ``squeue`` is unavailable."""
    if not shutil.which("squeue"):
        return None
    try:
        r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    state = r.stdout.strip()
    return r.returncode != 0 or state == "" or state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def stale_reason(info: dict[str, Any], stale_after: float = DEFAULT_STALE_AFTER) -> str | None:
    """Why the lock ``info`` (from :func:`read_lock`) is stale, or ``None`` if its holder may be alive."""
    if info.get("claiming"):
        return f"unreadable lock for {info['age_s']:.0f} s" if info["age_s"] > 60 else None
    pid, host = info.get("pid"), info.get("host")
    if host == hostname() and isinstance(pid, int) and not pid_alive(pid):
        return f"pid {pid} is dead on {host}"
    if info.get("age_s", 0.0) > stale_after:
        return f"no heartbeat for {info['age_s']:.0f} s (> {stale_after:.0f} s)"
    if info.get("scheduler") == "slurm" and info.get("job_id"):
        if slurm_job_ended(str(info["job_id"])):
            return f"SLURM job {info['job_id']} has ended"
    return None


class CellLock:
    """A held cell lock. Release with :meth:`release` (or use as a context manager)."""

    def __init__(self, cell_dir: Path, info: dict[str, Any], heartbeat: float, took_over: str | None):
        self.cell_dir = Path(cell_dir)
        self.info = info
        self.took_over = took_over  #: the stale reason of the lock this one replaced, if any
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                os.utime(self.cell_dir / LOCK)
            except OSError:
                return

    def owned(self) -> bool:
        cur = read_lock(self.cell_dir)
        return bool(cur) and cur.get("token") == self.info["token"]

    def release(self) -> None:
        self._stop.set()
        with _guard(self.cell_dir):
            if self.owned():
                (self.cell_dir / LOCK).unlink(missing_ok=True)

    def __enter__(self) -> CellLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(
    cell_dir: Path,
    *,
    executor: str = "inline",
    log: Path | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
    heartbeat: float = DEFAULT_HEARTBEAT,
) -> CellLock | None:
    """Claim ``cell_dir`` now: the held :class:`CellLock`, or ``None`` if a live holder has it."""
    cell_dir = Path(cell_dir)
    job_id, scheduler = current_job_id()
    info = {
        "host": hostname(), "pid": os.getpid(), "job_id": job_id, "scheduler": scheduler,
        "executor": executor, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "started_unix": time.time(), "log": str(log) if log else None, "token": uuid.uuid4().hex,
    }
    with _guard(cell_dir):
        took_over = None
        current = read_lock(cell_dir)
        if current is not None:
            took_over = stale_reason(current, stale_after)
            if took_over is None:
                return None
            current["stale_reason"] = took_over
            stamp = time.strftime("%Y%m%dT%H%M%S")
            (cell_dir / f"lock.stale-{stamp}-{uuid.uuid4().hex[:6]}.json").write_text(json.dumps(current))
            (cell_dir / LOCK).unlink()
        fd = os.open(cell_dir / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
    return CellLock(cell_dir, info, heartbeat, took_over)


def claim(
    cell_dir: Path,
    *,
    until: Callable[[], bool] = lambda: False,
    poll: float = 1.0,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
    **kwargs: Any,
) -> CellLock | None:
    """Claim ``cell_dir``, waiting while a live holder has it. Returns ``None`` as soon as ``until()``
    is true (e.g. the holder finished the cell). ``on_wait`` is called once with the holder's record."""
    told = False
    while True:
        lock = try_claim(cell_dir, **kwargs)
        if lock is not None:
            return lock
        if until():
            return None
        if on_wait and not told:
            on_wait(read_lock(cell_dir) or {})
            told = True
        time.sleep(poll)
