"""Distributed data parallel (DDP) for one cell.

``torchrun --nproc_per_node=N -m benchmark run ...`` (or a submitit job with
``--slurm-gpus-per-task N``: N tasks, one GPU each) starts N ranks of the same command.

- **Process group**: :func:`init_from_env` (called by ``benchmark run``) joins it with NCCL on CUDA
  (rank ``r`` on ``cuda:LOCAL_RANK``) and gloo on CPU.
- **Who writes**: rank 0 claims the cell lock and writes the cell; rank ``r > 0`` runs the same code
  with ``<cell>/.ddp-rank<r>/`` as its scratch directory (deleted afterwards).
- **Training** (:func:`methods.core.train.train`): the model is wrapped in
  :class:`~torch.nn.parallel.DistributedDataParallel`; at iteration ``i`` rank ``r`` takes the batch
  the single-process loop would take at ``i * N + r`` (so each rank sees ``profile.batch_size``
  patches, the global batch is ``N × batch_size``), checkpoints are written by rank 0 (with every
  rank's RNG state) and read by all ranks, so a killed DDP run resumes.
- **Batch and lr rule**: ``--ddp-lr-scaling linear`` (default) multiplies ``profile.lr`` by N, the
  linear scaling rule for an N-times larger batch (Goyal et al., 2017); ``none`` keeps ``profile.lr``.
  Iterations are unchanged. Both enter the cell key and ``cell.json`` (``ddp``), so a DDP cell is never
  mistaken for a single-process one.
- **Inference**: test prediction and pseudo-labelling are sharded (:func:`shard_map`: rank ``r`` takes
  items ``r, r + N, ...``) and gathered on every rank, so every rank holds the same pseudo-labels.
  Methods :func:`note` digests of what they train on; ``<cell>/ddp.json`` lists them per rank.
- **Failures**: a rank whose cell failed asks the others, on a side gloo group with a short timeout
  (:func:`all_failed`), whether they failed it too. If all did (a diverged loss is detected on every
  rank at once), the cell is recorded as failed and the grid goes on; if not, the others are inside a
  collective, so this rank ends the run (:class:`RankFailedError`) and torchrun stops them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

LR_SCALINGS = ("linear", "none")
#: seconds a failing rank waits for the others to report the same failure (:func:`all_failed`)
AGREE_SECONDS_ENV = "NUCLEI_SSL_BENCH_DDP_AGREE_SECONDS"
_STATE: dict[str, Any] = {"lr_scaling": "linear", "notes": {}}


class RankFailedError(RuntimeError):
    """A cell failed on one rank. Under DDP the rank ends (the others may be inside a collective, where
    they would wait for the backend's timeout) and torchrun stops the rest; re-running resumes."""


@dataclasses.dataclass(frozen=True)
class DDPContext:
    """The process group as this rank sees it."""

    rank: int
    world: int
    backend: str


def ranks_for_gpus(gpus_per_task: int) -> int:
    """SLURM tasks (DDP ranks, one GPU each) of a job asked for ``gpus_per_task`` GPUs."""
    return gpus_per_task if gpus_per_task > 1 else 1


def init_from_submitit() -> None:
    """Inside a submitit job of several tasks, export ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/... as
    torchrun does, so :func:`init_from_env` sees the same environment under both launchers."""
    n = int(os.environ.get("SUBMITIT_LOCAL_NTASKS") or os.environ.get("SLURM_NTASKS") or 1)
    if n > 1 and "RANK" not in os.environ:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_from_env(device: str, lr_scaling: str = "linear") -> str:
    """Join the process group when launched with ``WORLD_SIZE > 1``. Returns this rank's device."""
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"--ddp-lr-scaling {lr_scaling!r}: available: {', '.join(LR_SCALINGS)}")
    _STATE["lr_scaling"] = lr_scaling
    if env_world_size() <= 1:
        return device
    seconds = agree_seconds()  # before joining: a bad value stops every rank at once, with the message
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    _make_side_group(dist, seconds)
    return device


def agree_seconds() -> float:
    """The side group's timeout: :data:`AGREE_SECONDS_ENV`, default 60.

    Raises:
        ValueError: the variable is not a positive number (the message names it).
    """
    raw = os.environ.get(AGREE_SECONDS_ENV) or "60"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:  # also NaN
        raise ValueError(f"{AGREE_SECONDS_ENV}={raw!r}: give a positive number of seconds (default 60), "
                         f"or unset it")
    return seconds


def _make_side_group(dist, seconds: float) -> None:
    """A CPU group with a short timeout, created by every rank at once, for :func:`all_failed`."""
    from datetime import timedelta

    _STATE["side"] = dist.new_group(backend="gloo", timeout=timedelta(seconds=seconds))


def all_failed() -> bool:
    """Called by a rank whose cell failed: ``True`` if every rank failed it too (all of them got here
    within the side group's timeout, default 60 s), ``False`` if some rank is still working (it is then
    inside a collective, waiting for this one) or there is no side group."""
    group = _STATE.get("side")
    if context() is None or group is None:
        return False
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(out, True, group=group)
    except RuntimeError:  # the timeout: some rank never came
        return False
    return all(out)


def context() -> DDPContext | None:
    """The DDP context, or ``None`` in a single-process run."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return DDPContext(dist.get_rank(), dist.get_world_size(), dist.get_backend())


def rank() -> int:
    ctx = context()
    return ctx.rank if ctx else 0


def lr_factor() -> float:
    """What ``profile.lr`` is multiplied by (the linear scaling rule, or 1)."""
    ctx = context()
    return float(ctx.world) if ctx and _STATE["lr_scaling"] == "linear" else 1.0


def describe() -> dict[str, Any] | None:
    """The DDP settings that enter the cell key, ``cell.json`` and checkpoint fingerprints."""
    ctx = context()
    if ctx is None:
        return None
    return {"world_size": ctx.world, "backend": ctx.backend, "lr_scaling": _STATE["lr_scaling"],
            "lr_factor": lr_factor(), "per_rank_batch": "profile.batch_size",
            "global_batch": f"{ctx.world} x profile.batch_size"}


def wrap(model, device: str):
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (or as is, single-process)."""
    if context() is None:
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    return DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None)


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself single-process)."""
    if context() is None:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` single-process)."""
    if context() is None:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_true(flag: bool) -> bool:
    """``True`` on every rank if ``flag`` is true on any rank."""
    ctx = context()
    if ctx is None:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    if ctx.backend == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shard_map(fn: Callable[[list[Any]], list[Any]], items: Sequence[Any]) -> list[Any]:
    """``fn(items)`` computed in shards (rank ``r`` takes ``items[r::N]``), gathered in order on every rank."""
    ctx = context()
    if ctx is None:
        return list(fn(list(items)))
    mine = list(fn(list(items[ctx.rank::ctx.world])))
    shards = all_gather(mine)
    out: list[Any] = [None] * len(items)
    for r, shard in enumerate(shards):
        out[r::ctx.world] = shard
    return out


def note(kind: str, digest: str) -> None:
    """Record a digest of what this rank trains on (e.g. the labeled subset, the pseudo-labels)."""
    _STATE["notes"].setdefault(kind, []).append(digest)


def take_notes() -> dict[str, list[str]]:
    notes, _STATE["notes"] = _STATE["notes"], {}
    return notes


def barrier() -> None:
    if context() is not None:
        import torch.distributed as dist

        dist.barrier()
