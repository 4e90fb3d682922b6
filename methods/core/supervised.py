"""The supervised Mask R-CNN trainer: labeled patches only (the ``maskrcnn`` method and every teacher).

See :class:`SupervisedMaskRCNN`. The registered ``maskrcnn`` plugin (``methods/maskrcnn/method.py``) is a
thin subclass; methods that need a supervised teacher instantiate this class directly, so no method
folder imports another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .augment import NO_AUGMENT, Augment
from .inference import predict_detections
from .lifecycle import FitRun, MaskRCNNLifecycle, Trained
from .model import build_model
from .options import SupervisedOptions
from .persist import data_digest
from .train import train


class SupervisedMaskRCNN(MaskRCNNLifecycle):
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

    @property
    def info(self) -> dict[str, Any]:
        """Alias of :attr:`fit_info` (what ``fit`` recorded: key, model config, losses, timings)."""
        return self.fit_info

    # ------------------------------------------------------------------ training
    def train_config(self) -> dict[str, Any]:
        """Options that change training (the instance-map rule does not)."""
        return {"augment": bool(self.options["augment"])}

    def model_key(self, run: FitRun) -> dict[str, Any]:
        return {"method": self.name, "version": self.version, "train_config": self.train_config(),
                "seed": run.seed, "profile": run.profile.digest(), "data": data_digest(run.labeled)}

    def train_new(self, run: FitRun, key: dict[str, Any]) -> Trained:
        from benchmark.distributed import note

        note("labeled", key["data"])  # DDP ranks check they hold the same labeled subset
        torch.manual_seed(run.seed)
        model = build_model(run.profile)
        result = train(
            model, run.labeled, run.profile, seed=run.seed, device=run.device, workdir=run.workdir, stage=self.name,
            augment=Augment() if self.options["augment"] else NO_AUGMENT, progress=run.progress,
            config=key,
        )
        return Trained.of(model, result, key=key, n_labeled=len(run.labeled))

    # ------------------------------------------------------------------ inference
    def predict_detections(self, images: Sequence[np.ndarray], *, min_score: float = 0.0) -> list[dict[str, np.ndarray]]:
        """Raw detections (``boxes``, ``scores``, soft ``masks``) per image; see
        :func:`methods.core.inference.predict_detections`."""
        model = self._need_model()
        return predict_detections(model, images, batch_size=self._batch(), device=self.device, min_score=min_score)
