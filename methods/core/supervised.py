"""The supervised Mask R-CNN trainer: labeled patches only (the ``maskrcnn`` method and every teacher).

See :class:`SupervisedMaskRCNN`. The registered ``maskrcnn`` plugin (``methods/maskrcnn/method.py``) is a
thin subclass; methods that need a supervised teacher instantiate this class directly, so no method
folder imports another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.api import Method, TrainData

from .augment import NO_AUGMENT, Augment
from .checkpoint import CheckpointError
from .inference import predict_detections, predict_instance_maps
from .model import build_model
from .options import SupervisedOptions
from .persist import MODEL_FILE, _num, data_digest, load_model, save_model
from .train import history_summary, train


class SupervisedMaskRCNN(Method):
    """Supervised Mask R-CNN trained on the labeled patches only.

    ``fit`` builds :func:`~methods.core.model.build_model` for the profile, trains it with
    :func:`~methods.core.train.train` on the labeled patches (unlabeled ones are ignored), and writes
    ``workdir/model.pt``, ``workdir/model.json`` (model config, training time, final losses) and
    ``workdir/train_history.json`` (every iteration's losses, lr and gradient norm), then deletes the
    training checkpoint. If ``model.pt`` already exists for the same settings and data, ``fit`` loads
    it instead of retraining; an interrupted fit resumes from ``workdir/maskrcnn_checkpoint.pt``.

    Options: :class:`~methods.core.options.SupervisedOptions` (the instance-map rule ``score_thresh``,
    ``mask_thresh``, ``dilate``, ``min_area``, and ``augment``), all recorded by ``config()``.
    """

    name = "maskrcnn"
    description = "Supervised Mask R-CNN (torchvision, class-agnostic) on the labeled patches only"
    approximation = (
        "torchvision Mask R-CNN instead of mmdetection; from-scratch GroupNorm backbone when no ImageNet "
        "weights are available locally; schedule and input size from the training profile"
    )
    deep = True
    uses_unlabeled = False
    version = "1"

    Options = SupervisedOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.model: nn.Module | None = None
        self.profile: Any = None
        self.device = "cpu"
        self.fit_info: dict[str, Any] = {}

    @property
    def info(self) -> dict[str, Any]:
        """Alias of :attr:`fit_info` (what ``fit`` recorded: key, model config, losses, timings)."""
        return self.fit_info

    # ------------------------------------------------------------------ training
    def _rule(self) -> dict[str, Any]:
        o = self.options
        return {k: o[k] for k in ("score_thresh", "mask_thresh", "dilate", "min_area")}

    def train_config(self) -> dict[str, Any]:
        """Options that change training (the instance-map rule does not)."""
        return {"augment": bool(self.options["augment"])}

    def fit(
        self, data: TrainData, *, profile: Any, seed: int, device: str, workdir: Path, progress: bool = True,
    ) -> None:
        labeled, _ = data.require(self.name)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.profile, self.device = profile, device
        digest = data_digest(labeled)
        expected = {"method": self.name, "version": self.version, "train_config": self.train_config(),
                    "seed": seed, "profile": profile.digest(), "data": digest}
        path = workdir / MODEL_FILE
        if path.exists():
            model = load_model(path, device=device)
            meta = model.saved_meta
            if meta.get("key") != expected:
                raise CheckpointError(
                    f"{path} holds a model trained with different settings ({meta.get('key')} vs {expected}); "
                    f"delete it or use another workdir to retrain."
                )
            self.model, self.fit_info = model, meta
            return
        from benchmark.distributed import note

        note("labeled", digest)
        torch.manual_seed(seed)
        model = build_model(profile)
        result = train(
            model, labeled, profile, seed=seed, device=device, workdir=workdir, stage=self.name,
            augment=Augment() if self.options["augment"] else NO_AUGMENT, progress=progress,
            config=expected,
        )
        self.fit_info = {
            "key": expected,
            "model_config": model.nuclei_config,
            "iterations": result.iterations,
            "train_seconds_last_call": round(result.seconds, 1),
            "resumed_from": result.resumed_from,
            "final_losses": history_summary(result.history),
            "n_labeled": len(labeled),
        }
        save_model(model, path, profile=profile, meta=self.fit_info)
        (workdir / "model.json").write_text(json.dumps(self.fit_info, indent=2))
        keys = sorted({k for h in result.history for k in h})
        (workdir / "train_history.json").write_text(json.dumps(
            {"columns": keys, "rows": [[_num(h.get(k)) for k in keys] for h in result.history]}
        ))
        # model.pt supersedes the training checkpoint (optimizer state doubles its size)
        result.checkpoint.unlink(missing_ok=True)
        model.eval()
        self.model = model

    # ------------------------------------------------------------------ inference
    def _need_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() (or load_model) before predict()")
        return self.model

    def _batch(self) -> int:
        return int(getattr(self.profile, "eval_batch_size", 4) or 4)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        model = self._need_model()
        return predict_instance_maps(model, images, batch_size=self._batch(), device=self.device, **self._rule())

    def predict_detections(self, images: Sequence[np.ndarray], *, min_score: float = 0.0) -> list[dict[str, np.ndarray]]:
        """Raw detections (``boxes``, ``scores``, soft ``masks``) per image; see
        :func:`methods.core.inference.predict_detections`."""
        model = self._need_model()
        return predict_detections(model, images, batch_size=self._batch(), device=self.device, min_score=min_score)

    def load(self, workdir: Path, *, device: str = "cpu") -> None:
        """Load a model saved by a previous :meth:`fit` in ``workdir``."""
        self.model = load_model(workdir, device=device)
        self.profile = self.model.saved_profile
        self.device = device
        self.fit_info = self.model.saved_meta

    def teardown(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
