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
        done.json            written last, atomically: the cell is complete; it records the size
                             and SHA-256 of every artefact above (``ARTEFACTS``)
        failed.json          the error and traceback of a failed attempt (removed on retry)

A cell is complete if and only if ``done.json`` exists. Everything else can be half-written.

Integrity: :func:`verify_cell` compares a done cell's files with the sizes and hashes in its
``done.json``. ``run`` recomputes a damaged cell; :func:`iter_cells` (what ``report`` reads) raises
:class:`StoreError` naming the damaged file, or skips it with a warning when ``skip_damaged``. Cells
written before checksums existed ("legacy") are checked for readability only (JSON parses, metrics
CSVs parse with the expected columns, ``.npz`` archives open) and flagged ``legacy``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

DONE = "done.json"
FAILED = "failed.json"
CELL = "cell.json"

#: the files of a done cell whose size and SHA-256 ``done.json`` records (``run.log`` and ``work/``
#: are diagnostics and method state, not results).
ARTEFACTS = (CELL, "env.json", "predictions.npz", "examples.npz", "metrics_patch.csv", "metrics_image.csv",
             "metrics_val.csv")
METRIC_FILES = {"patch": "metrics_patch.csv", "image": "metrics_image.csv"}


class StoreError(Exception):
    """A result store file is damaged or unreadable. The message names the file and the fix."""


class StoreWarning(UserWarning):
    """Something in the store is not verified (legacy cell) or was skipped (``--skip-damaged``)."""


class DiskFullError(OSError):
    """A cell could not write its files because the disk (or quota) is full. The grid stops: every
    further cell would fail the same way. ``strerror`` names the filesystem's path and its free space;
    :data:`DISK_FULL_FIX` says what to do."""


#: what to do about a :class:`DiskFullError` (the CLI and the submitit jobs print it after the error)
DISK_FULL_FIX = ("Finished cells are kept. Free some space (in the store, the big files are the work/ folders "
                 "of finished cells; keep those of teachers such as maskrcnn, whose work/model.pt their "
                 "students load), then re-run the same command: the failed cell starts again from its last "
                 "checkpoint, if it wrote one.")

#: left in the store by the submitit job that met a full disk, so that the grid's other jobs skip their
#: cells instead of each training until its first write fails; removed when the grid is next submitted
DISK_FULL_MARK = ".disk-full.json"


def mark_disk_full(out: Path, full: DiskFullError) -> None:
    """Leave :data:`DISK_FULL_MARK` in the store ``out`` (best effort: the disk is full)."""
    try:
        atomic_write_json(Path(out) / DISK_FULL_MARK, {"error": full.strerror, "pid": os.getpid()})
    except OSError:
        pass


def disk_full_mark(out: Path) -> str | None:
    """The error recorded by :func:`mark_disk_full` in ``out``, or ``None``."""
    try:
        return str(json.loads((Path(out) / DISK_FULL_MARK).read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# torch.save reports a short write as a RuntimeError, without the errno (inline_container.cc)
_TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed writing", "file write failed")


def free_mb(path: Path) -> float:
    """Free megabytes on the filesystem holding ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 1e6


def disk_full(exc: BaseException, path: Path) -> DiskFullError | None:
    """A :class:`DiskFullError` when ``exc`` (or what caused it) is a write that ran out of space:
    ``ENOSPC`` / ``EDQUOT``, or torch's short-write error. It names the file's path when the error has
    one, else ``path`` (the cell being written). ``None`` for any other error."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return e
        full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or (isinstance(e, RuntimeError) and any(t in str(e) for t in _TORCH_WRITE_FAILURES)):
            # the file that failed may be elsewhere (TMPDIR, the patch cache): name its disk, not the store's
            where = Path(e.filename) if isinstance(e, OSError) and e.filename else Path(path)
            return DiskFullError(errno.ENOSPC, f"no space left on the disk holding {where} "
                                               f"({free_mb(where):.0f} MB free now)")
        e = e.__cause__ or e.__context__
    return None


def ratio_slug(ratio: str) -> str:
    """``"1/8"`` → ``"1-8"`` (safe in paths)."""
    return ratio.replace("/", "-")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(path: str | Path) -> None:
    """``mkstemp`` creates files 0600; give them the mode any other tool would (0666 & ~umask)."""
    os.chmod(path, 0o666 & ~_umask())


def remove_orphan_temps(path: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` / ``.<name>.*.npz`` leftovers of writes killed mid-way."""
    removed = []
    if not Path(path).is_dir():
        return removed
    for p in Path(path).iterdir():
        if p.name.startswith(".") and p.suffix in (".tmp", ".npz") and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _apply_umask(tmp)
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
        _apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    """The ``predictions.npz`` of a cell. Raises :class:`StoreError` naming the file if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{path}: damaged .npz archive ({type(exc).__name__}: {exc}); "
                         f"re-run the cell (`benchmark run` recomputes damaged cells).") from exc


# ---------------------------------------------------------------------------------- integrity
def file_digest(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def seal_cell(path: Path, done: dict[str, Any]) -> None:
    """Write ``done.json`` (last, atomically) with the size and SHA-256 of every artefact present."""
    path = Path(path)
    artefacts = {name: file_digest(path / name) for name in ARTEFACTS if (path / name).is_file()}
    atomic_write_json(path / DONE, {**done, "artefacts": artefacts})


def read_json(path: Path) -> Any:
    """Parse a store JSON file. Raises :class:`StoreError` naming it when unreadable or truncated."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable or truncated JSON ({type(exc).__name__}: {exc}).") from exc


def read_metrics(path: Path):
    """A per-image metrics CSV as a DataFrame. Raises :class:`StoreError` naming the file if it does not
    parse, is empty, or lacks the ``image_id``/``aji``/``dice``/``pq`` columns or values."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise StoreError(f"{path}: unreadable metrics table ({type(exc).__name__}: {exc}).") from exc
    missing = [c for c in ("image_id", "dice", "aji", "pq") if c not in table.columns]
    if missing or table.empty:
        raise StoreError(f"{path}: metrics table is empty or truncated (missing columns: {missing or 'none'}, "
                         f"{len(table)} rows).")
    if table[["dice", "aji", "pq"]].isna().any().any() or table["image_id"].duplicated().any():
        raise StoreError(f"{path}: metrics table has blank values or repeated image ids (truncated or edited).")
    return table


def _readability_problems(path: Path) -> list[str]:
    """What a legacy cell (no checksums) can be checked for: every artefact parses."""
    problems = []
    checks: list[tuple[str, Callable[[Path], Any]]] = [(CELL, read_json), ("env.json", read_json)]
    checks += [(name, read_metrics) for name in METRIC_FILES.values()]
    checks += [("predictions.npz", load_predictions), ("examples.npz", load_predictions)]
    for name, check in checks:
        p = path / name
        if name in (CELL, *METRIC_FILES.values()) or p.exists():
            try:
                if not p.is_file():
                    raise StoreError(f"{p}: missing")
                check(p)
            except StoreError as exc:
                problems.append(str(exc))
    return problems


def verify_cell(path: Path, done: dict[str, Any] | None = None) -> tuple[list[str], bool]:
    """Check a done cell's files against its ``done.json``.

    Returns:
        ``(problems, legacy)``: one message per damaged file (each starts with the file's path);
        ``legacy`` is ``True`` for a cell without recorded checksums (checked for readability only).
    """
    path = Path(path)
    if done is None:
        try:
            done = read_json(path / DONE)
        except StoreError as exc:
            return [str(exc)], False
    artefacts = done.get("artefacts") if isinstance(done, dict) else None
    if not isinstance(artefacts, dict):
        return _readability_problems(path), True
    problems = []
    for name in sorted(set(artefacts) | {CELL, *METRIC_FILES.values()}):
        p, want = path / name, artefacts.get(name)
        if want is None:
            problems.append(f"{p}: not recorded in {DONE}")
        elif not p.is_file():
            problems.append(f"{p}: missing (recorded in {DONE})")
        else:
            got = file_digest(p)
            if got["size"] != want.get("size"):
                problems.append(f"{p}: size {got['size']} bytes, {DONE} recorded {want.get('size')}")
            elif got["sha256"] != want.get("sha256"):
                problems.append(f"{p}: SHA-256 differs from the one recorded in {DONE} (file was changed)")
    return problems, False


@dataclasses.dataclass
class CellRecord:
    """A cell as found in the store.

    Attributes:
        path: the cell directory.
        cell: contents of ``cell.json``.
        status: ``"done"``, ``"failed"`` or ``"incomplete"``.
        done: contents of ``done.json`` (or ``None``).
        error: contents of ``failed.json`` (or ``None``).
        legacy: a done cell without recorded checksums (verified for readability only).
    """

    path: Path
    cell: dict[str, Any]
    status: str
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    legacy: bool = False

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
        """Per-image metrics table (pandas DataFrame) of a done cell for ``"patch"`` or ``"image"``.

        Raises:
            StoreError: the CSV is unreadable, empty or truncated (names the file).
        """
        return read_metrics(self.path / METRIC_FILES[protocol])


def cell_status(path: Path) -> str:
    if (path / DONE).exists():
        return "done"
    if (path / FAILED).exists():
        return "failed"
    return "incomplete"


def cell_dirs(out: Path) -> list[Path]:
    found = {p.parent for name in (CELL, DONE) for p in out.glob(f"*/*/*/*/{name}")}
    return sorted(found)


def read_record(path: Path, verify: bool) -> CellRecord:
    """One cell as a record; raises :class:`StoreError` naming the damaged file(s)."""
    status = cell_status(path)
    if not (path / CELL).is_file():
        raise StoreError(f"{path / CELL}: missing from a cell that has {DONE}.")
    cell = read_json(path / CELL)
    if not isinstance(cell, dict) or any(k not in cell for k in ("method", "dataset", "ratio", "seed")):
        raise StoreError(f"{path / CELL}: not a cell description (method/dataset/ratio/seed missing).")
    rec = CellRecord(path=path, cell=cell, status=status)
    if status == "done":
        rec.done = read_json(path / DONE)
        if verify:
            problems, rec.legacy = verify_cell(path, rec.done)
            if problems:
                raise StoreError("; ".join(problems))
    elif status == "failed":
        try:
            rec.error = read_json(path / FAILED)
        except StoreError:
            rec.error = {"error": "unreadable failed.json"}
    return rec


def iter_cells(
    out: Path,
    *,
    verify: bool = True,
    skip_damaged: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Iterator[CellRecord]:
    """Every cell directory under ``out`` (those with a ``cell.json`` or ``done.json``), sorted by path.

    Args:
        verify: check every done cell against the checksums in its ``done.json`` (:func:`verify_cell`).
        skip_damaged: warn about a damaged cell and leave it out instead of raising.
        warn: where warnings go (default: :func:`warnings.warn` with :class:`StoreWarning`).

    Raises:
        StoreError: a damaged or unreadable cell (message names the file), unless ``skip_damaged``.
    """
    out = Path(out)
    if not out.is_dir():
        return
    warn = warn or (lambda msg: warnings.warn(msg, StoreWarning, stacklevel=3))
    legacy = 0
    for path in cell_dirs(out):
        try:
            rec = read_record(path, verify)
        except StoreError as exc:
            if not skip_damaged:
                raise StoreError(f"damaged cell {path}: {exc}. Re-run `benchmark run` with the same "
                                 f"arguments to recompute it, or pass --skip-damaged to leave it out.") from None
            warn(f"skipping damaged cell {path}: {exc}")
            continue
        legacy += rec.legacy
        yield rec
    if legacy:
        warn(f"{legacy} done cell(s) under {out} predate checksums: checked for readability only "
             f"(re-run them with --force to record checksums).")


@dataclasses.dataclass
class StoreCheck:
    """What :func:`verify_store` found: damaged cells (with the reason), legacy cells, done count."""

    damaged: list[tuple[Path, str]]
    legacy: list[Path]
    done: int


def verify_store(out: Path) -> StoreCheck:
    """Read and verify every cell under ``out`` (never raises for damage; lists it)."""
    check = StoreCheck(damaged=[], legacy=[], done=0)
    for path in cell_dirs(Path(out)):
        try:
            rec = read_record(path, verify=True)
        except StoreError as exc:
            check.damaged.append((path, str(exc)))
            continue
        if rec.status == "done":
            check.done += 1
            if rec.legacy:
                check.legacy.append(path)
    return check
