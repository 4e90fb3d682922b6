"""``--executor submitit``: one job per cell through submitit (SLURM, or its Local/Debug executors).

Cells are submitted as job arrays (``executor.map_array``) of at most ``--slurm-array-parallelism``
jobs running at once: first an array of the teacher cells, then an array of the other cells. On SLURM
the second array depends on the first (``--dependency=afterany:<teacher array>``) so students do not
hold a GPU while they wait; on every backend a student job that meets an unfinished teacher waits on
the teacher's lock (:mod:`benchmark.locks`) instead of training it again. Each submitted cell gets a
``queued.json`` (executor, job id, log path) that ``benchmark status`` reads.

``--submitit-cluster local`` runs submitit's ``LocalExecutor`` (one process per job on this machine);
``debug`` its ``DebugExecutor`` (jobs run one by one inside this process, so ``run`` always waits).
Job logs and pickles live in ``<store>/.submitit/``.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark import store
from benchmark.distributed import RankFailedError
from benchmark.executors.cellrun import FAILED, record_crash
from benchmark.executors.local import teacher_of

if TYPE_CHECKING:
    from benchmark.executors import ExecOptions
    from benchmark.runner import CellSpec, GridConfig, Runner

QUEUED = "queued.json"
#: LocalExecutor kills a job after ``timeout_min`` (submitit's default: 2 minutes); without
#: ``--slurm-time`` give local jobs a day.
DEFAULT_LOCAL_TIMEOUT_MIN = 24 * 60


def run_cell_job(cfg: GridConfig, cell: CellSpec, path: str, damage: list | None = None) -> str:
    """The function each submitit job runs: one cell, through its lock (``damage``: what the planner
    found wrong with it). Returns the outcome."""
    from benchmark.runner import Runner

    runner = Runner(cfg, echo=lambda m: print(m, file=sys.stderr, flush=True))
    runner.executor_name = "submitit"
    try:
        from benchmark import distributed

        distributed.init_from_submitit()
        if distributed.env_world_size() > 1:
            import dataclasses

            runner.cfg = dataclasses.replace(cfg, device=distributed.init_from_env(cfg.device))
        earlier = store.disk_full_mark(runner.out)
        if earlier:  # claiming would write into a full disk, and training would end at its first write
            print(f"error: skipped: an earlier job of this grid found the disk full: {earlier}. "
                  f"{store.DISK_FULL_FIX}", file=sys.stderr, flush=True)
            return FAILED
        runner.manifest(cell.dataset)
        if damage:
            runner._damage[Path(path)] = damage
        return runner.run_locked(cell, Path(path), wait=True)
    except store.DiskFullError as exc:  # the cell recorded it (if the disk let it); the others skip theirs
        store.mark_disk_full(runner.out, exc)
        print(f"error: {exc.strerror}. {store.DISK_FULL_FIX}", file=sys.stderr, flush=True)
        return FAILED
    except RankFailedError:  # a task of a multi-task (DDP) job: the job fails, and submitit reports it
        raise
    except Exception as exc:  # noqa: BLE001 - recorded like an inline failure, never a debugger
        traceback.print_exc()
        record_crash(Path(path), exc, "the job failed before the cell started")
        return FAILED


def make_executor(opts: ExecOptions, folder: Path, tasks: int = 1):
    """A configured ``submitit.AutoExecutor`` for ``opts`` (all options validated beforehand)."""
    import submitit

    from benchmark.executors import parse_slurm_mem, parse_slurm_time

    s = opts.slurm
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=opts.cluster)
    params: dict = {"name": "nuclei-ssl-bench", "tasks_per_node": tasks, "nodes": 1}
    params["timeout_min"] = parse_slurm_time(s["time"]) if s.get("time") else DEFAULT_LOCAL_TIMEOUT_MIN
    gpus = s.get("gpus_per_task") or 0
    if gpus:
        params["gpus_per_node"] = gpus
    if s.get("cpus_per_task"):
        params["cpus_per_task"] = s["cpus_per_task"]
    if s.get("mem"):
        params["mem_gb"] = parse_slurm_mem(s["mem"])
    for key in ("partition", "account", "qos", "constraint"):
        if s.get(key):
            params[f"slurm_{key}"] = s[key]
    if s.get("array_parallelism"):
        params["slurm_array_parallelism"] = s["array_parallelism"]
    if s.get("setup"):
        params["slurm_setup"] = list(s["setup"])
        params["local_setup"] = list(s["setup"])
    ex.update_parameters(**params)
    return ex


def _submit_array(ex, runner, cells: list, paths: list, opts: ExecOptions) -> list:
    if not cells:
        return []
    jobs = ex.map_array(run_cell_job, [runner.cfg] * len(cells), cells, [str(p) for p in paths],
                        [runner._damage.get(p) for p in paths])
    for cell, path, job in zip(cells, paths, jobs):
        path.mkdir(parents=True, exist_ok=True)
        store.atomic_write_json(path / QUEUED, {
            "executor": "submitit", "cluster": opts.cluster, "job_id": str(job.job_id),
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "log": str(job.paths.stdout),
            "cell": cell.label(),
        })
    return jobs


def submit_grid(runner: Runner, opts: ExecOptions) -> int:
    """Submit the cells still to do. Returns the number of failed cells (0 unless waiting)."""
    rows = runner.plan()
    runner.check_out(create=True)
    (Path(runner.out) / store.DISK_FULL_MARK).unlink(missing_ok=True)  # a new submission: space was freed
    todo = [(c, p) for c, p, st in rows if runner.cfg.force or st != "done"]
    runner.echo(f"grid: {len(rows)} cell(s), {len(rows) - len(todo)} already done, {len(todo)} to submit "
                f"(submitit, cluster {opts.cluster}) → {runner.out}")
    if not todo:
        return 0
    from benchmark import distributed

    tasks = distributed.ranks_for_gpus(opts.slurm.get("gpus_per_task") or 0)
    ex = make_executor(opts, Path(runner.out) / ".submitit", tasks)
    todo_cells = {c for c, _ in todo}
    first = [(c, p) for c, p in todo if any(teacher_of(o) == c for o in todo_cells)]
    rest = [(c, p) for c, p in todo if (c, p) not in first]
    jobs = _submit_array(ex, runner, [c for c, _ in first], [p for _, p in first], opts)
    if jobs and opts.cluster == "slurm":
        ex.update_parameters(slurm_dependency="afterany:" + str(jobs[0].job_id).split("_")[0])
    jobs += _submit_array(ex, runner, [c for c, _ in rest], [p for _, p in rest], opts)
    for (cell, _), job in zip(first + rest, jobs):
        print(f"submitted job {job.job_id}: {cell.label()}", flush=True)
    if not (opts.wait or opts.cluster == "debug"):
        runner.echo(f"{len(jobs)} job(s) submitted; `python -m benchmark status --out {runner.out}` "
                    f"shows their progress")
        return 0
    return wait_for(runner, jobs, [p for _, p in first + rest])


def wait_for(runner: Runner, jobs: list, paths: list[Path]) -> int:
    """Block until every job ends (progress bar); the number of cells that did not finish."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="jobs", unit="cell", disable=not runner.cfg.progress)
    finished: set[int] = set()
    while len(finished) < len(jobs):
        for i, job in enumerate(jobs):
            if i not in finished and job.done():
                finished.add(i)
                bar.update(1)
        if len(finished) < len(jobs):
            time.sleep(1.0)
    bar.close()
    failed = 0
    for job, path in zip(jobs, paths):
        if store.cell_status(path) == "done":
            continue
        failed += 1
        exc = job.exception()
        if exc is not None and store.cell_status(path) != "failed":
            record_crash(path, exc, f"submitit job {job.job_id} failed (log: {job.paths.stderr})")
        runner.echo(f"  FAILED: job {job.job_id} ({path / store.FAILED})")
    runner.echo(f"grid finished: {len(jobs) - failed}/{len(jobs)} submitted cell(s) done, {failed} failed. "
                f"Results in {runner.out}")
    return failed
