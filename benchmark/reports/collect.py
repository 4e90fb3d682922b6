"""Read the result store into tidy tables (no training, no inference: reports are instant).

A *result* is one (method, options, dataset, ratio) over all its seeds: the score of each seed is the
chosen aggregate of its per-image table, and the reported score is the mean over seeds. The per-image
AJI used by the paired tests is averaged over seeds image by image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reports.methods_info import method_sort_key
from benchmark.store import CellRecord, iter_cells

METRICS = ("dice", "aji", "pq")

RATIO_ORDER = ("1/8", "1/4", "1/2")


def options_label(options: dict[str, Any]) -> str:
    """``{"alpha": 0.3}`` → ``"alpha=0.3"`` (empty for defaults)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


@dataclasses.dataclass
class Result:
    """One method variant on one dataset and ratio, over its seeds.

    Attributes:
        method, variant: method name and its non-default options (``"alpha=0.3"`` or ``""``).
        dataset, ratio: where it ran.
        status: ``"done"`` (all seeds done), ``"failed"`` (some seed failed), ``"incomplete"``.
        scores: metric → mean over seeds (``None`` unless done).
        per_seed: metric → list of per-seed scores.
        per_image: per-image AJI averaged over seeds (index = image/patch id).
        seeds: seeds found.
        needs: extra supervision the method declared (``points``/``boxes``).
        options: the raw options dict.
        errors: error messages of failed seeds.
    """

    method: str
    variant: str
    dataset: str
    ratio: str
    status: str
    scores: dict[str, float] | None
    per_seed: dict[str, list[float]]
    per_image: pd.Series | None
    seeds: list[int]
    needs: list[str]
    options: dict[str, Any]
    errors: list[str]
    profile: str = ""

    @property
    def row_label(self) -> str:
        return self.method + (f" ({self.variant})" if self.variant else "")


def _score(table: pd.DataFrame, aggregation: str) -> dict[str, float]:
    from benchmark.evaluation import summarize

    s = summarize(table, mode=aggregation)
    return {m: float(s[m]) for m in METRICS}


def collect(
    results: Path | Iterable[CellRecord],
    *,
    protocol: str = "patch",
    aggregation: str = "mean",
    methods: Sequence[str] | None = None,
) -> list[Result]:
    """Group the cells of a result store into :class:`Result` objects."""
    records = list(iter_cells(Path(results))) if isinstance(results, (str, Path)) else list(results)
    groups: dict[tuple, list[CellRecord]] = {}
    for rec in records:
        if methods and rec.method not in methods:
            continue
        opts = rec.cell.get("method_options") or {}
        key = (rec.method, options_label(opts), rec.dataset, rec.ratio)
        groups.setdefault(key, []).append(rec)
    out = []
    for (method, variant, dataset, ratio), recs in groups.items():
        recs.sort(key=lambda r: r.seed)
        errors = [r.error.get("error", "?") for r in recs if r.status == "failed" and r.error]
        status = "done"
        if any(r.status == "failed" for r in recs):
            status = "failed"
        elif any(r.status != "done" for r in recs):
            status = "incomplete"
        per_seed: dict[str, list[float]] = {m: [] for m in METRICS}
        per_image = None
        scores = None
        done = [r for r in recs if r.status == "done"]
        if status == "done" and done:
            images = []
            for r in done:
                table = r.metrics(protocol)
                sc = _score(table, aggregation)
                for m in METRICS:
                    per_seed[m].append(sc[m])
                images.append(table.set_index("image_id")["aji"])
            scores = {m: float(np.mean(per_seed[m])) for m in METRICS}
            per_image = pd.concat(images, axis=1).mean(axis=1)
        out.append(
            Result(
                method=method,
                variant=variant,
                dataset=dataset,
                ratio=ratio,
                status=status,
                scores=scores,
                per_seed=per_seed,
                per_image=per_image,
                seeds=[r.seed for r in recs],
                needs=list(recs[0].cell.get("needs") or []),
                options=dict(recs[0].cell.get("method_options") or {}),
                errors=errors,
                profile=str(recs[0].cell.get("profile", "")),
            )
        )
    out.sort(key=lambda r: (_ratio_key(r.ratio), method_sort_key(r.method), r.variant, r.dataset))
    return out


def _ratio_key(ratio: str) -> int:
    return RATIO_ORDER.index(ratio) if ratio in RATIO_ORDER else len(RATIO_ORDER)


def results_frame(results: Sequence[Result]) -> pd.DataFrame:
    """Every number of every result as a flat frame (what the CSV/JSON exports hold)."""
    rows = []
    for r in results:
        row = {
            "method": r.method,
            "variant": r.variant,
            "dataset": r.dataset,
            "ratio": r.ratio,
            "status": r.status,
            "seeds": ",".join(map(str, r.seeds)),
            "needs": ",".join(r.needs),
            "profile": r.profile,
        }
        for m in METRICS:
            row[m] = r.scores[m] if r.scores else None
            row[f"{m}_seed_std"] = float(np.std(r.per_seed[m])) if r.per_seed[m] else None
        rows.append(row)
    return pd.DataFrame(rows)
