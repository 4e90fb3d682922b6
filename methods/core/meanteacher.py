"""Mean-teacher utilities shared by the online teacher-student methods (MMT-PSM, PG-FANet).

- :func:`ema_decay` / :func:`ema_update`: the exponential-moving-average teacher. Two decay schedules
  are in use in the reference code:

  * ``"mean_teacher"`` (Tarvainen & Valpola; MMT-PSM's ``update_teacher``):
    ``alpha_t = min(1 - 1 / (t + 1), max_decay)``, i.e. the true average of the student weights until
    the EMA is "more correct";
  * ``"warmup10"`` (PG-FANet's ``models/EMA.py``): ``alpha_t = min(max_decay, (t + 1) / (t + 10))``.

- :func:`sigmoid_rampup` / :func:`sigmoid_rampdown`: Laine & Aila's ``exp(-5 (1 - x)^2)`` ramp-up and
  the ``exp(-k (1 - x)^2)`` ramp-down (k = 12.5 in the mean-teacher code, 12 in MMT-PSM's).
- :class:`RampSchedule`: a consistency weight ``lambda * ramp(iteration)`` with an optional start
  iteration, ramp-up and ramp-down, given as *fractions of the schedule* so that a method's published
  iteration counts scale with the training profile.
- :func:`clone_teacher`: a frozen deep copy of the student (the initial teacher).
- :class:`UnlabeledStream`: seeded, resumable choice of the unlabeled patches of each iteration.
- :class:`EMATeacherHook`: base of the ``methods.core.train`` hooks of these methods (EMA update
  after each step; teacher weights saved in the checkpoints).
- Mask R-CNN glue: :func:`teacher_detections` (teacher inference in the transformed frame),
  :func:`flip_boxes`, :func:`images_to_tensors`; image perturbations :func:`dihedral`,
  :func:`color_jitter`, :func:`random_erase` (numpy, fixed number of draws per call).
- :class:`MeanTeacherMaskRCNN`: the shared ``Method`` skeleton (the :mod:`methods.core.lifecycle` hooks).

The EMA / ramp functions need only torch; importing the module loads the Mask R-CNN core (the skeleton's base).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .lifecycle import FitRun, MaskRCNNLifecycle, Trained
from .train import EpochSampler

EMA_SCHEDULES = ("mean_teacher", "warmup10")


def ema_decay(step: int, max_decay: float = 0.99, schedule: str = "mean_teacher") -> float:
    """EMA decay used for the teacher update after optimiser step ``step`` (0-based).

    Args:
        step: number of teacher updates done before this one (0 for the first).
        max_decay: the decay cap (``alpha`` in the papers, 0.99 for MMT-PSM and PG-FANet).
        schedule: ``"mean_teacher"`` -> ``min(1 - 1/(step+1), max_decay)`` (0 at step 0: the teacher
            copies the student); ``"warmup10"`` -> ``min(max_decay, (step+1)/(step+10))``.

    Returns:
        the decay in ``[0, max_decay]``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if schedule == "mean_teacher":
        return min(1.0 - 1.0 / (step + 1), float(max_decay))
    if schedule == "warmup10":
        return min(float(max_decay), (step + 1) / (step + 10))
    raise ValueError(f"unknown EMA schedule {schedule!r}; choose one of {', '.join(EMA_SCHEDULES)}")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """In place: every floating-point parameter ``t <- decay * t + (1 - decay) * s``; buffers copied.

    Both modules must have the same architecture (parameters are matched by name, so a missing or extra
    name raises ``KeyError``). Integer buffers (counters) and all buffers (e.g. frozen BatchNorm
    statistics) are copied from the student, as in MMT-PSM's update (which averages parameters only).
    """
    s_params = dict(student.named_parameters())
    for name, t in teacher.named_parameters():
        s = s_params[name]
        if t.is_floating_point():
            t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1.0 - decay)
        else:  # pragma: no cover - no integer parameters in our models
            t.copy_(s)
    s_bufs = dict(student.named_buffers())
    for name, b in teacher.named_buffers():
        if name in s_bufs:
            b.copy_(s_bufs[name])


def clone_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` in eval mode with ``requires_grad=False`` everywhere."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - c/length)^2)`` with ``c`` clipped to ``[0, length]``; 1.0 when ``length <= 0``.

    Examples: ``sigmoid_rampup(0, 10) = exp(-5) ~ 0.00674``, ``sigmoid_rampup(5, 10) = exp(-1.25)``,
    ``sigmoid_rampup(10, 10) = 1``.
    """
    if length <= 0:
        return 1.0
    c = min(max(float(current), 0.0), float(length))
    phase = 1.0 - c / length
    return float(math.exp(-5.0 * phase * phase))


def sigmoid_rampdown(remaining: float, length: float, k: float = 12.5) -> float:
    """Ramp-down factor when ``remaining`` iterations are left: ``exp(-k (1 - r/length)^2)``.

    ``r`` is clipped to ``[0, length]``, so the factor is 1 with ``length`` or more iterations left and
    ``exp(-k)`` at the very end. ``length <= 0`` gives 1.0. MMT-PSM's code uses ``k = 12``.
    """
    if length <= 0:
        return 1.0
    r = min(max(float(remaining), 0.0), float(length))
    phase = 1.0 - r / length
    return float(math.exp(-k * phase * phase))


@dataclasses.dataclass(frozen=True)
class RampSchedule:
    """A consistency-loss weight over a training schedule of ``total`` iterations.

    ``weight(it)`` (0-based iteration ``it``) is:

    - 0 before ``start`` (and the consistency loss need not be computed at all);
    - ``lam * sigmoid_rampup(it - start, rampup)`` during the ramp-up;
    - ``lam * sigmoid_rampdown(total - it, rampdown, k)`` during the last ``rampdown`` iterations;
    - ``lam`` otherwise.

    Attributes:
        total: schedule length in iterations.
        lam: the plateau weight (MMT-PSM's lambda = 5, PG-FANet's 0.1).
        start: first iteration with a non-zero weight.
        rampup: ramp-up length in iterations (0 = no ramp-up).
        rampdown: ramp-down length in iterations (0 = none).
        k: ramp-down steepness.
    """

    total: int
    lam: float = 1.0
    start: int = 0
    rampup: int = 0
    rampdown: int = 0
    k: float = 12.5

    @classmethod
    def from_fractions(
        cls, total: int, lam: float, start: float = 0.0, rampup: float = 0.0, rampdown: float = 0.0,
        k: float = 12.5,
    ) -> "RampSchedule":
        """Build from fractions of ``total`` (each rounded to whole iterations; a non-zero ramp lasts at
        least one iteration). Fractions must lie in ``[0, 1]``."""
        for name, v in (("start", start), ("rampup", rampup), ("rampdown", rampdown)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must be a fraction of the schedule in [0, 1], got {v}")

        def its(frac: float) -> int:
            return 0 if frac <= 0 else max(1, int(round(frac * total)))

        return cls(total=int(total), lam=float(lam), start=int(round(start * total)),
                   rampup=its(rampup), rampdown=its(rampdown), k=float(k))

    def weight(self, it: int) -> float:
        if it < self.start:
            return 0.0
        if self.rampup > 0 and it - self.start < self.rampup:
            return self.lam * sigmoid_rampup(it - self.start, self.rampup)
        if self.rampdown > 0 and self.total - it < self.rampdown:
            return self.lam * sigmoid_rampdown(self.total - it, self.rampdown, self.k)
        return self.lam

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------- data streams
class UnlabeledStream(EpochSampler):
    """Which unlabeled patches iteration ``it`` uses, and its random generator.

    Pure functions of ``(seed, it)`` (epoch-wise permutations drawn from
    ``numpy.random.default_rng([seed, stream, epoch])``; per-iteration generator
    ``default_rng([seed, stream + 1, it])``), so a resumed run sees exactly the batches and
    augmentations of an uninterrupted one, without any loader state.

    Args:
        n: number of unlabeled patches (> 0).
        batch_size: patches per iteration.
        seed: run seed.
        stream: stream id, distinct from the training loop's (1 = order, 2 = augmentation).
    """

    def __init__(self, n: int, batch_size: int, seed: int, stream: int = 11) -> None:
        if n <= 0:
            raise ValueError("UnlabeledStream needs at least one unlabeled patch")
        super().__init__(n, batch_size, seed, stream)

    def rng(self, it: int):
        import numpy as np

        return np.random.default_rng([self.seed, self.stream + 1, it])


# ---------------------------------------------------------------------------------- training hook
class EMATeacherHook:
    """Base of the training-loop hooks of mean-teacher methods (see ``methods.core.train``).

    Keeps ``teacher`` (a frozen copy of the student) and updates it after every optimiser step with
    :func:`ema_update` at decay ``ema_decay(updates, max_decay, schedule)``. Its state (teacher weights
    and update count) goes into the training checkpoints, so resumed runs stay exact. Subclasses add
    ``extra_losses(ctx)``.

    Args:
        teacher: the initial teacher (normally :func:`clone_teacher` of the student).
        max_decay: EMA decay cap.
        schedule: one of :data:`EMA_SCHEDULES`.
    """

    def __init__(self, teacher: nn.Module, *, max_decay: float = 0.99, schedule: str = "mean_teacher") -> None:
        ema_decay(0, max_decay, schedule)  # validates the schedule name
        self.teacher = teacher
        self.max_decay = float(max_decay)
        self.schedule = schedule
        self.updates = 0

    def to_device(self, device: Any) -> nn.Module:
        """Move the teacher to ``device`` (no-op when already there); returns it."""
        dev = torch.device(device)
        p = next(iter(self.teacher.parameters()), None)
        if p is not None and p.device != dev:
            self.teacher.to(dev)
        self.teacher.eval()
        return self.teacher

    def after_step(self, model: nn.Module, iteration: int) -> None:
        p = next(iter(model.parameters()), None)
        if p is not None:
            self.to_device(p.device)
        ema_update(self.teacher, model, ema_decay(self.updates, self.max_decay, self.schedule))
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()},
                "updates": int(self.updates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.updates = int(state["updates"])


# ---------------------------------------------------------------------------------- Mask R-CNN glue
def images_to_tensors(images: Any, device: Any) -> list[torch.Tensor]:
    """``uint8 (H, W, 3)`` numpy images -> ``float32 (3, H, W)`` tensors in ``[0, 1]`` on ``device``."""
    from .helpers import image_to_tensor

    return [image_to_tensor(im, device=device) for im in images]


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Boxes ``(N, 4)`` x1y1x2y2 mirrored horizontally in an image of ``width`` pixels."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


@torch.no_grad()
def teacher_detections(
    model: nn.Module, image_list: Any, *, score_thresh: float, features: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Run a torchvision Mask R-CNN with ``NucleiRoIHeads`` (eval mode) on an already transformed batch.

    Works in the *transformed* (normalised, resized, padded) coordinate frame, so the boxes can be used
    directly as RoIs on other views of the same batch. The box side is the model's own inference
    (``postprocess_detections``: score > ``box_score_thresh``, NMS, detection cap); detections below
    ``score_thresh`` are dropped *before* the mask branch runs (it only sees the kept boxes).

    Args:
        model: the teacher (``transform``/``backbone``/``rpn``/``roi_heads``); must be in eval mode.
        image_list: a torchvision ``ImageList`` from ``model.transform``.
        score_thresh: minimum detection score kept.
        features: the backbone features of ``image_list.tensors`` if already computed.

    Returns:
        ``(features, detections)``: the FPN features and, per image, ``boxes (N, 4)``, ``scores (N,)``,
        ``masks (N, 1, M, M)`` mask probabilities in the RoI frame (not pasted) and ``proposals`` (the
        RPN proposals, test-mode count).
    """
    from methods.core.heads import MaskRoIs

    if features is None:
        features = model.backbone(image_list.tensors)
    sizes = image_list.image_sizes
    proposals, _ = model.rpn(image_list, features)
    heads = model.roi_heads
    class_logits, box_regression = heads.box_class_logits(features, proposals, sizes)
    boxes, scores, _labels = heads.postprocess_detections(class_logits, box_regression, proposals, sizes)
    kept_boxes, kept_scores = [], []
    for b, sc in zip(boxes, scores):
        keep = sc >= score_thresh
        kept_boxes.append(b[keep])
        kept_scores.append(sc[keep])
    counts = [len(b) for b in kept_boxes]
    if sum(counts):
        rois = MaskRoIs(features=features, proposals=kept_boxes, image_shapes=sizes,
                        roi_features=heads.mask_roi_pool(features, kept_boxes, sizes), training=False)
        masks = heads.mask_branch(rois)["mask_logits"].sigmoid().split(counts)
    else:
        masks = [features["0"].new_zeros((0, 1, 28, 28)) for _ in counts]
    out = [{"boxes": b, "scores": sc, "masks": m, "proposals": p}
           for b, sc, m, p in zip(kept_boxes, kept_scores, masks, proposals)]
    return features, out


# ---------------------------------------------------------------------------------- image perturbations
def dihedral(image: Any, rng: Any) -> Any:
    """Random flip / 90-degree rotation of an ``(H, W, C)`` array (3 draws from ``rng``, always)."""
    import numpy as np

    u = rng.random(2)
    k = int(rng.integers(0, 4))
    out = image
    if u[0] < 0.5:
        out = out[:, ::-1]
    if u[1] < 0.5:
        out = out[::-1]
    if out.shape[0] == out.shape[1]:
        out = np.rot90(out, k)
    return np.ascontiguousarray(out)


def color_jitter(image: Any, rng: Any, brightness: float = 0.15, contrast: float = 0.15, hue: float = 0.05) -> Any:
    """Brightness / contrast / hue jitter of a ``uint8 (H, W, 3)`` RGB image (3 draws, always).

    Brightness multiplies by ``U(1-b, 1+b)``; contrast scales around the mean grey level by
    ``U(1-c, 1+c)``; hue rotates the chroma plane (YIQ) by ``U(-h, h)`` of a full turn (the
    maskrcnn-benchmark ``AdjustBrightness/Contrast/Hue(0.15, 0.15, 0.05)`` of MMT-PSM's unlabeled
    transform, implemented with numpy).
    """
    import numpy as np

    b, c, h = rng.uniform(-1.0, 1.0, size=3)
    f = image.astype(np.float32) / 255.0
    f = f * (1.0 + brightness * b)
    m = f.mean()
    f = (f - m) * (1.0 + contrast * c) + m
    if hue:
        to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
        th = 2.0 * np.pi * hue * h
        rot = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]], np.float32)
        mat = np.linalg.inv(to_yiq) @ rot @ to_yiq
        f = f @ mat.T.astype(np.float32)
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)


def random_erase(image: Any, rng: Any, p: float = 0.5, area: tuple[float, float] = (0.02, 0.4),
                 min_aspect: float = 0.3) -> Any:
    """Zhong et al.'s random erasing: with probability ``p`` fill one rectangle (``area`` fraction of the
    image, aspect ratio in ``[min_aspect, 1/min_aspect]``) with the image's mean colour (5 draws, always).
    """
    import numpy as np

    u, a, r, y, x = rng.random(5)
    if u >= p:
        return image
    H, W = image.shape[:2]
    target = (area[0] + (area[1] - area[0]) * a) * H * W
    aspect = math.exp(math.log(min_aspect) + (math.log(1.0 / min_aspect) - math.log(min_aspect)) * r)
    h = int(round(math.sqrt(target * aspect)))
    w = int(round(math.sqrt(target / aspect)))
    if h < 1 or w < 1 or h >= H or w >= W:
        return image
    y0 = int(y * (H - h + 1))
    x0 = int(x * (W - w + 1))
    out = image.copy()
    out[y0:y0 + h, x0:x0 + w] = np.rint(image.reshape(-1, image.shape[2]).mean(0)).astype(image.dtype)
    return out


# ---------------------------------------------------------------------------------- method skeleton
class MeanTeacherMaskRCNN(MaskRCNNLifecycle):
    """Shared skeleton of the Mask R-CNN mean-teacher methods (``mmt-psm``, ``pg-fanet``).

    The cycle is :class:`~methods.core.lifecycle.MaskRCNNLifecycle`'s: ``fit`` checks the data, reuses a
    finished ``workdir/model.pt`` trained with the same settings (method options that affect training,
    seed, profile, labeled + unlabeled data), otherwise calls :meth:`train_model` and saves the returned
    model (so ``load`` rebuilds it with :meth:`make_branch`) plus a ``model.json`` summary. ``predict``
    applies the shared detections -> instance map rule (options ``score_thresh``, ``mask_thresh``,
    ``dilate``, ``min_area``).

    Subclasses set the class attributes, ``defaults`` (which must contain the rule options) and
    implement :meth:`train_model`; :meth:`make_branch` when they use a custom mask branch.
    """

    deep = True
    uses_unlabeled = True
    version = "1"
    HISTORY_DIGITS = None

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.options.get("predict_with", "student") not in ("teacher", "student"):
            raise ValueError(
                f"{self.name}: predict_with must be 'teacher' or 'student', got {self.options['predict_with']!r}"
            )
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ hooks for subclasses
    def train_model(
        self, labeled: list, unlabeled: list, data: Any, *, profile: Any, seed: int, device: str, workdir: Path,
        progress: bool, key: dict[str, Any],
    ) -> tuple[nn.Module, dict[str, Any]]:  # pragma: no cover - abstract
        """Train and return ``(model to predict with, extra info for model.json)``; an ``extra["history"]``
        (the training loop's per-iteration loss dicts) is written to ``train_history.json`` instead."""
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle hooks
    def train_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k not in self.RULE_OPTIONS}

    def check_data(self, data: Any) -> tuple[list, list]:
        labeled, unlabeled = data.require(self.name)
        if not unlabeled:
            raise ValueError(
                f"{self.name}: no unlabeled patches; this semi-supervised method needs TrainData.unlabeled "
                f"(use the supervised 'maskrcnn' method for labeled-only training)"
            )
        return labeled, unlabeled

    def model_key(self, run: FitRun) -> dict[str, Any]:
        from methods.core.persist import data_digest

        return {"method": self.name, "version": self.version, "train_config": self.train_options(),
                "seed": run.seed, "profile": run.profile.digest(), "data": data_digest(run.labeled),
                "unlabeled": data_digest(run.unlabeled)}

    def train_new(self, run: FitRun, key: dict[str, Any]) -> Trained:
        model, extra = self.train_model(run.labeled, run.unlabeled, run.data, profile=run.profile, seed=run.seed,
                                        device=run.device, workdir=run.workdir, progress=run.progress, key=key)
        history = extra.pop("history", None) or None
        meta = {"key": key, "model_config": getattr(model, "nuclei_config", None),
                "n_labeled": len(run.labeled), "n_unlabeled": len(run.unlabeled), **extra}
        self.info = meta
        # student, optimizer and teacher: ~3x the size of model.pt
        return Trained(model=model, meta=meta, history=history, fit_info=dict(extra),
                       checkpoint=run.workdir / f"{self.name}_checkpoint.pt")

    def reused(self, meta: dict[str, Any], run: FitRun | None) -> None:
        self.info = meta
        self.fit_info = {k: v for k, v in meta.items() if k != "key"}
