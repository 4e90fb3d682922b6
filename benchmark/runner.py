"""The grid runner behind ``python -m benchmark run``.

The grid is methods × datasets × ratios × seeds (× sweep values). Each cell trains one method on one
split, predicts every test patch once, and evaluates both protocols from those predictions:

- ``patch``: metrics per 256×256 test patch (overlapping, as the paper did);
- ``image``: patch predictions stitched into whole test images, metrics per image.

Cells live in the result store (:mod:`benchmark.store`); a finished cell is never recomputed unless
``force``; an interrupted cell resumes from the method's last checkpoint; a failing cell is recorded
and the grid goes on. Methods with a ``teacher`` (BASS and friends) reuse the teacher's cell: the
teacher is trained once per (dataset, ratio, seed, profile) and shared.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import options, store
from benchmark.api import Method
from benchmark.catalog import METHODS, PAPER_DATASETS, get_method
from benchmark.data import dataset_key, manifest_for, open_dataset
from benchmark.data.base import DatasetError, DatasetNotFoundError
from benchmark.envinfo import distribution_of, environment
from benchmark.eta import EtaModel
from benchmark.profiles import Profile

log = logging.getLogger("benchmark.runner")

DEFAULT_RATIOS = ("1/8", "1/4", "1/2")


class GridError(Exception):
    """The grid cannot start (bad names, missing data without --skip-missing)."""


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """One cell of the grid.

    Attributes:
        method: registered method name.
        dataset: dataset spec (registered name or ``folder:PATH``).
        ratio: labeled ratio, ``"1/8"``, ``"1/4"`` or ``"1/2"``.
        seed: training seed.
        options: method options (``--set``/``--sweep`` values) as sorted ``(key, value)`` pairs.
    """

    method: str
    dataset: str
    ratio: str
    seed: int
    options: tuple[tuple[str, Any], ...] = ()

    def label(self) -> str:
        opts = "".join(f" {k}={v}" for k, v in self.options)
        return f"{self.method}{opts} | {dataset_key(self.dataset)} | {self.ratio} | seed {self.seed}"


@dataclasses.dataclass
class GridConfig:
    """Everything ``benchmark run`` was asked to do.

    Attributes:
        methods, datasets, ratios, seeds: the grid axes.
        profile: the training profile (after ``--set profile.x=...`` overrides).
        device: resolved device string.
        out: result store root.
        data_root: ``--data-root`` (``None``: environment / default).
        overrides: ``{"bass.alpha": "0.3", ...}`` method option overrides (strings from the CLI).
        sweeps: ``{"bass.alpha": ["0.1", "0.3"]}``: one cell per value.
        force: recompute finished cells.
        skip_missing: run the datasets that are present when some are missing.
        progress: per-cell training bars.
        lock_timeout: seconds without a heartbeat after which a cell lock from another host is stale
            (:mod:`benchmark.locks`).
        split_recipe: labeled-subset recipe, ``"paper"`` or ``"image"`` (see :mod:`benchmark.data.splits`).
    """

    methods: list[str]
    datasets: list[str]
    ratios: list[str]
    seeds: list[int]
    profile: Profile
    device: str = "cpu"
    out: Path = Path("results")
    data_root: Path | None = None
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)
    sweeps: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    force: bool = False
    skip_missing: bool = False
    progress: bool = True
    lock_timeout: float = 1800.0
    split_recipe: str = "paper"


# ---------------------------------------------------------------------------------- option handling
def _applies(prefix: str, cls: type[Method]) -> bool:
    return prefix in (cls.name, cls.family)


def method_options(cls: type[Method], assignments: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``{"prefix.key": value}`` assignments that reach method ``cls``."""
    out = {}
    for key, value in assignments.items():
        prefix, _, opt = key.partition(".")
        if opt and _applies(prefix, cls):
            out[opt] = value
    return out


def validate_assignments(assignments: dict[str, Any], methods: Sequence[str]) -> None:
    """Every ``prefix.key`` must reach at least one requested method and every value must be valid there.

    ``assignments`` maps ``"prefix.key"`` to a value (``--set``) or a list of values (``--sweep``); each
    value is coerced and validated through the option declaration of every method it reaches.

    Raises:
        GridError: naming the key, the value and what is allowed (exit code 2 on the CLI).
    """
    for key, value in assignments.items():
        prefix, _, opt = key.partition(".")
        if not opt:
            raise GridError(f"--set/--sweep {key!r}: expected METHOD.option=value or profile.field=value")
        targets = [get_method(m) for m in methods if _applies(prefix, get_method(m))]
        if not targets:
            raise GridError(
                f"--set/--sweep {key!r}: {prefix!r} matches none of the requested methods "
                f"({', '.join(methods)}); use a method name, a family (e.g. 'bass') or 'profile'"
            )
        values = value if isinstance(value, list) else [value]
        if not values:
            raise GridError(f"--sweep {key}=: no values; give comma-separated values, e.g. --sweep {key}=V1,V2")
        for cls in targets:
            if cls.Options is None:
                continue
            for v in values:
                try:
                    options.parse(cls.Options, opt, v, owner=prefix)
                except options.OptionError as exc:
                    where = "" if prefix == cls.name else f" (method {cls.name!r})"
                    raise GridError(f"--set/--sweep {exc}{where}") from None


def canonical_options(cls: type[Method], opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` as they enter the cell key: each value coerced through ``cls.Options`` and written in its
    one canonical spelling (``"0.30"`` and ``"0.3"`` are the same cell). Undeclared options stay as given."""
    if cls.Options is None:
        return dict(opts)
    return {k: options.canonical_text(options.parse(cls.Options, k, v, owner=cls.name)) for k, v in opts.items()}


def check_constructible(cfg: GridConfig) -> None:
    """Build every (method, options) combination of the grid once, so that an invalid combination (e.g.
    ``nmh=false`` with ``lrd=false``) stops the grid before any cell, teachers included, starts."""
    sweep_keys = sorted(cfg.sweeps)
    for values in itertools.product(*(cfg.sweeps[k] for k in sweep_keys)):
        assign = {**cfg.overrides, **dict(zip(sweep_keys, values))}
        for method in cfg.methods:
            cls = get_method(method)
            opts = method_options(cls, assign)
            try:
                cls(**opts)
            except (ValueError, TypeError) as exc:
                shown = " ".join(f"{k}={v}" for k, v in sorted(opts.items())) or "(defaults)"
                raise GridError(f"method {method!r} with {shown}: {exc}") from None


def expand_cells(cfg: GridConfig, datasets: Sequence[str]) -> list[CellSpec]:
    """Cells in run order: dataset, ratio, seed, then methods (teachers first)."""
    sweep_keys = sorted(cfg.sweeps)
    sweep_values = list(itertools.product(*(cfg.sweeps[k] for k in sweep_keys))) or [()]
    cells: list[CellSpec] = []
    for ds, ratio, seed in itertools.product(datasets, cfg.ratios, cfg.seeds):
        for method in _teacher_first(cfg.methods):
            cls = get_method(method)
            for values in sweep_values:
                assign = dict(cfg.overrides)
                assign.update(dict(zip(sweep_keys, values)))
                opts = canonical_options(cls, method_options(cls, assign))
                cell = CellSpec(method, ds, ratio, seed, tuple(sorted(opts.items())))
                if cell not in cells:
                    cells.append(cell)
    return cells


def _eta_row(cell: CellSpec) -> tuple[str, str, str, bool, str | None]:
    cls = get_method(cell.method)
    return cell.method, cell.dataset, cell.ratio, bool(cls.deep), cls.teacher


def eta_text(seconds: float, unmeasured: Sequence[str]) -> str:
    """``", ETA 2m10s"``, saying which methods are still priced on borrowed rates."""
    guess = f" ({', '.join(unmeasured)} not measured yet)" if unmeasured else ""
    return f", ETA {_fmt_secs(seconds)}{guess}"


def _teacher_first(methods: Sequence[str]) -> list[str]:
    teachers = [m for m in methods if any(get_method(o).teacher == m for o in methods)]
    return teachers + [m for m in methods if m not in teachers]


# ---------------------------------------------------------------------------------- the runner
class Runner:
    """Runs a grid into a result store. See :class:`GridConfig`."""

    def __init__(self, cfg: GridConfig, *, echo: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._datasets: dict[str, Any] = {}
        self._manifests: dict[str, dict] = {}
        self._splits: dict[tuple, Any] = {}
        self._damage: dict[Path, list[str]] = {}
        self.legacy_cells: list[Path] = []

    # ---------------------------------------------------------------- planning
    def check_out(self, *, create: bool) -> None:
        """``--out`` must be (or be creatable as) a writable folder; raises :class:`GridError` if not."""
        out = self.out
        for parent in [out, *out.parents]:
            if parent.exists():
                if not parent.is_dir():
                    what = "is a file" if parent == out else f"is under {parent}, which is a file"
                    raise GridError(f"--out {out}: {what}; pass a folder for the result store.")
                break
        if not create:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
            store.atomic_write_text(out / ".write-test", "")
            (out / ".write-test").unlink()
        except OSError as exc:
            raise GridError(f"--out {out}: cannot write the result store there ({exc.strerror or exc}); "
                            f"pass a folder you can write to.") from None

    def cell_state(self, path: Path) -> str:
        """``cell_status`` with done cells verified: a damaged done cell is ``"damaged"``."""
        status = store.cell_status(path)
        if status != "done":
            return status
        problems, legacy = store.verify_cell(path)
        if problems:
            self._damage[path] = problems
            return "damaged"
        if legacy and path not in self.legacy_cells:
            self.legacy_cells.append(path)
        return status

    def check_names(self) -> None:
        """Validate every name, option, sweep value and seed before anything runs (also ``--dry-run``)."""
        cfg = self.cfg
        for axis, values in (("--methods", cfg.methods), ("--datasets", cfg.datasets),
                             ("--ratios", cfg.ratios), ("--seeds", cfg.seeds)):
            if not values:
                raise GridError(f"{axis}: no value given; the grid would have 0 cells")
        for m in cfg.methods:
            get_method(m)  # raises UnknownNameError / PluginLoadError with the available names
        for seed in cfg.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise GridError(f"--seeds: seed {seed!r} is not allowed; seeds are integers >= 0")
        validate_assignments({**cfg.overrides, **cfg.sweeps}, cfg.methods)
        for r in cfg.ratios:
            if r not in DEFAULT_RATIOS:
                raise GridError(f"unknown ratio {r!r}; available: {', '.join(DEFAULT_RATIOS)}")
        check_constructible(cfg)

    def resolve_datasets(self) -> list[str]:
        """Expand ``all`` and check presence. Returns the dataset specs to run."""
        specs: list[str] = []
        for d in self.cfg.datasets:
            for s in PAPER_DATASETS if d == "all" else (d,):
                if s not in specs:
                    specs.append(s)
        present, missing, broken = [], [], []
        for spec in specs:
            try:
                ds = open_dataset(spec, self.cfg.data_root)
                found = ds.is_present()
            except DatasetNotFoundError as exc:
                missing.append((spec, str(exc)))
                continue
            except DatasetError as exc:  # present but unusable: say exactly why, never "missing"
                broken.append((spec, str(exc)))
                continue
            if found:
                self._datasets[spec] = ds
                present.append(spec)
            else:
                missing.append((spec, ds.missing_message()))
        if broken:
            text = "\n\n".join(f"[{s}] {msg}" for s, msg in broken)
            raise GridError(f"{len(broken)} dataset(s) cannot be used:\n\n{text}")
        if missing:
            text = "\n\n".join(f"[{s}] {msg}" for s, msg in missing)
            if not self.cfg.skip_missing or not present:
                raise GridError(
                    f"{len(missing)} dataset(s) missing:\n\n{text}\n\n"
                    + ("Re-run with --skip-missing to run the present ones only." if present else
                       "No dataset is present. Try the embedded one first: --datasets synthetic (no download); "
                       "with some datasets downloaded, add --skip-missing to run the present ones only.")
                )
            self.echo(f"skipping {len(missing)} missing dataset(s):\n{text}\n")
        return present

    def cell_key(self, cell: CellSpec) -> dict[str, Any]:
        cls = get_method(cell.method)
        manifest = self.manifest(cell.dataset)
        return {
            "method": cell.method,
            "method_version": cls.version,
            "method_options": dict(cell.options),
            "dataset": dataset_key(cell.dataset),
            "split_hash": store.stable_hash(manifest, 16),
            "ratio": cell.ratio,
            "seed": cell.seed,
            "profile": self.cfg.profile.name,
            "profile_digest": self.cfg.profile.digest() if cls.deep else None,
            **_ddp_key(cls),
            # only a non-default recipe enters the key: paper cells keep the keys they had before recipes
            **({"split_recipe": self.cfg.split_recipe} if self.cfg.split_recipe != "paper" else {}),
        }

    def cell_dir(self, cell: CellSpec) -> Path:
        key = self.cell_key(cell)
        tag = f"seed{cell.seed}-{self.cfg.profile.name}-{store.stable_hash(key)}"
        return self.out / dataset_key(cell.dataset) / store.ratio_slug(cell.ratio) / cell.method / tag

    def manifest(self, spec: str) -> dict:
        if spec not in self._manifests:
            ds = self._datasets.get(spec) or open_dataset(spec, self.cfg.data_root)
            self._datasets[spec] = ds
            self._manifests[spec] = manifest_for(ds, spec, split_recipe=self.cfg.split_recipe)
        return self._manifests[spec]

    def plan(self) -> list[tuple[CellSpec, Path, str]]:
        """``(cell, directory, status)`` for every cell, teachers included."""
        self.check_names()
        self.check_out(create=False)
        datasets = self.resolve_datasets()
        cells = expand_cells(self.cfg, datasets)
        extra = []
        for c in cells:
            teacher = get_method(c.method).teacher
            if teacher:
                t = CellSpec(teacher, c.dataset, c.ratio, c.seed, ())
                if t not in cells and t not in extra:
                    extra.append(t)
        cells = extra + cells
        rows = []
        for c in cells:
            d = self.cell_dir(c)
            rows.append((c, d, self.cell_state(d)))
        return rows

    # ---------------------------------------------------------------- running
    def run(self) -> int:
        """Run every cell; returns the number of failed cells."""
        rows = self.plan()
        self.check_out(create=True)
        total = len(rows)
        todo = [r for r in rows if self.cfg.force or r[2] != "done"]
        self.check_teacher_weights(rows)
        self.echo(
            f"grid: {total} cell(s), {total - len(todo)} already done, {len(todo)} to run "
            f"→ {self.out}"
        )
        if self.legacy_cells:
            self.echo(f"warning: {len(self.legacy_cells)} done cell(s) predate checksums and were checked "
                      f"for readability only; re-run them with --force to record checksums.")
        failed = 0
        rates = EtaModel(self.cfg.profile.iterations)
        done_count = total - len(todo)
        busy: list[tuple[CellSpec, Path]] = []
        for i, (cell, path, _status) in enumerate(todo):
            rows = [_eta_row(c) for c, _p, _s in todo[i:]]
            left = rates.estimate(rows) if i else None
            eta = eta_text(left, rates.unmeasured(rows)) if left is not None else ""
            self.echo(
                f"[{done_count}/{total} done, {failed} failed, {len(todo) - i} left{eta}] {cell.label()}"
            )
            if _status == "damaged":
                self._announce_damage(path)
            t0 = time.time()
            outcome = self.run_locked(cell, path, wait=False)
            if outcome == "busy":
                self.echo("  held by another process; coming back to it at the end")
                busy.append((cell, path))
                continue
            rates.observe_dir(cell.method, cell.dataset, cell.ratio, path, time.time() - t0)
            done_count, failed = done_count + (outcome == "done"), failed + (outcome == "failed")
        for cell, path in busy:  # cells another process was training: wait, take over if it died
            outcome = self.run_locked(cell, path, wait=True)
            done_count, failed = done_count + (outcome == "done"), failed + (outcome == "failed")
        self.echo(f"grid finished: {done_count}/{total} done, {failed} failed. Results in {self.out}")
        return failed

    def check_teacher_weights(self, rows: list[tuple[CellSpec, Path, str]]) -> None:
        """Refuse, before any training, a student whose done teacher cell kept no weights.

        Why: cells are published without ``work/`` (e.g. the committed ``reports/*/store``); a student needs
        the teacher's ``work/model.pt``, and silently retraining the teacher would give the student a
        different teacher from the one whose scores the store reports. ``rows``: :meth:`plan`'s (every
        teacher cell is among them, with its verified status)."""
        from methods.core.persist import MODEL_FILE

        where = {c: (d, status) for c, d, status in rows}
        todo = {c for c, (_d, status) in where.items() if self.cfg.force or status != "done"}
        missing, teachers = [], set()
        for cell in todo:
            teacher = get_method(cell.method).teacher
            tcell = CellSpec(teacher, cell.dataset, cell.ratio, cell.seed, ()) if teacher else None
            if tcell is None or tcell in todo or tcell not in where:
                continue
            tdir, tstatus = where[tcell]
            if tstatus == "done" and not (tdir / "work" / MODEL_FILE).is_file():
                missing.append(f"{cell.label()} needs {tdir / 'work' / MODEL_FILE}")
                teachers.add(teacher)
        if missing:
            raise GridError(
                "teacher cell(s) are done but kept no weights (published without work/):\n  "
                + "\n  ".join(sorted(missing))
                + f"\nfix: add {','.join(sorted(teachers))} to --methods with --force (their stored scores are "
                "recomputed), or run into another --out"
            )

    def run_locked(self, cell: CellSpec, path: Path, *, wait: bool) -> str:
        """Claim the cell's lock, run it, release: ``"done"``, ``"failed"`` or ``"busy"``.
        See :func:`benchmark.executors.cellrun.run_locked` (every executor's entry point)."""
        from benchmark.executors.cellrun import run_locked

        return run_locked(self, cell, path, wait=wait)

    def _announce_damage(self, path: Path) -> None:
        problems = self._damage.get(path, ["unknown damage"])
        self.echo(f"  recomputing a damaged cell: {'; '.join(problems)}")

    def run_cell(self, cell: CellSpec, path: Path) -> bool:
        """Train, predict and evaluate one cell (its lock held). Returns ``True`` on success; failures
        are recorded in ``failed.json`` and return ``False``, except a full disk, which raises
        :class:`~benchmark.store.DiskFullError` (after recording it, if there is room) to stop the grid."""
        if (self.cfg.force or path in self._damage) and path.exists():
            from benchmark.locks import GUARD, LOCK

            for child in path.iterdir():  # keep the lock this process holds
                if child.name not in (LOCK, GUARD):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            self._damage.pop(path, None)
        path.mkdir(parents=True, exist_ok=True)
        store.remove_orphan_temps(path)
        (path / store.FAILED).unlink(missing_ok=True)
        logfile = path / "run.log"
        handler = logging.FileHandler(logfile)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
        t0 = time.time()
        try:
            self._run_cell(cell, path, t0)
            return True
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failing cell must not stop the grid (a full disk does: see below)
            log.exception("cell failed: %s", cell.label())
            full = store.disk_full(exc, path)
            error = f"DiskFullError: {full.strerror}" if full else f"{type(exc).__name__}: {exc}"
            details = f" (details: {path / store.FAILED})"
            try:
                store.atomic_write_json(path / store.FAILED, {
                    "error": error, "traceback": traceback.format_exc(), "seconds": time.time() - t0})
            except OSError as write_exc:  # the disk may be too full even for failed.json
                full = full or store.disk_full(write_exc, path)
                if full is None:
                    raise
                details = " (no room for failed.json either)"
            self.echo(f"  FAILED: {error}{details}")
            if full is None:
                return self._failed_under_ddp(cell, error + details, exc)
            if full is exc:  # a teacher trained inside this cell hit it: pass it on as it is
                raise
            raise full from exc  # every further cell would fail the same way, after minutes of training
        finally:
            root.removeHandler(handler)
            handler.close()

    @staticmethod
    def _failed_under_ddp(cell: CellSpec, error: str, exc: BaseException) -> bool:
        """``False`` (the grid goes on), except under DDP when only some ranks failed: the others are then
        inside a collective (a gradient all-reduce) and would hang in it, so this rank ends the run."""
        from benchmark import distributed

        ctx = distributed.context()
        if isinstance(exc, distributed.RankFailedError):  # from a teacher trained inside this cell
            raise exc
        if ctx is None or distributed.all_failed():
            return False
        raise distributed.RankFailedError(f"{cell.label()} failed on rank {ctx.rank}: {error}") from exc

    def _teacher_dir(self, teacher: str, cell: CellSpec) -> Path:
        """The teacher's cell directory, after training it if it is not done (or damaged)."""
        tcell = CellSpec(teacher, cell.dataset, cell.ratio, cell.seed, ())
        tdir = self.cell_dir(tcell)
        if self.cell_state(tdir) != "done":
            if tdir in self._damage:
                self._announce_damage(tdir)
            self.echo(f"  training teacher {teacher!r} first")
            # the lock makes a second worker wait for this teacher instead of training it again
            if self.run_locked(tcell, tdir, wait=True) != "done":
                raise RuntimeError(f"teacher cell failed, see {tdir / store.FAILED}")
        return tdir

    def _split(self, cell: CellSpec, needs: frozenset[str]):
        from benchmark.data.splits import build_split

        key = (cell.dataset, cell.ratio, needs)
        if key not in self._splits:
            self._splits[key] = build_split(
                self._datasets[cell.dataset], self.manifest(cell.dataset), cell.ratio, needs=needs
            )
        return self._splits[key]

    def _write_cell_header(self, cell: CellSpec, cls: type[Method], method: Method, path: Path) -> None:
        """``cell.json`` (the full key, the method's config and facts) and ``env.json`` (versions, commit)."""
        key = self.cell_key(cell)
        dist, dist_version = distribution_of(cls.__module__)
        store.atomic_write_json(
            path / store.CELL,
            {
                **key,
                "dataset_spec": cell.dataset,
                "method_config": method.config(),
                "method_class": f"{cls.__module__}:{cls.__qualname__}",
                "needs": sorted(cls.needs),
                "supervision": sorted(cls.needs),
                "approximation": cls.approximation,
                "approximation_tag": getattr(cls, "approximation_tag", None), "teacher": cls.teacher,
                "split_recipe": self.cfg.split_recipe,
                "profile_config": self.cfg.profile.to_dict() if cls.deep else None,
            },
        )
        env = environment(self.cfg.device)
        env["method_distribution"] = {"name": dist, "version": dist_version}
        store.atomic_write_json(path / "env.json", env)

    def _predict_test(self, method: Method, split, path: Path) -> dict[str, np.ndarray]:
        """Predict every test patch (sharded over DDP ranks, gathered on every rank) and store them."""
        from benchmark.distributed import shard_map

        patches = split.test_patches
        preds = shard_map(lambda imgs: predict_in_chunks(method, imgs, progress=self.cfg.progress),
                          [p.image for p in patches])
        pred_map = {p.id: m for p, m in zip(patches, preds)}
        store.save_predictions(path / "predictions.npz", pred_map)
        save_examples(path / "examples.npz", patches)
        return pred_map

    def _run_cell(self, cell: CellSpec, path: Path, t0: float) -> None:
        cls = get_method(cell.method)
        method = cls(**dict(cell.options))
        self._write_cell_header(cell, cls, method, path)
        split = self._split(cell, frozenset(cls.needs))
        if cls.teacher:
            method.teacher_workdir = self._teacher_dir(cls.teacher, cell) / "work"
        workdir = path / "work"
        workdir.mkdir(exist_ok=True)
        log.info("fit %s on %d labeled / %d unlabeled patches", cell.label(),
                 len(split.train.labeled), len(split.train.unlabeled))
        t_fit = time.time()
        method.fit(
            split.train,
            profile=self.cfg.profile,
            seed=cell.seed,
            device=self.cfg.device,
            workdir=workdir,
            progress=self.cfg.progress,
        )
        fit_s = time.time() - t_fit

        t_pred = time.time()
        pred_map = self._predict_test(method, split, path)
        pred_s = time.time() - t_pred

        patch_table, image_table = evaluate_both_protocols(split, pred_map)
        patch_table.to_csv(path / "metrics_patch.csv", index=False)
        image_table.to_csv(path / "metrics_image.csv", index=False)
        val_table = self._evaluate_val(method, split, path)  # for selection (sweeps); never for Table 1

        from benchmark.evaluation import summarize

        summary = {
            "patch": {m: summarize(patch_table, mode=m) for m in ("mean", "aggregated")},
            "image": {m: summarize(image_table, mode=m) for m in ("mean", "aggregated")},
        }
        extra = getattr(method, "fit_info", None)
        store.seal_cell(
            path,
            {
                "summary": summary,
                "fit_seconds": fit_s,
                "predict_seconds": pred_s,
                "total_seconds": time.time() - t0,
                "n_labeled": len(split.train.labeled),
                "n_unlabeled": len(split.train.unlabeled),
                "n_test_patches": len(split.test_patches),
                "n_test_images": len(split.test_images),
                "n_val_patches": len(val_table),
                "fit_info": extra if isinstance(extra, dict) else None,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        aji = summary["patch"]["mean"].get("aji")
        self.echo(f"  done in {_fmt_secs(time.time() - t0)}: patch AJI {aji:.4f}" if aji is not None
                  else "  done")

    def _evaluate_val(self, method: Method, split, path: Path):
        """Per-patch metrics of the validation patches, written to ``metrics_val.csv`` (empty table
        when the split has none)."""
        from benchmark.evaluation import evaluate_patches

        val = list(split.train.val)
        preds = predict_in_chunks(method, [p.image for p in val], progress=self.cfg.progress) if val else []
        table = evaluate_patches(val, preds, protocol="patch")
        table.to_csv(path / "metrics_val.csv", index=False)
        return table


def _ddp_key(cls: type[Method]) -> dict[str, Any]:
    """``{"ddp": settings}`` for a deep cell trained by several DDP ranks; ``{}`` otherwise."""
    from benchmark.distributed import describe

    ddp = describe() if cls.deep else None
    return {"ddp": ddp} if ddp else {}


def predict_in_chunks(
    method: Method, images: Sequence[np.ndarray], *, chunk: int = 16, progress: bool = True
) -> list[np.ndarray]:
    """``method.predict`` over ``images`` in chunks (with a progress bar), validating the contract."""
    from benchmark.progress import progress_bar

    out: list[np.ndarray] = []
    bar = progress_bar(len(images), desc="predict", unit="patch", enabled=progress, leave=False)
    for start in range(0, len(images), chunk):
        batch = list(images[start : start + chunk])
        preds = method.predict(batch)
        if len(preds) != len(batch):
            raise RuntimeError(f"{method.name}.predict returned {len(preds)} maps for {len(batch)} images")
        for img, p in zip(batch, preds):
            p = np.asarray(p)
            if p.shape != img.shape[:2]:
                raise RuntimeError(
                    f"{method.name}.predict returned shape {p.shape} for an image of {img.shape[:2]}"
                )
            out.append(p.astype(np.int32, copy=False))
        bar.update(len(batch))
    bar.close()
    return out


def evaluate_both_protocols(split, pred_map: dict[str, np.ndarray]):
    """Per-patch table (paper protocol) and per-image table (patch predictions stitched)."""
    from benchmark.evaluation import InstanceEvaluator

    ev = InstanceEvaluator(protocol="patch")
    ev.reset()
    patches = split.test_patches
    ev.process([p.id for p in patches], [p.label for p in patches], [pred_map[p.id] for p in patches])
    patch_table = ev.table()

    stitched = split.stitch_test_predictions(pred_map)
    ev_img = InstanceEvaluator(protocol="image")
    ev_img.reset()
    names = [rec.name for rec in split.test_images]
    ev_img.process(names, [rec.label for rec in split.test_images], [stitched[n] for n in names])
    return patch_table, ev_img.table()


def save_examples(path: Path, patches, n: int = 3) -> None:
    """Keep ``n`` evenly spaced test patches (image + ground truth) for the qualitative figure."""
    if not patches:
        return
    idx = np.linspace(0, len(patches) - 1, num=min(n, len(patches))).round().astype(int)
    chosen = [patches[i] for i in sorted(set(idx.tolist()))]
    np.savez_compressed(
        path,
        ids=np.array([p.id for p in chosen]),
        images=np.stack([p.image for p in chosen]),
        labels=np.stack([p.label for p in chosen]).astype(np.int32),
    )


def parse_patch_id(pid: str) -> tuple[str, tuple[int, int]]:
    """``"name@128_256"`` → ``("name", (128, 256))``."""
    name, _, pos = pid.rpartition("@")
    r, _, c = pos.partition("_")
    return name, (int(r), int(c))


def _fmt_secs(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def dry_run_rows(runner: Runner) -> list[dict[str, Any]]:
    """What ``--dry-run`` prints: each cell with its status and directory."""
    return [
        {"cell": c.label(), "status": status, "dir": str(d)} for c, d, status in runner.plan()
    ]


def describe_methods() -> list[dict[str, Any]]:
    """Rows for ``benchmark list``: name, description, supervision, approximation, dist, deep and the
    declared options (:func:`benchmark.options.describe`)."""
    from benchmark.api import supervision_label

    rows = []
    for name, entry, cls in METHODS.describe():
        if cls is None:
            rows.append({"name": name, "description": f"BROKEN: {entry.error}", "supervision": "?",
                         "dist": entry.dist, "approximation": None})
            continue
        rows.append({
            "name": name,
            "description": cls.description,
            "supervision": supervision_label(cls),
            "approximation": cls.approximation,
            "dist": entry.dist,
            "deep": cls.deep,
            "options": options.describe(cls.Options) if cls.Options is not None else [],
        })
    return rows


__all__ = [
    "CellSpec",
    "GridConfig",
    "GridError",
    "Runner",
    "dry_run_rows",
    "describe_methods",
]
