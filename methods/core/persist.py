"""Saving and reloading trained Mask R-CNN models, shared by every Mask R-CNN-based method.

``model.pt`` holds the weights plus the settings needed to rebuild the model and loads with
``weights_only=True``. :func:`load_model` rebuilds a saved model; :func:`data_digest` identifies a
training set so that a finished model is reused only for the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .model import build_model

MODEL_FILE = "model.pt"
MODEL_FORMAT = "nuclei-maskrcnn-model/1"


def data_digest(patches: Sequence[Any]) -> str:
    """SHA-256 (16 hex) of the patches' ids, images and labels: identifies a training set."""
    h = hashlib.sha256()
    for p in patches:
        h.update(str(getattr(p, "id", "")).encode())
        for arr in (getattr(p, "image", None), getattr(p, "label", None), getattr(p, "boxes", None)):
            if arr is not None:
                a = np.ascontiguousarray(arr)
                h.update(f"{a.dtype}{a.shape}".encode())
                h.update(a.tobytes())
    return h.hexdigest()[:16]


def profile_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild a :class:`benchmark.profiles.Profile` from ``Profile.to_dict()``."""
    from benchmark.profiles import Profile

    d = dict(d)
    d["lr_steps"] = tuple(d.get("lr_steps", ()))
    return Profile(**d)


def save_model(model: nn.Module, path: str | Path, *, profile: Any, meta: dict[str, Any]) -> Path:
    """Write ``model.pt`` atomically: ``{"format", "model" (state_dict on CPU), "profile", "meta"}``.

    ``meta`` must be JSON-like (it is stored as a JSON string so ``weights_only`` loading works).
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_atomic(
        {"format": MODEL_FORMAT, "model": state, "profile": profile.to_dict(), "meta": json.dumps(meta)}, path
    )


def saved_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` of a saved ``model.pt`` (its key, training record), without building the model.

    Raises:
        CheckpointError: unreadable or not a model file.
    """
    blob = load_checkpoint(Path(path))
    if blob.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not a {MODEL_FORMAT} file (format={blob.get('format')!r})")
    return json.loads(blob["meta"])


def load_model(
    workdir: str | Path, *, device: str = "cpu", mask_branch: nn.Module | None = None,
    branch_for: Callable[[Any], nn.Module | None] | None = None,
) -> nn.Module:
    """Rebuild and load the model saved by :meth:`MaskRCNNMethod.fit` in ``workdir`` (eval mode).

    Args:
        workdir: folder holding ``model.pt`` (or the path of the file itself).
        device: where to put the model.
        mask_branch: for models trained with a custom branch, an instance of the same branch.
        branch_for: instead of ``mask_branch``, a function of the saved profile that builds it.

    Raises:
        FileNotFoundError: no ``model.pt`` there. CheckpointError: unreadable or not a model file.
    """
    path = Path(workdir)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}; run the method's fit first")
    blob = load_checkpoint(path)
    if blob.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not a {MODEL_FORMAT} file (format={blob.get('format')!r})")
    profile = profile_from_dict(blob["profile"])
    if mask_branch is None and branch_for is not None:
        mask_branch = branch_for(profile)
    model = build_model(profile, mask_branch=mask_branch)
    model.load_state_dict(blob["model"])
    model.saved_meta = json.loads(blob["meta"])
    model.saved_profile = profile
    model.to(torch.device(device))
    model.eval()
    return model


