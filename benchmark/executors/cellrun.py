"""``run_locked``: the one entry point every executor calls to train a cell.

It claims the cell's lock (:mod:`benchmark.locks`), re-checks the store under the lock (another
process may have finished the cell meanwhile), runs :meth:`benchmark.runner.Runner.run_cell` and
releases the lock. Inline runs, ``local`` worker processes and submitit jobs all go through here, so
no two of them ever train the same cell (teachers included) at the same time.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import distributed, locks, store

if TYPE_CHECKING:
    from benchmark.runner import CellSpec, Runner

log = logging.getLogger("benchmark.executors")

DONE, FAILED, BUSY = "done", "failed", "busy"


def _holder_text(info: dict[str, Any]) -> str:
    job = f", job {info['job_id']}" if info.get("job_id") else ""
    return f"{info.get('executor', '?')} pid {info.get('pid')} on {info.get('host')}{job}"


def run_locked(runner: Runner, cell: CellSpec, path: Path, *, wait: bool) -> str:
    """Claim, run and release one cell.

    Args:
        runner: the :class:`~benchmark.runner.Runner` whose config the cell belongs to.
        cell, path: the cell and its store directory.
        wait: wait while another live process holds the cell (``False``: return ``"busy"``).

    Returns:
        ``"done"`` (trained now, or found done under the lock), ``"failed"`` (``failed.json``
        written) or ``"busy"`` (only with ``wait=False``).

    Raises:
        benchmark.store.DiskFullError: a write ran out of space (the lock, the cell's files, a
            checkpoint); the caller stops the grid.
    """
    try:
        return _run_locked(runner, cell, path, wait=wait)
    except OSError as exc:  # the lock file, ran_by.json, run.log: outside run_cell's own handler
        full = store.disk_full(exc, path)
        if full is None or full is exc:
            raise
        raise full from exc


def _run_locked(runner: Runner, cell: CellSpec, path: Path, *, wait: bool) -> str:
    cfg = runner.cfg
    kwargs = dict(executor=getattr(runner, "executor_name", "inline"), log=path / "run.log",
                  stale_after=cfg.lock_timeout)
    ctx = distributed.context()
    if ctx is not None:
        return _run_locked_ddp(runner, cell, path, ctx, kwargs)
    if wait:
        lock = locks.claim(
            path, until=lambda: _is_done(runner, path),
            on_wait=lambda info: runner.echo(f"  waiting: {cell.label()} is held by {_holder_text(info)}"),
            **kwargs)
    else:
        lock = locks.try_claim(path, **kwargs)
    if lock is None:
        return DONE if _is_done(runner, path) else BUSY
    try:
        if lock.took_over:
            runner.echo(f"  took over the stale lock of {cell.label()}: {lock.took_over}")
            _log_takeover(path, lock.took_over)
        if _is_done(runner, path) and not (cfg.force and not _forced(runner, path)):
            return DONE
        if cfg.force:
            _forced(runner, path, mark=True)
        ok = runner.run_cell(cell, path)
        store.atomic_write_json(path / "ran_by.json", {
            **{k: v for k, v in lock.info.items() if k != "token"},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "outcome": DONE if ok else FAILED})
        return DONE if ok else FAILED
    finally:
        lock.release()


def _is_done(runner: Runner, path: Path) -> bool:
    """Done, and not found damaged by this run's plan (a damaged cell is recomputed)."""
    return store.cell_status(path) == "done" and path not in getattr(runner, "_damage", {})


def _forced(runner: Runner, path: Path, mark: bool = False) -> bool:
    """``--force`` recomputes a cell once per ``run``, not once per worker that meets it."""
    seen = runner.__dict__.setdefault("_forced_paths", set())
    if mark:
        seen.add(path)
    return path in seen


def _log_takeover(path: Path, reason: str) -> None:
    with open(path / "run.log", "a") as fh:
        fh.write(f"took over a stale lock: {reason}\n")


def record_crash(path: Path, exc: BaseException, what: str) -> None:
    """``failed.json`` for a cell whose job/worker died outside ``run_cell`` (it never got that far)."""
    store.atomic_write_json(path / store.FAILED, {
        "error": f"{what}: {type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)),
        "seconds": None,
    })


def _train_ddp(runner: Runner, cell: CellSpec, path: Path, ctx, lock) -> str:
    """Every rank trains the cell; rank 0 writes it and its ``ddp.json`` / ``ran_by.json``."""
    import shutil

    _forced(runner, path, mark=True)
    target = path if ctx.rank == 0 else path / f".ddp-rank{ctx.rank}"
    distributed.take_notes()
    ok = runner.run_cell(cell, target)
    oks = distributed.all_gather(ok)
    notes = distributed.all_gather(distributed.take_notes())
    if ctx.rank == 0:
        store.atomic_write_json(path / "ddp.json", {**(distributed.describe() or {}), "ranks": notes, "ok": oks})
        store.atomic_write_json(path / "ran_by.json", {
            **{k: v for k, v in lock.info.items() if k != "token"}, "ddp_ranks": ctx.world,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "outcome": DONE if oks[0] else FAILED})
    else:
        shutil.rmtree(target, ignore_errors=True)
    return DONE if oks[0] else FAILED


def _run_locked_ddp(runner: Runner, cell: CellSpec, path: Path, ctx, kwargs: dict) -> str:
    """Under DDP: rank 0 claims (waiting) and decides; every rank trains; rank 0 alone writes the cell,
    rank ``r > 0`` works in ``<cell>/.ddp-rank<r>/`` (removed afterwards)."""
    lock = None
    if ctx.rank == 0:
        lock = locks.claim(path, until=lambda: _is_done(runner, path), **kwargs)
        if lock is not None and lock.took_over:
            _log_takeover(path, lock.took_over)
    needed = lock is not None and (not _is_done(runner, path) or
                                   (runner.cfg.force and not _forced(runner, path)))
    try:
        outcome = _train_ddp(runner, cell, path, ctx, lock) if distributed.broadcast(needed) else DONE
    except BaseException:
        # no collective now: the other ranks may be inside one (a gradient all-reduce), so a barrier here
        # would hang them all. This rank exits, and torchrun stops the others (a full disk, say).
        if lock is not None:
            lock.release()
        raise
    try:
        distributed.barrier()
    finally:
        if lock is not None:
            lock.release()
    return outcome
