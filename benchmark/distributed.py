"""Distributed data parallel (DDP) for one cell: process-group set-up and rank helpers.

``torchrun --nproc_per_node=N -m benchmark run ...`` (or a submitit job with
``--slurm-gpus-per-task N``) starts N ranks of the same command. Every rank builds the same split and
trains the same stage with :class:`torch.nn.parallel.DistributedDataParallel` (NCCL on CUDA, gloo on
CPU); rank 0 alone writes the store.
"""

from __future__ import annotations

import os


def ranks_for_gpus(gpus_per_task: int) -> int:
    """SLURM tasks (DDP ranks, one GPU each) of a job asked for ``gpus_per_task`` GPUs."""
    return gpus_per_task if gpus_per_task > 1 else 1


def init_from_submitit() -> None:
    """Inside a submitit job of several tasks, export ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/... as
    torchrun does, so the training loop sees the same environment under both launchers."""
    n = int(os.environ.get("SUBMITIT_LOCAL_NTASKS") or os.environ.get("SLURM_NTASKS") or 1)
    if n > 1 and "RANK" not in os.environ:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
