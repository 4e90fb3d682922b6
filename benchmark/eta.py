"""The grid's ETA, from measured per-stage rates rather than from the first cell's duration.

A grid mixes cells of very different cost (a supervised teacher; a student that pseudo-labels every
unlabeled patch and then trains a heavier model; a classical method that trains nothing), so "cells
left x mean cell time" after the first cell is badly wrong. :class:`EtaModel` instead learns, from each
finished cell's ``done.json``, three rates:

- **train**: seconds per training iteration, per method (``fit_info.train_seconds_last_call`` or
  ``fit_info.student.train_seconds_last_call`` over the profile's iterations);
- **pseudo-label**: seconds per unlabeled patch (``fit_info.pseudo_labels.detection_seconds``);
- **predict**: seconds per test patch (``predict_seconds / n_test_patches``), per method;

and prices a remaining cell as ``iterations x train + n_unlabeled x pseudo-label + n_test x predict +
overhead``, where **overhead** is what the stages leave out of a finished cell's wall time, per method
(start-up, data loading, model building, the validation pass, writing the cell); so a cell just like a
finished one is priced at what that one took.
A method not measured yet borrows the rates of the methods that were (its teacher's first),
so after the first teacher cell a student cell is priced as its training plus a pseudo-label pass over
its unlabeled patches. A method that trains nothing costs the mean of its measured cells. Patch counts
of a cell come from a finished cell of the same dataset and ratio (else of the same dataset).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any


def _train_seconds(info: dict[str, Any]) -> float | None:
    for part in (info.get("student") or {}, info):
        s = part.get("train_seconds_last_call") if isinstance(part, dict) else None
        if isinstance(s, (int, float)) and not part.get("reloaded"):
            return float(s)
    return None


class EtaModel:
    """Per-stage rates learned from finished cells; :meth:`estimate` prices the remaining ones.

    Args:
        iterations: training iterations of one deep stage (the profile's).
    """

    def __init__(self, iterations: int) -> None:
        self.iterations = max(1, int(iterations))
        self.train: dict[str, list[float]] = {}
        self.predict: dict[str, list[float]] = {}
        self.pseudo: list[float] = []
        self.total: dict[str, list[float]] = {}
        self.overhead: dict[str, list[float]] = {}
        self.counts: dict[tuple[str, str], tuple[int, int]] = {}

    def observe(self, method: str, dataset: str, ratio: str, done: dict[str, Any], seconds: float) -> None:
        """Learn from one finished cell (``done`` = its ``done.json`` contents)."""
        self.total.setdefault(method, []).append(float(seconds))
        n_test, n_unl = int(done.get("n_test_patches") or 0), int(done.get("n_unlabeled") or 0)
        self.counts[(dataset, ratio)] = (n_test, n_unl)
        if n_test and isinstance(done.get("predict_seconds"), (int, float)):
            self.predict.setdefault(method, []).append(done["predict_seconds"] / n_test)
        info = done.get("fit_info") or {}
        t = _train_seconds(info)
        if t is not None:
            self.train.setdefault(method, []).append(t / self.iterations)
        det = (info.get("pseudo_labels") or {}).get("detection_seconds")
        det = float(det) if isinstance(det, (int, float)) else None
        if det is not None and n_unl:
            self.pseudo.append(det / n_unl)
        if t is not None:  # a deep cell: what its measured stages do not account for
            stages = t + float(done.get("predict_seconds") or 0.0) + (det or 0.0)
            self.overhead.setdefault(method, []).append(max(0.0, float(seconds) - stages))

    def observe_dir(self, method: str, dataset: str, ratio: str, path: Path, seconds: float) -> None:
        """:meth:`observe` from a cell directory's ``done.json`` (a missing/broken file teaches nothing)."""
        try:
            done = json.loads((Path(path) / "done.json").read_text())
        except (OSError, ValueError):
            self.total.setdefault(method, []).append(float(seconds))
            return
        self.observe(method, dataset, ratio, done, seconds)

    def _counts(self, dataset: str, ratio: str) -> tuple[int, int]:
        if (dataset, ratio) in self.counts:
            return self.counts[(dataset, ratio)]
        same = [c for (d, _), c in self.counts.items() if d == dataset]
        return same[-1] if same else (0, 0)

    def cell_seconds(self, method: str, dataset: str, ratio: str, *, deep: bool,
                     teacher: str | None) -> float | None:
        """Estimated seconds of one cell, or ``None`` when nothing measured applies yet."""
        if not deep:
            return mean(self.total[method]) if method in self.total else 0.0
        train = self.train.get(method) or self.train.get(teacher or "") or [r for v in self.train.values() for r in v]
        if not train:
            return mean(self.total[method]) if method in self.total else None
        n_test, n_unl = self._counts(dataset, ratio)
        pred = self.predict.get(method) or [r for v in self.predict.values() for r in v] or [0.0]
        s = self.iterations * mean(train) + n_test * mean(pred)
        if teacher:
            s += n_unl * (mean(self.pseudo) if self.pseudo else mean(pred))
        overhead = (self.overhead.get(method) or self.overhead.get(teacher or "")
                    or [r for v in self.overhead.values() for r in v] or [0.0])
        return s + mean(overhead)

    def unmeasured(self, cells: list[tuple[str, str, str, bool, str | None]]) -> list[str]:
        """The deep methods of ``cells`` priced on borrowed rates (none of their cells finished yet)."""
        return sorted({m for m, _d, _r, deep, _t in cells if deep and m not in self.train})

    def estimate(self, cells: list[tuple[str, str, str, bool, str | None]]) -> float | None:
        """Seconds left for ``(method, dataset, ratio, deep, teacher)`` cells; ``None`` if unknown yet."""
        total = 0.0
        for method, dataset, ratio, deep, teacher in cells:
            s = self.cell_seconds(method, dataset, ratio, deep=deep, teacher=teacher)
            if s is None:
                return None
            total += s
        return total
