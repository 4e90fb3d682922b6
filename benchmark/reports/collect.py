"""Read the result store into tidy tables (no training, no inference: reports are instant).

A *result* is one cell key minus the seed (method, version, options, dataset, split hash, split
recipe, ratio, profile, profile digest) over all its seeds. Cells that differ in any key field are
never merged: a duplicate seed within one key is an error. The score of each seed is the chosen
aggregate of its per-unit table; the reported score is the mean over seeds; the per-unit AJI of
every seed is kept (``per_unit``) for the image-level paired tests.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reports.methods_info import method_sort_key
from benchmark.store import CellRecord, iter_cells

METRICS = ("dice", "aji", "pq")
#: the fields of a cell key (``Runner.cell_key``) that identify a result; the seed is the other one.
KEY_FIELDS = ("method", "method_version", "method_options", "dataset", "split_hash", "split_recipe",
              "ratio", "profile", "profile_digest")
VAL_FILE = "metrics_val.csv"

RATIO_ORDER = ("1/8", "1/4", "1/2")


def options_label(options: dict[str, Any]) -> str:
    """``{"alpha": 0.3}`` → ``"alpha=0.3"`` (empty for defaults)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


@dataclasses.dataclass
class Result:
    """One cell key minus the seed, over its seeds.

    Attributes:
        method, variant: method name and its non-default options (``"alpha=0.3"`` or ``""``).
        dataset, ratio: where it ran (``dataset`` gets ``#<split hash>`` appended when one store
            holds several splits of the same dataset name).
        status: ``"done"`` (all seeds done), ``"failed"`` (some seed failed), ``"incomplete"``.
        scores: metric → mean over seeds (``None`` unless done); per_seed: metric → per-seed scores.
        per_unit: per-unit test AJI, one column per seed (index = patch or image id).
        val_scores: metric → mean over seeds on the validation patches (``None`` when a seed has none).
        seeds, needs, options, errors: as found in the cells; seeds_done: those of ``seeds`` that finished.
        profile, split_hash, split_recipe: the rest of the key (recipe ``"paper"`` when unrecorded).
        approximation, approximation_tag: how the method departs from its paper (cell.json).
        budget: training budget (``profile_iterations``, ``stage_iterations``, ``starts_from_teacher``).
    """

    method: str
    variant: str
    dataset: str
    ratio: str
    status: str
    scores: dict[str, float] | None
    per_seed: dict[str, list[float]]
    per_unit: pd.DataFrame | None
    seeds: list[int]
    needs: list[str]
    options: dict[str, Any]
    errors: list[str]
    profile: str = ""
    split_hash: str = ""
    split_recipe: str = "paper"
    val_scores: dict[str, float] | None = None
    approximation: str | None = None
    approximation_tag: str | None = None
    budget: dict[str, Any] = dataclasses.field(default_factory=dict)
    seeds_done: list[int] = dataclasses.field(default_factory=list)

    @property
    def row_label(self) -> str:
        return self.method + (f" ({self.variant})" if self.variant else "")

    @property
    def per_image(self) -> pd.Series | None:
        """Per-unit AJI averaged over seeds (what the figures show)."""
        return None if self.per_unit is None else self.per_unit.mean(axis=1)

    @property
    def setting(self) -> tuple[str, str]:
        """``(profile, split recipe)``: results of different settings go to different tables."""
        return (self.profile, self.split_recipe)


def _score(table: pd.DataFrame, aggregation: str) -> dict[str, float]:
    from benchmark.evaluation import summarize

    s = summarize(table, mode=aggregation)
    return {m: float(s[m]) for m in METRICS}


def result_key(cell: dict[str, Any]) -> tuple:
    """The identity of a cell without its seed (missing fields are ``None``; recipe defaults to paper)."""
    fields = {f: cell.get(f) for f in KEY_FIELDS}
    fields["split_recipe"] = fields["split_recipe"] or "paper"
    fields["method_options"] = fields["method_options"] or {}
    return tuple(json.dumps(fields[f], sort_keys=True, default=str) for f in KEY_FIELDS)


def group_cells(records: Iterable[CellRecord], methods: Sequence[str] | None = None) -> list[list[CellRecord]]:
    """Cells grouped by :func:`result_key`, each group sorted by seed.

    Raises:
        ValueError: two cells of one key share a seed (names both directories).
    """
    groups: dict[tuple, list[CellRecord]] = {}
    for rec in records:
        if methods and rec.method not in methods:
            continue
        groups.setdefault(result_key(rec.cell), []).append(rec)
    for recs in groups.values():
        recs.sort(key=lambda r: r.seed)
        for a, b in itertools.pairwise(recs):
            if a.seed == b.seed:
                raise ValueError(
                    f"two cells with the same key have seed {a.seed}: {a.path} and {b.path}. A store must "
                    f"hold each seed once; remove (or move to another store) the copy you do not want."
                )
    return list(groups.values())


def collect(
    results: Path | Iterable[CellRecord],
    *,
    protocol: str = "patch",
    aggregation: str = "mean",
    methods: Sequence[str] | None = None,
) -> list[Result]:
    """Group the cells of a result store into :class:`Result` objects (one per key minus seed)."""
    records = list(iter_cells(Path(results))) if isinstance(results, (str, Path)) else list(results)
    out = [_result(recs, protocol, aggregation) for recs in group_cells(records, methods)]
    _label_split_collisions(out)
    out.sort(key=lambda r: (_ratio_key(r.ratio), method_sort_key(r.method), r.variant, r.dataset,
                            r.profile, r.split_recipe))
    return out


def _result(recs: list[CellRecord], protocol: str, aggregation: str) -> Result:
    first = recs[0].cell
    errors = [r.error.get("error", "?") for r in recs if r.status == "failed" and r.error]
    status = "done"
    if any(r.status == "failed" for r in recs):
        status = "failed"
    elif any(r.status != "done" for r in recs):
        status = "incomplete"
    per_seed: dict[str, list[float]] = {m: [] for m in METRICS}
    scores = per_unit = val_scores = None
    if status == "done":
        units = []
        for r in recs:
            table = r.metrics(protocol)
            sc = _score(table, aggregation)
            for m in METRICS:
                per_seed[m].append(sc[m])
            units.append(table.set_index("image_id")["aji"].rename(r.seed))
        scores = {m: float(np.mean(per_seed[m])) for m in METRICS}
        per_unit = pd.concat(units, axis=1)
        val_scores = _val_scores(recs, aggregation)
    opts = dict(first.get("method_options") or {})
    return Result(
        method=first["method"], variant=options_label(opts), dataset=first["dataset"], ratio=first["ratio"],
        status=status, scores=scores, per_seed=per_seed, per_unit=per_unit, seeds=[r.seed for r in recs],
        needs=list(first.get("needs") or []), options=opts, errors=errors,
        profile=str(first.get("profile", "")), split_hash=str(first.get("split_hash") or ""),
        split_recipe=str(first.get("split_recipe") or "paper"), val_scores=val_scores,
        approximation=first.get("approximation"), approximation_tag=first.get("approximation_tag"),
        budget=training_budget(recs), seeds_done=[r.seed for r in recs if r.status == "done"],
    )


def _val_scores(recs: Sequence[CellRecord], aggregation: str) -> dict[str, float] | None:
    """Mean over seeds of the validation scores; ``None`` when a seed has no ``metrics_val.csv``."""
    per_seed = []
    for r in recs:
        path = r.path / VAL_FILE
        if not path.exists():
            return None
        table = pd.read_csv(path)
        if len(table) == 0:
            return None
        per_seed.append(_score(table, aggregation))
    return {m: float(np.mean([s[m] for s in per_seed])) for m in METRICS}


def _stage_iterations(info: Any, prefix: str = "") -> list[str]:
    """``"teacher=500"``-style entries for every ``iterations`` recorded in a method's ``fit_info``."""
    if not isinstance(info, dict):
        return []
    out = []
    for k, v in sorted(info.items()):
        if k == "iterations" and isinstance(v, (int, float)):
            out.append(f"{prefix or 'model'}={int(v)}")
        elif isinstance(v, dict):
            out += _stage_iterations(v, f"{prefix}.{k}" if prefix else k)
    return out


def training_budget(recs: Sequence[CellRecord]) -> dict[str, Any]:
    """What a result trained: the profile's iterations, each stage's iterations, teacher start."""
    cell = recs[0].cell
    teacher = cell.get("teacher")
    if "teacher" not in cell:
        try:
            from benchmark.catalog import get_method

            teacher = get_method(cell["method"]).teacher
        except Exception:  # noqa: BLE001 - an unregistered plugin: the budget stays unknown
            teacher = "?"
    stages = _stage_iterations(((recs[0].done or {}).get("fit_info")) or {})
    profile = cell.get("profile_config") or {}
    return {
        "profile_iterations": profile.get("iterations"),
        "stage_iterations": "; ".join(stages),
        "starts_from_teacher": teacher if teacher else "",
    }


def _label_split_collisions(results: list[Result]) -> None:
    """Give ``dataset#hash`` labels to datasets whose name occurs with several split hashes."""
    hashes: dict[str, set[str]] = {}
    for r in results:
        hashes.setdefault(r.dataset, set()).add(r.split_hash)
    for r in results:
        if len(hashes[r.dataset]) > 1:
            r.dataset = f"{r.dataset}#{r.split_hash[:8] or 'unknown'}"


def _ratio_key(ratio: str) -> int:
    return RATIO_ORDER.index(ratio) if ratio in RATIO_ORDER else len(RATIO_ORDER)


def results_frame(results: Sequence[Result]) -> pd.DataFrame:
    """Every number of every result as a flat frame (what the CSV/JSON exports hold)."""
    rows = []
    for r in results:
        row = {
            "method": r.method, "variant": r.variant, "dataset": r.dataset, "ratio": r.ratio,
            "status": r.status, "seeds": ",".join(map(str, r.seeds)), "n_seeds": len(r.seeds),
            "needs": ",".join(r.needs), "profile": r.profile, "split_recipe": r.split_recipe,
            "split_hash": r.split_hash,
        }
        for m in METRICS:
            row[m] = r.scores[m] if r.scores else None
            vals = r.per_seed[m]
            row[f"{m}_seed_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            row[f"val_{m}"] = r.val_scores[m] if r.val_scores else None
        row.update(r.budget)
        row["approximation"] = r.approximation or ""
        rows.append(row)
    return pd.DataFrame(rows)
