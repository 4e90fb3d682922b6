"""Resolve the ``--device`` option to a concrete torch device string.

``resolve_device("auto")`` picks ``"cuda"`` when a CUDA GPU is usable and ``"cpu"`` otherwise; an explicit
``"cuda"``/``"cuda:N"`` on a machine without that GPU raises :class:`DeviceError` with the fix, instead of
failing deep inside a training loop. Methods only ever see the resolved string (never ``"auto"``).
"""

from __future__ import annotations

import re

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


class DeviceError(ValueError):
    """A device string that is malformed or names hardware this machine does not have."""


def resolve_device(spec: str = "auto") -> str:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Args:
        spec: the requested device (case-insensitive, surrounding spaces ignored).

    Returns:
        ``"cpu"`` or a CUDA device string that ``torch.device`` accepts and that exists here.

    Raises:
        DeviceError: unknown spelling, CUDA requested but unavailable, or GPU index out of range.
    """
    s = str(spec).strip().lower()
    if s == "cpu":
        return "cpu"
    if s != "auto" and not _CUDA_RE.match(s):
        raise DeviceError(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' (e.g. 'cuda:0')")
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard dependency
        raise DeviceError(f"device {spec!r} needs PyTorch, which is not installed: {exc}") from exc
    available = torch.cuda.is_available()
    if s == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise DeviceError(
            f"device {spec!r} was requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}). "
            f"Use --device cpu (or --device auto), or install a CUDA build of torch on a GPU machine."
        )
    m = _CUDA_RE.match(s)
    assert m is not None
    if m.group(1) is not None:
        index = int(m.group(1))
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(
                f"device {spec!r} was requested but this machine has {count} CUDA device(s) "
                f"(valid: {', '.join(f'cuda:{i}' for i in range(count))})."
            )
    return s
