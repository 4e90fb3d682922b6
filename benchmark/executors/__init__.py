"""Executors: where the cells of a grid run (``run --executor inline|local|submitit``).

========== ========================================================================================
``inline`` the default: one cell after another in this process (:meth:`benchmark.runner.Runner.run`).
``local``  worker processes on this machine (:mod:`benchmark.executors.local`): ``--workers N``,
           ``--devices cpu|cuda:0,cuda:1,...``, ``--cells-per-device K``.
``submitit`` one job per cell through submitit (:mod:`benchmark.executors.submit`): SLURM job
           arrays, or submitit's own ``LocalExecutor`` / ``DebugExecutor`` (``--submitit-cluster``).
========== ========================================================================================

Every executor trains a cell through :func:`benchmark.executors.cellrun.run_locked`, so teachers run
before their students and no cell is trained twice at once, whatever mix of processes shares a store.
:class:`ExecOptions` holds and validates every option before anything is started or submitted.
"""

from __future__ import annotations

import dataclasses
import re
import shutil

EXECUTORS = ("inline", "local", "submitit")
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")

_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$")
_MEM_RE = re.compile(r"^(\d+)([KMGT]?)B?$", re.IGNORECASE)


class ExecutorError(ValueError):
    """A bad executor option (exit code 2 with this message)."""


@dataclasses.dataclass(frozen=True)
class ExecOptions:
    """Executor options of ``benchmark run`` (see the ``--help`` of each flag).

    Attributes:
        executor: ``inline`` | ``local`` | ``submitit``.
        workers: ``local`` worker processes (default: devices × cells per device).
        devices: ``local`` devices, one per worker slot (``("cpu",)`` or ``("cuda:0", "cuda:1")``).
        cells_per_device: ``local`` worker slots per device (several small cells share a GPU).
        cluster: submitit backend: ``slurm``, ``local`` (LocalExecutor) or ``debug`` (DebugExecutor).
        slurm: SLURM settings: partition, gpus_per_task, cpus_per_task, mem, time (minutes), account,
            qos, constraint, array_parallelism, setup (shell lines run before each job).
        wait: block until submitted jobs finish (``submitit``).
    """

    executor: str = "inline"
    workers: int | None = None
    devices: tuple[str, ...] = ()
    cells_per_device: int = 1
    cluster: str = "slurm"
    slurm: dict = dataclasses.field(default_factory=dict)
    wait: bool = False

    def slots(self) -> list[str]:
        """The device of each ``local`` worker."""
        devices = list(self.devices) or ["cpu"]
        n = self.workers or len(devices) * self.cells_per_device
        return [devices[i % len(devices)] for i in range(n)]


def parse_slurm_time(text: str) -> int:
    """``"90"`` / ``"1:30:00"`` / ``"2-00:00:00"`` (SLURM's spellings) → minutes."""
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ExecutorError(f"--slurm-time {text!r}: expected MINUTES, HH:MM:SS or D-HH:MM:SS (e.g. 4:00:00)")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if b is None:
        minutes = a * 60 if days is not None else a  # D-HH or MINUTES
    elif c is None:
        minutes = a * 60 + b if days is not None else a + b / 60  # D-HH:MM or MM:SS
    else:
        minutes = a * 60 + b + c / 60
    minutes = int(round(minutes + (days or 0) * 1440))
    if minutes < 1:
        raise ExecutorError(f"--slurm-time {text!r}: must be at least one minute")
    return minutes


def parse_slurm_mem(text: str) -> int:
    """``"32G"`` / ``"4000M"`` / ``"4000"`` (MB, SLURM's default unit) → GB, rounded up."""
    m = _MEM_RE.match(text.strip())
    if not m:
        raise ExecutorError(f"--slurm-mem {text!r}: expected a size like 32G or 4000M")
    scale = {"": 1 / 1024, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024}[m.group(2).upper()]
    return max(1, int(-(-int(m.group(1)) * scale // 1)))


def _positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ExecutorError(f"{name} {value}: must be >= {minimum}")


def validate(opts: ExecOptions, *, report: bool = False) -> None:
    """Raise :class:`ExecutorError` (naming the flag and the fix) for any bad or mismatched option."""
    if opts.executor not in EXECUTORS:
        raise ExecutorError(f"--executor {opts.executor!r}: available: {', '.join(EXECUTORS)}")
    given_local = opts.workers is not None or opts.devices or opts.cells_per_device != 1
    if given_local and opts.executor != "local":
        raise ExecutorError("--workers/--devices/--cells-per-device need --executor local "
                            "(inline uses --device; submitit jobs get --slurm-gpus-per-task)")
    given_sub = bool(opts.slurm) or opts.wait or opts.cluster != "slurm"
    if given_sub and opts.executor != "submitit":
        raise ExecutorError("--slurm-*/--submitit-cluster/--wait need --executor submitit")
    if opts.executor == "local":
        _validate_local(opts)
    if opts.executor == "submitit":
        _validate_submitit(opts, report)


def _validate_local(opts: ExecOptions) -> None:
    from benchmark.devices import resolve_device

    _positive("--workers", opts.workers)
    _positive("--cells-per-device", opts.cells_per_device)
    for d in opts.devices:
        if d.strip().lower() == "auto":
            raise ExecutorError("--devices: name the devices (cpu or cuda:0,cuda:1,...), not 'auto'")
        resolve_device(d)  # DeviceError (a ValueError) names the device and the fix
    capacity = max(1, len(opts.devices)) * opts.cells_per_device
    gpus = [d for d in opts.devices if d.strip().lower() != "cpu"]
    if gpus and opts.workers and opts.workers > capacity:
        raise ExecutorError(
            f"--workers {opts.workers}: only {capacity} slot(s) ({max(1, len(opts.devices))} device(s) × "
            f"--cells-per-device {opts.cells_per_device}); raise --cells-per-device or list more --devices")


def _validate_submitit(opts: ExecOptions, report: bool) -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ExecutorError("--executor submitit needs the submitit package: "
                            "pip install 'nuclei-ssl-bench[cluster]' (or pip install submitit)") from None
    if opts.cluster not in SUBMITIT_CLUSTERS:
        raise ExecutorError(f"--submitit-cluster {opts.cluster!r}: available: {', '.join(SUBMITIT_CLUSTERS)}")
    if opts.cluster == "slurm" and not shutil.which("sbatch"):
        raise ExecutorError("--executor submitit: no SLURM here (sbatch is not on PATH); run on a SLURM "
                            "login node, or test with --submitit-cluster local")
    s = opts.slurm
    _positive("--slurm-gpus-per-task", s.get("gpus_per_task"), 0)
    _positive("--slurm-cpus-per-task", s.get("cpus_per_task"))
    _positive("--slurm-array-parallelism", s.get("array_parallelism"))
    if s.get("time") is not None:
        parse_slurm_time(s["time"])
    if s.get("mem") is not None:
        parse_slurm_mem(s["mem"])
    if report and not opts.wait and opts.cluster != "debug":
        raise ExecutorError("--report with --executor submitit needs --wait (the jobs are still running "
                            "when `run` returns); or run `python -m benchmark report` once they finish")
