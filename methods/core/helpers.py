"""Small helpers every Mask R-CNN-based method shares: image tensors, stable hashes, atomic files.

Each exists once here; cache keys and file names built with them must not change (workdirs written by
earlier runs are reused under them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.store import atomic_write_text


def image_to_tensor(image: np.ndarray, index: int | None = None, *, what: str = "image",
                    device: Any = None) -> torch.Tensor:
    """A ``uint8 (H, W, 3)`` RGB array as a ``float32 (3, H, W)`` tensor in ``[0, 1]`` (on ``device``).

    With ``index``, anything else is a ``ValueError`` naming ``"<what> #<index>"``, its dtype and shape.
    """
    if index is not None and not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                                  and image.dtype == np.uint8):
        raise ValueError(
            f"{what} #{index}: expected a uint8 (H, W, 3) RGB array, got "
            f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}"
        )
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return t if device is None else t.to(device)


def stable_hash(obj: Any) -> str:
    """16 hex digits of the SHA-256 of ``obj``'s canonical JSON (sorted keys, ``str`` for the rest)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def digest_parts(*parts: Any) -> str:
    """16 hex digits of the SHA-256 of ``parts``: arrays by dtype, shape and bytes, the rest as JSON."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def finite_or_none(x: Any, digits: int | None = None) -> float | None:
    """``float(x)`` (rounded to ``digits`` if given); ``None`` for missing, non-numeric, NaN or inf."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    return round(x, digits) if digits is not None else x


def write_json_atomic(path: Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = True) -> None:
    """``obj`` as JSON (``str`` for what JSON lacks) written atomically, newline-terminated."""
    atomic_write_text(Path(path), json.dumps(obj, indent=indent, sort_keys=sort_keys, default=str) + "\n")


def savez_atomic(path: Path, **arrays: np.ndarray) -> None:
    """``numpy.savez_compressed`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_history(path: Path, history: Sequence[dict[str, float]], *, digits: int | None = 6) -> None:
    """Every training iteration's losses, lr and gradient norm as ``{"columns": [...], "rows": [[...]]}``
    (sorted columns; non-finite or missing values as ``null``; numbers rounded to ``digits``)."""
    keys = sorted({k for h in history for k in h})
    rows = [[finite_or_none(h.get(k), digits) for k in keys] for h in history]
    atomic_write_text(Path(path), json.dumps({"columns": keys, "rows": rows}))

