"""``--executor local``: the grid on worker processes of this machine.

A :class:`concurrent.futures.ProcessPoolExecutor` (``spawn`` start method: CUDA cannot be forked)
with one worker per slot: ``--devices cuda:0,cuda:1 --cells-per-device 2`` gives four workers, two
per GPU; ``--devices cpu --workers 2`` two CPU workers, each with ``torch`` threads = this process's
threads // CPU workers. Each worker keeps one :class:`~benchmark.runner.Runner` (split caches) and
trains cells through :func:`~benchmark.executors.cellrun.run_locked`.

Dependencies: a student cell is handed to a worker only once its teacher cell (``maskrcnn`` of the same
dataset, ratio, seed and profile) has finished; the cell locks make a second process on the same store
wait rather than train that teacher again. A worker that dies (``kill -9``, out of memory) breaks the
pool: a new pool is started and the cells that were in flight are handed out again; their stale locks
(dead pid) are taken over. A cell whose worker died :data:`MAX_CRASHES` times is recorded as failed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark import store
from benchmark.catalog import get_method
from benchmark.executors.cellrun import FAILED, record_crash

if TYPE_CHECKING:
    from benchmark.executors import ExecOptions
    from benchmark.runner import CellSpec, GridConfig, Runner

MAX_CRASHES = 3

_WORKER: dict = {}


def _init_worker(slots, threads: int) -> None:
    _WORKER["device"] = slots.get()
    if _WORKER["device"] == "cpu":
        import torch

        torch.set_num_threads(threads)


def _work(cfg: GridConfig, cell: CellSpec, path: str, damage: list | None) -> tuple[str, int]:
    """One cell on this worker (``damage``: what the planner found wrong with it); ``(outcome, pid)``."""
    from benchmark.runner import Runner

    runner = _WORKER.get("runner")
    if runner is None:
        cfg = dataclasses.replace(cfg, device=_WORKER["device"], progress=False)
        tag = f"[worker {os.getpid()} {cfg.device}]"
        runner = Runner(cfg, echo=lambda m: print(f"{tag} {m}", file=__import__("sys").stderr, flush=True))
        runner.executor_name = "local"
        _WORKER["runner"] = runner
    runner.manifest(cell.dataset)
    if damage:
        runner._damage[Path(path)] = damage
    return runner.run_locked(cell, Path(path), wait=True), os.getpid()


def teacher_of(cell: CellSpec) -> CellSpec | None:
    from benchmark.runner import CellSpec

    teacher = get_method(cell.method).teacher
    return CellSpec(teacher, cell.dataset, cell.ratio, cell.seed, ()) if teacher else None


def _warm() -> None:
    """Import what every cell needs (torch, torchvision, the model code: ~5 s), so that the workers'
    start-up overlaps the planning in the parent."""
    import benchmark.runner  # noqa: F401
    import methods.core.model  # noqa: F401


class _Pool:
    def __init__(self, slots: list[str]):
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for s in slots:
            queue.put(s)
        import torch

        n_cpu = max(1, sum(s == "cpu" for s in slots))
        self.pool = ProcessPoolExecutor(max_workers=len(slots), mp_context=ctx, initializer=_init_worker,
                                        initargs=(queue, max(1, torch.get_num_threads() // n_cpu)))


class _Eta:
    """Time left for the cells not finished yet: per-cell estimates from measured per-stage rates
    (:class:`benchmark.eta.EtaModel`), laid out on the workers as the executor hands them out."""

    def __init__(self, runner: Runner, workers: int) -> None:
        from benchmark.eta import EtaModel

        self.model, self.workers, self.started = EtaModel(runner.cfg.profile.iterations), workers, {}

    def start(self, cell: CellSpec) -> None:
        self.started[cell] = time.time()

    def finish(self, cell: CellSpec, path: Path) -> None:
        self.model.observe_dir(cell.method, cell.dataset, cell.ratio, path, time.time() - self.started.pop(cell))

    def text(self, pending: dict, running: dict) -> str:
        from benchmark.runner import _eta_row, eta_text

        rows = {c: _eta_row(c) for c in [*pending, *running.values()]}  # one registry lookup per cell
        waiting = [self.model.estimate([rows[c]]) for c in pending if c not in running.values()]
        if any(w is None for w in waiting):
            return ""
        free = [0.0] * self.workers  # when each worker is free, from now
        for k, cell in enumerate(running.values()):
            est = self.model.estimate([rows[cell]]) or 0.0
            free[k % self.workers] = max(0.0, est - (time.time() - self.started.get(cell, time.time())))
        for seconds in waiting:  # the executor's own rule: the next cell goes to the first free worker
            free[free.index(min(free))] += seconds
        return eta_text(max(free), self.model.unmeasured([rows[c] for c in pending]))


def run_local(runner: Runner, opts: ExecOptions) -> int:
    """Run the grid of ``runner`` on ``local`` workers. Returns the number of failed cells.

    A cell is handed to a worker only when one is free (so the ETA knows what is running), teachers
    first, in the plan's order."""
    slots = opts.slots()
    pool = _Pool(slots)
    for _ in slots:
        pool.pool.submit(_warm)
    try:
        rows = runner.plan()
        runner.check_teacher_weights(rows)
        runner.check_out(create=True)
        todo = [(c, p) for c, p, st in rows if runner.cfg.force or st != "done"]
        runner.echo(f"grid: {len(rows)} cell(s), {len(rows) - len(todo)} already done, {len(todo)} to run "
                    f"on {len(slots)} local worker(s) ({', '.join(slots)}) → {runner.out}")
        pending = {c: p for c, p in todo}
        outcome: dict = {}
        crashes: dict = {}
        eta = _Eta(runner, len(slots))
        running: dict[Future, CellSpec] = {}
        while pending or running:
            for cell in _next_cells(pending, running, len(slots) - len(running)):
                path = pending[cell]
                running[pool.pool.submit(_work, runner.cfg, cell, str(path), runner._damage.get(path))] = cell
                eta.start(cell)
                runner.echo(f"  started {cell.label()}")
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            if _collect(runner, done, running, pending, outcome, crashes, eta, len(todo)):
                for cell in list(running.values()):  # the pool is gone: hand these out again
                    pending.setdefault(cell, Path(runner.cell_dir(cell)))
                running.clear()
                pool.pool.shutdown(wait=True, cancel_futures=True)
                pool = _Pool(slots)
                runner.echo("  a worker died; started a new pool (stale locks are taken over)")
    finally:
        pool.pool.shutdown(wait=True, cancel_futures=True)
    failed = sum(o == FAILED for o in outcome.values())
    runner.echo(f"grid finished: {len(rows) - failed}/{len(rows)} done, {failed} failed. "
                f"Results in {runner.out}")
    return failed


def _collect(runner, done, running, pending, outcome, crashes, eta: _Eta, n_todo: int) -> bool:
    """Record the finished futures (with the ETA of what is left); ``True`` if the pool broke."""
    broken = False
    for fut in done:
        cell = running.pop(fut)
        path = pending.pop(cell)
        try:
            outcome[cell], pid = fut.result()
            eta.finish(cell, path)
            runner.echo(f"[{len(outcome)}/{n_todo}{eta.text(pending, running)}] {outcome[cell]}: "
                        f"{cell.label()} (worker {pid})")
        except store.DiskFullError:  # no new cell: each would fail the same way (the CLI says why)
            runner.echo(f"  stopping: the disk is full; waiting for the {len(running)} running cell(s) to end")
            raise
        except BrokenProcessPool as exc:
            broken = True
            eta.started.pop(cell, None)
            if _crashed(runner, cell, path, exc, crashes):
                outcome[cell] = FAILED
            else:
                pending[cell] = path
    return broken


def _next_cells(pending: dict, running: dict, free: int) -> list[CellSpec]:
    """Up to ``free`` cells that can start now: teachers of waiting cells first (each unblocks a
    student), then the plan's order. Students first would leave a worker idle at the end, waiting for
    the last teacher (measured: 6 min 30 s instead of 5 min 20 s for the README's first run)."""
    waiting_on = {teacher_of(c) for c in pending}
    ready = [c for c in pending if _ready(c, pending, running)]
    return sorted(ready, key=lambda c: c not in waiting_on)[:max(0, free)]


def _ready(cell: CellSpec, pending: dict, running: dict) -> bool:
    if cell in running.values():
        return False
    teacher = teacher_of(cell)
    return teacher is None or (teacher not in pending)


def _crashed(runner: Runner, cell: CellSpec, path: Path, exc: BaseException, crashes: dict) -> bool:
    """Count a worker death on ``cell``; ``True`` (recorded as failed) after :data:`MAX_CRASHES`."""
    crashes[cell] = crashes.get(cell, 0) + 1
    runner.echo(f"  the worker of {cell.label()} died ({crashes[cell]}/{MAX_CRASHES})")
    if crashes[cell] < MAX_CRASHES:
        time.sleep(0.5)
        return False
    if store.cell_status(path) != "done":
        record_crash(path, exc, f"its worker process died {MAX_CRASHES} times")
    return True
