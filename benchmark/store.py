"""The result store: one directory per grid cell, written so that a crash never looks like a result.

Layout (``--out``, default ``./results``)::

    <out>/<dataset>/<ratio: 1-8>/<method>/seed<seed>-<profile>-<key hash>/
        cell.json            what ran: method, options, profile, dataset, split hash, ratio, seed
        env.json             package versions, torch/CUDA/GPU, git commit of the suite and plugin
        run.log              the runner's log lines for this cell
        work/                the method's own working directory (checkpoints, teacher, pseudo-labels)
        predictions.npz      int32 instance maps of every test patch (compressed), keyed by patch id
        metrics_patch.csv    per-test-patch metrics and raw counts   (paper protocol)
        metrics_image.csv    per-test-image metrics and raw counts   (whole-image protocol)
        done.json            written last, atomically: the cell is complete
        failed.json          the error and traceback of a failed attempt (removed on retry)

A cell is complete if and only if ``done.json`` exists. Everything else can be half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

DONE = "done.json"
FAILED = "failed.json"
CELL = "cell.json"


def ratio_slug(ratio: str) -> str:
    """``"1/8"`` → ``"1-8"`` (safe in paths)."""
    return ratio.replace("/", "-")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def stable_hash(obj: Any, n: int = 10) -> str:
    """Short SHA-256 of the canonical JSON of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def save_predictions(path: Path, preds: dict[str, np.ndarray]) -> None:
    """Compressed ``.npz`` of int32 maps keyed by patch id, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **{k: np.asarray(v, dtype=np.int32) for k, v in preds.items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


@dataclasses.dataclass
class CellRecord:
    """A cell as found in the store.

    Attributes:
        path: the cell directory.
        cell: contents of ``cell.json``.
        status: ``"done"``, ``"failed"`` or ``"incomplete"``.
        done: contents of ``done.json`` (or ``None``).
        error: contents of ``failed.json`` (or ``None``).
    """

    path: Path
    cell: dict[str, Any]
    status: str
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def method(self) -> str:
        return self.cell["method"]

    @property
    def dataset(self) -> str:
        return self.cell["dataset"]

    @property
    def ratio(self) -> str:
        return self.cell["ratio"]

    @property
    def seed(self) -> int:
        return int(self.cell["seed"])

    def metrics(self, protocol: str = "patch"):
        """Per-image metrics table (pandas DataFrame) of a done cell for ``"patch"`` or ``"image"``."""
        import pandas as pd

        name = {"patch": "metrics_patch.csv", "image": "metrics_image.csv"}[protocol]
        return pd.read_csv(self.path / name)


def cell_status(path: Path) -> str:
    if (path / DONE).exists():
        return "done"
    if (path / FAILED).exists():
        return "failed"
    return "incomplete"


def iter_cells(out: Path) -> Iterator[CellRecord]:
    """Every cell directory under ``out`` (those with a ``cell.json``), sorted by path."""
    out = Path(out)
    if not out.is_dir():
        return
    for cell_json in sorted(out.glob(f"*/*/*/*/{CELL}")):
        path = cell_json.parent
        try:
            cell = json.loads(cell_json.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        status = cell_status(path)
        rec = CellRecord(path=path, cell=cell, status=status)
        if status == "done":
            rec.done = json.loads((path / DONE).read_text())
        elif status == "failed":
            try:
                rec.error = json.loads((path / FAILED).read_text())
            except (OSError, json.JSONDecodeError):
                rec.error = {"error": "unreadable failed.json"}
        yield rec
