"""Atomic checkpoints that load with ``torch.load(path, weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled classes): model
and optimizer ``state_dict``, AMP scaler state, the iteration, the loss history, every global RNG state
(torch, CUDA, numpy, python ``random``) converted to tensors/lists, the training hook's state and a
``fingerprint`` of the run's settings. Files are written to a temporary name in the same folder,
fsync-ed, then ``os.replace``-d over the old one, so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, or from a different run configuration)."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (tmp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a clear :class:`CheckpointError` if unreadable."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any failure means the file is unusable
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}. Delete it to start that stage afresh."
        ) from exc


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors / plain lists (weights_only-loadable)."""
    key, mt, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": str(key), "mt": torch.from_numpy(np.asarray(mt, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached),
        },
        "python": {"version": int(py_version), "state": [int(x) for x in py_state], "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (n["key"], n["mt"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in state["cuda"]])
