"""One fit / predict / load / teardown cycle for every Mask R-CNN-based method.

:class:`MaskRCNNLifecycle` owns the cycle; a method overrides small, named hooks:

==========================  =====================================================================
hook                        default
==========================  =====================================================================
:meth:`check_data`          ``data.require(name, need)`` for the method's one declared need
:meth:`prepare_fit`         nothing (pseudo-label methods obtain their teacher and labels here)
:meth:`model_key`           (required) the settings and data a saved ``model.pt`` must match
:meth:`make_branch`         ``None``: the standard mask branch
:meth:`prepare_model`       unchanged (applied to built and reloaded models)
:meth:`train_new`           (required) train a fresh model, return a :class:`Trained`
:meth:`reused`              ``fit_info`` = the saved meta
:meth:`write_summary`       ``workdir/model.json`` = the saved meta
==========================  =====================================================================

``fit``: reuse ``workdir/model.pt`` when its key matches (a different key is a :class:`CheckpointError`),
otherwise train, then save ``model.pt``, write the history and the summary, and delete the training
checkpoint (``model.pt`` supersedes it; the optimizer state doubles its size).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.api import Method, TrainData
from benchmark.store import atomic_write_text

from .checkpoint import CheckpointError
from .helpers import write_history
from .persist import MODEL_FILE, load_model, save_model, saved_meta

#: the options of the detections -> instance map rule (they change prediction, never training)
RULE_OPTIONS = ("score_thresh", "mask_thresh", "dilate", "min_area")


@dataclasses.dataclass
class FitRun:
    """The arguments of one ``fit`` call, plus what :meth:`MaskRCNNLifecycle.prepare_fit` adds to ``extra``."""

    data: TrainData
    profile: Any
    seed: int
    device: str
    workdir: Path
    progress: bool
    labeled: list = dataclasses.field(default_factory=list)
    unlabeled: list = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.perf_counter)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Trained:
    """What :meth:`MaskRCNNLifecycle.train_new` returns.

    Attributes:
        model: the trained model (saved to ``model.pt``, then used for prediction).
        meta: JSON-like metadata stored in ``model.pt``; holds the model key under ``"key"``.
        history: the training loop's per-iteration rows (``None``: no history file).
        checkpoint: the training checkpoint to delete once ``model.pt`` is written.
        fit_info: what ``fit_info`` becomes (default: ``meta``).
        profile: the profile saved with the model (default: the fit's).
    """

    model: nn.Module
    meta: dict[str, Any]
    history: list[dict[str, float]] | None = None
    checkpoint: Path | None = None
    fit_info: dict[str, Any] | None = None
    profile: Any = None

    @classmethod
    def of(cls, model: nn.Module, result: Any, *, key: dict[str, Any], n_labeled: int, **extra: Any) -> Trained:
        """The usual record of one :func:`~methods.core.train.train` run (``result``): meta = key, model
        config, iterations, time, resume point, final losses, ``n_labeled``, then ``extra``."""
        from .train import history_summary

        meta = {
            "key": key,
            "model_config": model.nuclei_config,
            "iterations": result.iterations,
            "train_seconds_last_call": round(result.seconds, 1),
            "resumed_from": result.resumed_from,
            "final_losses": history_summary(result.history),
            "n_labeled": n_labeled,
            **extra,
        }
        return cls(model=model, meta=meta, history=result.history, checkpoint=result.checkpoint)


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from ``model.pt``'s JSON meta (tuples become lists, the rest ``str``)."""
    return json.loads(json.dumps(obj, default=str))


class MaskRCNNLifecycle(Method):
    """Base of the Mask R-CNN-based methods: the fit / predict / load / teardown cycle (see the module doc).

    Class attributes:
        HISTORY_FILE: where ``fit`` writes the training history.
        HISTORY_DIGITS: rounding of the history's numbers (``None``: full precision).
        RULE_OPTIONS: the options handed to the instance-map rule at prediction.
    """

    HISTORY_FILE = "train_history.json"
    HISTORY_DIGITS: int | None = 6
    RULE_OPTIONS = RULE_OPTIONS

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.model: nn.Module | None = None
        self.profile: Any = None
        self.device = "cpu"
        self.fit_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ hooks
    def check_data(self, data: TrainData) -> tuple[list, list]:
        """``(labeled, unlabeled)`` checked for this method (its one weak-label need, if any)."""
        needs = sorted(self.needs)
        return data.require(self.name, needs[0] if needs else None)

    def prepare_fit(self, run: FitRun) -> None:
        """Work that the model key depends on (e.g. a teacher and its pseudo-labels); default: none."""

    def model_key(self, run: FitRun) -> dict[str, Any]:  # pragma: no cover - abstract
        """What a saved ``model.pt`` must have been trained with to be reused (settings, seed, data)."""
        raise NotImplementedError

    def key_matches(self, saved: Any, key: dict[str, Any]) -> bool:
        """Whether a saved key allows reuse; default: equal once both are JSON."""
        return saved == _jsonable(key)

    def make_branch(self, profile: Any) -> nn.Module | None:
        """The mask branch the model is built with for ``profile`` (``None`` = the standard one)."""
        return None

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Adjust a freshly built or reloaded model (e.g. share a module); default: unchanged."""
        return model

    def train_new(self, run: FitRun, key: dict[str, Any]) -> Trained:  # pragma: no cover - abstract
        """Train a fresh model for ``run`` under ``key``."""
        raise NotImplementedError

    def reused(self, meta: dict[str, Any], run: FitRun | None) -> None:
        """Record what a reused ``model.pt`` says about its training (``run`` is ``None`` in :meth:`load`);
        default: ``fit_info = meta``."""
        self.fit_info = meta

    def write_summary(self, run: FitRun, trained: Trained) -> None:
        """Write the human-readable record of a finished fit; default: ``workdir/model.json``."""
        atomic_write_text(run.workdir / "model.json", json.dumps(trained.meta, indent=2, default=str))

    # ------------------------------------------------------------------ the cycle
    def fit(self, data: TrainData, *, profile: Any, seed: int, device: str, workdir: Path,
            progress: bool = True) -> None:
        run = FitRun(data=data, profile=profile, seed=seed, device=device, workdir=Path(workdir), progress=progress)
        run.labeled, run.unlabeled = self.check_data(data)
        run.workdir.mkdir(parents=True, exist_ok=True)
        self.profile, self.device = profile, device
        self.prepare_fit(run)
        key = self.model_key(run)
        path = run.workdir / MODEL_FILE
        if path.exists():
            # the key first: a model of other settings may not even fit this method's branch
            saved_key = saved_meta(path).get("key")
            if not self.key_matches(saved_key, key):
                raise CheckpointError(
                    f"{path} holds a {self.name} model trained with different settings or data "
                    f"({saved_key} vs {key}); delete it or use another workdir to retrain."
                )
            model = self.load_saved(path, device)
            self.model = model
            self.reused(model.saved_meta, run)
            return
        self._finish(path, self.train_new(run, key), run)

    def _finish(self, path: Path, trained: Trained, run: FitRun) -> None:
        model = trained.model
        if trained.history is not None:
            write_history(run.workdir / self.HISTORY_FILE, trained.history, digits=self.HISTORY_DIGITS)
        save_model(model, path, profile=trained.profile or run.profile, meta=trained.meta)
        if trained.checkpoint is not None:
            Path(trained.checkpoint).unlink(missing_ok=True)
        model.eval()
        self.model = model
        self.fit_info = trained.meta if trained.fit_info is None else trained.fit_info
        self.write_summary(run, trained)

    def load_saved(self, path: Path, device: str) -> nn.Module:
        """The model saved at ``path`` (or in folder ``path``), with this method's branch, in eval mode."""
        return self.prepare_model(load_model(path, device=device, branch_for=self.make_branch))

    def load(self, workdir: Path, *, device: str = "cpu") -> None:
        """Load the model a previous :meth:`fit` saved in ``workdir``."""
        self.model = self.load_saved(Path(workdir), device)
        self.profile, self.device = self.model.saved_profile, device
        self.reused(self.model.saved_meta, None)

    def _need_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before predict()")
        return self.model

    def _batch(self) -> int:
        return int(getattr(self.profile, "eval_batch_size", 4) or 4)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        from .inference import predict_instance_maps

        model = self._need_model()
        rule = {k: self.options[k] for k in self.RULE_OPTIONS}
        return predict_instance_maps(model, list(images), batch_size=self._batch(), device=self.device, **rule)

    def teardown(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
