"""``benchmark status --out STORE``: what every cell of a store is doing.

A cell is ``done`` (``done.json``), ``running`` (a live lock), ``stale`` (a lock whose holder died:
the next ``run`` takes it over), ``failed`` (``failed.json``), ``queued`` (submitted, ``queued.json``,
not started) or ``incomplete`` (started once, nobody on it now: the next ``run`` resumes it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark import locks, store

RAN_BY = "ran_by.json"
_FILES = (store.CELL, locks.LOCK, "queued.json", RAN_BY)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _label(cell: dict | None, queued: dict | None, path: Path) -> str:
    if cell:
        opts = "".join(f" {k}={v}" for k, v in sorted((cell.get("method_options") or {}).items()))
        return f"{cell['method']}{opts} | {cell['dataset']} | {cell['ratio']} | seed {cell['seed']}"
    return (queued or {}).get("cell") or str(path)


def cell_state(path: Path, stale_after: float = locks.DEFAULT_STALE_AFTER) -> dict[str, Any]:
    """One status row for the cell directory ``path``."""
    cell, queued = _read(path / store.CELL), _read(path / "queued.json")
    lock, ran = locks.read_lock(path), _read(path / RAN_BY)
    who = lock or ran or queued or {}
    status = store.cell_status(path)
    if status != "done" and lock is not None:
        status = "stale" if locks.stale_reason(lock, stale_after) else "running"
    elif status == "incomplete" and queued and not cell:
        status = "queued"
    return {
        "status": status, "cell": _label(cell, queued, path),
        "executor": who.get("executor", "-"), "job_id": who.get("job_id") or (queued or {}).get("job_id"),
        "pid": who.get("pid"), "host": who.get("host"), "started": who.get("started") or who.get("submitted"),
        "log": who.get("log") or (queued or {}).get("log") or str(path / "run.log"), "dir": str(path),
    }


def store_status(out: Path) -> list[dict[str, Any]]:
    """Status rows of every cell directory under ``out`` (sorted by path)."""
    dirs = {p.parent for name in _FILES for p in Path(out).glob(f"*/*/*/*/{name}")}
    return [cell_state(d) for d in sorted(dirs)]


def format_status(rows: list[dict[str, Any]]) -> str:
    from collections import Counter

    from tabulate import tabulate

    counts = Counter(r["status"] for r in rows)
    head = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("queued", "running", "done", "failed"))
    extra = "".join(f", {counts[s]} {s}" for s in ("stale", "incomplete") if counts.get(s))
    table = tabulate([[r["status"], r["cell"], r["executor"], r["job_id"] or "-", r["pid"] or "-",
                       r["host"] or "-", r["started"] or "-", r["log"]] for r in rows],
                     headers=["status", "cell", "executor", "job", "pid", "host", "started", "log"])
    return f"{len(rows)} cell(s): {head}{extra}\n{table}"
