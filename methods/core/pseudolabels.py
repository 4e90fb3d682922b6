"""Teacher -> pseudo-labels -> count-matched threshold filtering -> student (shared by BASS and NoisyBoundary).

The offline pseudo-label (PL) framework of the BASS paper (Sec. 2.1-2.2) and of NoisyBoundary, on the shared
Mask R-CNN core (:mod:`methods.core`):

1. **Teacher** (:func:`obtain_teacher`): the supervised ``maskrcnn`` model of the labeled patches. The runner
   trains the ``maskrcnn`` cell first and sets ``method.teacher_workdir`` to its finished workdir; without it
   (direct use) the teacher is trained into ``workdir/teacher`` with :class:`MaskRCNNMethod` (which reloads a
   finished model instead of retraining).
2. **Raw detections** on the unlabeled patches (:func:`teacher_detections`): boxes, scores and 28x28 mask
   probabilities in each box's frame, after the teacher's own ``box_score_thresh`` (0.05), NMS (0.5) and
   detection cap (``profile.detections_per_img``). Optional test-time augmentation (``tta``): the
   detections of the plain view are re-scored and re-segmented in every extra view (flips ``tta_flips`` of
   ``"h"``, ``"v"``, ``"hv"``, at input scales ``tta_scales``; the plain view is always one of them) by running
   the box classifier and the mask branch on the same boxes mapped into that view; scores (foreground
   probability) and mask probabilities are averaged over views. This is "fixed-box" TTA: the released code
   (mmdet ``aug_test``: 9 scales x h-flip) also merges *proposals* across views; that is not reproduced.
3. **Box threshold by count matching** (:func:`match_count_threshold`): for each candidate
   ``t in 0.10, 0.11, ..., 1.00`` (91 values) the mean number of detections with score ``> t`` per unlabeled
   patch is compared with the mean number of instances per labeled patch; the chosen ``v_b`` minimises the
   absolute difference. Ties (equal distance, compared exactly in integer arithmetic) go to the *first*
   minimiser, i.e. the lowest threshold, as ``numpy.argmin`` in the released ``filter_pl.py``. A fixed value
   can be given instead (``box_threshold=0.38``).
4. **PL maps** (:func:`pseudo_label_map`): the kept detections' masks are pasted at patch resolution,
   binarised at the pixel threshold ``v_p`` (``>=``, default 0.5) and painted into an instance map with the
   shared rule of :func:`methods.core.instances.detections_to_instance_map` (higher score wins on
   overlaps, instances under ``min_area`` pixels dropped). Unlabeled patches left without any PL instance
   are not used for training (mmdet's ``filter_empty_gt``).
5. **Student** (:class:`PseudoLabelStudentMethod`): a Mask R-CNN with the method's mask branch trained on
   labeled (repeated ``labeled_repeat`` times; code: 19) + PL patches, from the profile's initialisation
   (``student_init="scratch"``, as the code, which trains the student from ImageNet weights) or from the
   teacher's weights (``"teacher"``).

Caching (resume): raw detections (``pl_detections.npz``), PL maps (``pl_maps.npz``) and their metadata
(``pseudolabels.json``: chosen threshold, whole count curve) are written to the method's workdir under keys
that include the teacher's identity, the options and the data, so a re-run reuses them; an interrupted
student resumes from ``student_checkpoint.pt``; a finished student (``model.pt``, which replaces the
checkpoint) is reloaded; ``fit_info.json`` and ``student_history.json`` record the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.api import Method, TrainData

from .options import PseudoLabelOptions

log = logging.getLogger(__name__)

#: the 91 candidate box thresholds of the paper: 0.10, 0.11, ..., 1.00.
CANDIDATE_THRESHOLDS = np.round(np.arange(10, 101) / 100.0, 2)
FLIPS = ("h", "v", "hv")
DETECTIONS_FILE = "pl_detections.npz"
MAPS_FILE = "pl_maps.npz"
META_FILE = "pseudolabels.json"


# ------------------------------------------------------------------------------------ count matching
@dataclasses.dataclass(frozen=True)
class CountMatch:
    """Outcome of :func:`match_count_threshold`.

    Attributes:
        threshold: the chosen box threshold.
        index: its index in ``thresholds``.
        target_mean: mean instances per labeled patch.
        thresholds: the candidates.
        mean_counts: mean kept detections (score > t) per unlabeled patch, per candidate.
    """

    threshold: float
    index: int
    target_mean: float
    thresholds: tuple[float, ...]
    mean_counts: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "index": self.index, "target_mean": self.target_mean,
            "thresholds": list(self.thresholds), "mean_counts": list(self.mean_counts),
        }


def count_curve(scores: Sequence[np.ndarray], thresholds: Sequence[float] = CANDIDATE_THRESHOLDS) -> np.ndarray:
    """Total number of detections with score ``> t`` over all patches, for every ``t``: ``int64 (T,)``.

    Scores are compared in float64 (a float32 score 0.38 is 0.3799999952 and not kept at t = 0.38).
    """
    thr = np.asarray(thresholds, dtype=np.float64)
    flat = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]) if len(scores) else np.zeros(0)
    flat.sort()
    # number of scores > t = n - (number of scores <= t)
    return (flat.size - np.searchsorted(flat, thr, side="right")).astype(np.int64)


def match_count_threshold(
    scores: Sequence[np.ndarray],
    labeled_counts: Sequence[int],
    thresholds: Sequence[float] = CANDIDATE_THRESHOLDS,
) -> CountMatch:
    """Choose the box threshold whose mean kept-detection count per unlabeled patch is closest to the mean
    instance count per labeled patch.

    Args:
        scores: per unlabeled patch, its detection scores.
        labeled_counts: per labeled patch, its number of instances.
        thresholds: candidates, in the order ties are resolved (first minimiser wins; default
            :data:`CANDIDATE_THRESHOLDS`, ascending, so ties go to the lower threshold).

    Returns:
        a :class:`CountMatch`.

    Raises:
        ValueError: no unlabeled patches or no labeled patches.
    """
    n_u, n_l = len(scores), len(labeled_counts)
    if n_u == 0 or n_l == 0:
        raise ValueError(
            f"count matching needs labeled and unlabeled patches (got {n_l} labeled, {n_u} unlabeled)"
        )
    totals = count_curve(scores, thresholds)
    lab_total = int(np.sum(np.asarray(labeled_counts, dtype=np.int64)))
    # |totals/n_u - lab_total/n_l| compared exactly: |totals*n_l - lab_total*n_u| (python ints)
    dist = [abs(int(t) * n_l - lab_total * n_u) for t in totals]
    idx = int(min(range(len(dist)), key=lambda i: (dist[i], i)))
    return CountMatch(
        threshold=float(thresholds[idx]), index=idx, target_mean=lab_total / n_l,
        thresholds=tuple(float(t) for t in thresholds), mean_counts=tuple(float(t) / n_u for t in totals),
    )


def instance_count(label: np.ndarray) -> int:
    """Number of instances (distinct non-zero ids) of an instance map."""
    ids = np.unique(label)
    return int(np.count_nonzero(ids))


# ------------------------------------------------------------------------------------ teacher detections
def _to_tensor(image: np.ndarray, index: int) -> torch.Tensor:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        raise ValueError(
            f"unlabeled image #{index}: expected a uint8 (H, W, 3) RGB array, got "
            f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}"
        )
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def _flip_img(x: torch.Tensor, flip: str) -> torch.Tensor:
    if "h" in flip:
        x = x.flip(-1)
    if "v" in flip:
        x = x.flip(-2)
    return x


def _flip_boxes(b: torch.Tensor, flip: str, size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    b = b.clone()
    if "h" in flip:
        b[:, [0, 2]] = w - b[:, [2, 0]]
    if "v" in flip:
        b[:, [1, 3]] = h - b[:, [3, 1]]
    return b


def tta_views(tta: bool, flips: Sequence[str] = ("h", "v"), scales: Sequence[float] = (1.0,)) -> list[tuple[str, float]]:
    """The ``(flip, scale)`` views of the TTA; the plain view ``("", 1.0)`` is always first."""
    views = [("", 1.0)]
    if not tta:
        return views
    for f in flips:
        if f not in FLIPS:
            raise ValueError(f"tta flip {f!r} unknown; choose from {', '.join(FLIPS)}")
    for s in scales:
        if s <= 0:
            raise ValueError(f"tta scale must be > 0, got {s}")
        for f in ("",) + tuple(flips):
            if (f, float(s)) not in views:
                views.append((f, float(s)))
    return views


@torch.no_grad()
def teacher_detections(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    *,
    tta: bool = False,
    tta_flips: Sequence[str] = ("h", "v"),
    tta_scales: Sequence[float] = (1.0,),
    batch_size: int = 4,
    device: str = "cpu",
    progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Raw teacher detections per image, masks kept at the mask head's resolution in each box's frame.

    Args:
        model: a :func:`methods.core.model.build_model` model (its ``roi_heads`` a ``NucleiRoIHeads``).
        images: ``uint8 (H, W, 3)`` patches.
        tta / tta_flips / tta_scales: test-time augmentation (see the module doc).
        batch_size: images per forward pass. device: torch device string. progress: show progress (``benchmark.progress``).

    Returns:
        per image ``{"boxes": float32 (N, 4) x1y1x2y2 in image pixels, "scores": float32 (N,),
        "masks": float16 (N, M, M) probabilities in the box frame}`` sorted by decreasing score.
    """
    from torchvision.models.detection.transform import resize_boxes

    from methods.core.heads import MaskRoIs

    dev = torch.device(device)
    model.to(dev)
    model.eval()
    tf, heads = model.transform, model.roi_heads
    base_min, base_max = tf.min_size, tf.max_size
    views = tta_views(tta, tta_flips, tta_scales)
    out: list[dict[str, np.ndarray]] = []
    from benchmark.progress import progress_bar

    bar = progress_bar(len(images), desc="pseudo-labels", unit="patch", enabled=progress, leave=False)
    try:
        for start in range(0, len(images), max(1, batch_size)):
            chunk = [_to_tensor(im, start + i).to(dev) for i, im in enumerate(images[start:start + batch_size])]
            sizes = [tuple(t.shape[-2:]) for t in chunk]
            tf.min_size, tf.max_size = base_min, base_max
            il, _ = tf(chunk)
            feats = model.backbone(il.tensors)
            props, _ = model.rpn(il, feats)
            dets, _ = heads(feats, props, il.image_sizes)
            boxes = [resize_boxes(d["boxes"], il.image_sizes[i], sizes[i]) for i, d in enumerate(dets)]
            scores = [d["scores"].float() for d in dets]
            masks = [d["masks"][:, 0].float() for d in dets]
            n_total = sum(int(b.shape[0]) for b in boxes)
            if len(views) > 1 and n_total:
                acc_s = [s.clone() for s in scores]
                acc_m = [m.clone() for m in masks]
                for flip, scale in views[1:]:
                    tf.min_size = (max(8, int(round(base_min[-1] * scale))),)
                    tf.max_size = max(8, int(round(base_max * scale)))
                    il_v, _ = tf([_flip_img(t, flip) for t in chunk])
                    feats_v = model.backbone(il_v.tensors)
                    bv = [resize_boxes(_flip_boxes(b, flip, sizes[i]), sizes[i], il_v.image_sizes[i])
                          for i, b in enumerate(boxes)]
                    logits, _ = heads.box_class_logits(feats_v, bv, il_v.image_sizes)
                    sv = torch.softmax(logits.float(), dim=-1)[:, 1]
                    rois = MaskRoIs(features=feats_v, proposals=bv, image_shapes=il_v.image_sizes,
                                    roi_features=heads.mask_roi_pool(feats_v, bv, il_v.image_sizes), training=False)
                    mv = heads.mask_branch(rois)["mask_logits"].float().sigmoid()[:, 0]
                    if "h" in flip:
                        mv = mv.flip(-1)
                    if "v" in flip:
                        mv = mv.flip(-2)
                    counts = [int(b.shape[0]) for b in boxes]
                    for i, (s_i, m_i) in enumerate(zip(sv.split(counts), mv.split(counts))):
                        acc_s[i] += s_i
                        acc_m[i] += m_i
                scores = [s / len(views) for s in acc_s]
                masks = [m / len(views) for m in acc_m]
            for b, s, m in zip(boxes, scores, masks):
                order = torch.argsort(s, descending=True, stable=True)
                out.append({
                    "boxes": b[order].float().cpu().numpy(),
                    "scores": s[order].float().cpu().numpy(),
                    "masks": m[order].cpu().numpy().astype(np.float16),
                })
            bar.update(len(chunk))
    finally:
        tf.min_size, tf.max_size = base_min, base_max
        bar.close()
    return out


def pseudo_label_map(
    det: dict[str, np.ndarray], shape: tuple[int, int], *, box_threshold: float, pixel_threshold: float = 0.5,
    min_area: int = 5,
) -> np.ndarray:
    """Instance map of one patch from its raw detections: keep ``score > box_threshold``, paste the masks
    (torchvision's ``paste_masks_in_image``), binarise at ``>= pixel_threshold``, paint (higher score wins),
    drop instances under ``min_area`` pixels. ``int32 (H, W)``."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from methods.core.instances import detections_to_instance_map

    scores = np.asarray(det["scores"], dtype=np.float64)
    keep = np.flatnonzero(scores > box_threshold)
    if keep.size == 0:
        return np.zeros(shape, dtype=np.int32)
    masks = torch.from_numpy(np.asarray(det["masks"][keep], dtype=np.float32))[:, None]
    boxes = torch.from_numpy(np.asarray(det["boxes"][keep], dtype=np.float32))
    pasted = paste_masks_in_image(masks, boxes, shape)[:, 0]
    return detections_to_instance_map(pasted, scores[keep], shape, score_thresh=-np.inf,
                                      mask_thresh=pixel_threshold, min_area=min_area)


# ------------------------------------------------------------------------------------ caching helpers
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def save_detections(path: Path, ids: Sequence[str], dets: Sequence[dict[str, np.ndarray]], key: str) -> None:
    """Store raw detections of many patches in one ``.npz`` (concatenated, with per-patch counts)."""
    counts = np.array([len(d["scores"]) for d in dets], dtype=np.int64)
    m = dets[0]["masks"].shape[-1] if dets and dets[0]["masks"].ndim == 3 else 28
    cat = (lambda k, shape, dt: np.concatenate([d[k] for d in dets]).astype(dt) if counts.sum()
           else np.zeros(shape, dt))
    _atomic_savez(
        path, key=np.array(key), ids=np.array(list(ids)), counts=counts,
        boxes=cat("boxes", (0, 4), np.float32), scores=cat("scores", (0,), np.float32),
        masks=cat("masks", (0, m, m), np.float16),
    )


def load_detections(path: Path, key: str) -> tuple[list[str], list[dict[str, np.ndarray]]] | None:
    """The cached detections if ``path`` exists and was written under ``key``; else ``None``."""
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        if str(z["key"]) != key:
            return None
        counts = z["counts"]
        offs = np.concatenate([[0], np.cumsum(counts)])
        boxes, scores, masks = z["boxes"], z["scores"], z["masks"]
        dets = [{"boxes": boxes[a:b], "scores": scores[a:b], "masks": masks[a:b]} for a, b in zip(offs[:-1], offs[1:])]
        return [str(i) for i in z["ids"]], dets
    except Exception as exc:  # noqa: BLE001 - a broken cache is recomputed
        log.warning("ignoring unreadable pseudo-label cache %s: %s", path, exc)
        return None


# ------------------------------------------------------------------------------------ teacher
def obtain_teacher(method: Method, data: TrainData, *, profile: Any, seed: int, device: str, workdir: Path,
                   progress: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The teacher model (eval mode) and a description of where it came from.

    Uses ``method.teacher_workdir`` (the runner's finished ``maskrcnn`` cell) when set, else trains (or reloads)
    a :class:`~methods.core.supervised.SupervisedMaskRCNN` in ``workdir/teacher``.

    Returns:
        ``(model, info)`` with ``info = {"source": "teacher_workdir" | "trained", "workdir": str, "key": ...}``.
    """
    from methods.core.persist import MODEL_FILE, load_model
    from methods.core.supervised import SupervisedMaskRCNN

    given = getattr(method, "teacher_workdir", None)
    if given is not None:
        path = Path(given)
        if not (path / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{method.name}: teacher_workdir {path} holds no {MODEL_FILE}; point it at a finished 'maskrcnn' "
                f"workdir or leave it None to train the teacher into {Path(workdir) / 'teacher'}"
            )
        model = load_model(path, device=device)
        return model, {"source": "teacher_workdir", "reused": True, "workdir": str(path),
                       "key": model.saved_meta.get("key")}
    tdir = Path(workdir) / "teacher"
    teacher = SupervisedMaskRCNN()
    t0 = time.perf_counter()
    teacher.fit(TrainData(labeled=list(data.labeled)), profile=profile, seed=seed, device=device, workdir=tdir,
                progress=progress)
    model = teacher.model
    assert model is not None
    recorded = getattr(teacher, "fit_info", None) or getattr(teacher, "info", {}) or {}
    return model, {"source": "trained", "reused": False, "workdir": str(tdir), "key": recorded.get("key"),
                   "seconds": round(time.perf_counter() - t0, 1)}


def _finite_or_none(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _finite_mean(values: Sequence[Any]) -> float | None:
    vals = [v for v in (_finite_or_none(x) for x in values) if v is not None]
    return float(np.mean(vals)) if vals else None


# ------------------------------------------------------------------------------------ the method base
class PseudoLabelStudentMethod(Method):
    """Base of offline pseudo-label methods: teacher -> count-matched PLs -> student with a custom mask branch.

    Subclasses set ``name``/``description``/``Options`` (a subclass of
    :class:`~methods.core.options.PseudoLabelOptions`, which declares the options common to every
    subclass: pseudo-labels, student training, the instance-map rule) and implement :meth:`build_branch`;
    they may override :meth:`student_augment`. ``weight_decay="profile"`` is recorded as ``None``.
    """

    teacher = "maskrcnn"
    deep = True
    uses_unlabeled = True
    version = "1"

    Options = PseudoLabelOptions
    #: options that only change prediction (not the PLs or the student)
    PREDICT_ONLY = ("score_thresh", "mask_thresh", "dilate", "min_area")
    #: options that change the pseudo-labels
    PL_OPTIONS = ("box_threshold", "pixel_threshold", "tta", "tta_flips", "tta_scales", "pl_min_area")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # types and ranges are checked by the Options declaration; "profile" is recorded as None
        if self.options["weight_decay"] == "profile":
            self.options["weight_decay"] = None
        self.model: torch.nn.Module | None = None
        self.profile: Any = None
        self.device = "cpu"
        self.fit_info: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}

    # ------------------------------------------------------------------ hooks
    def build_branch(self, profile: Any, norm: str) -> torch.nn.Module:  # pragma: no cover - abstract
        """The student's :class:`~methods.core.heads.MaskBranch` for ``profile`` (``norm``: the effective
        backbone normalisation, ``"gn"`` when training from scratch)."""
        raise NotImplementedError

    def student_augment(self) -> Any:
        """The augmentation of student training (default: the shared :class:`Augment` or none)."""
        from methods.core.augment import NO_AUGMENT, Augment

        return Augment() if self.options["augment"] else NO_AUGMENT

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Adjust a freshly built or reloaded student (e.g. BASS shares the RoIAlign); default: unchanged."""
        return model

    def student_config(self) -> dict[str, Any]:
        """Options that change the student's training (enter its checkpoint key)."""
        return {k: v for k, v in self.config().items() if k not in self.PREDICT_ONLY}

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _norm(profile: Any) -> str:
        from methods.core.model import resolve_backbone_init

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return resolve_backbone_init(profile)[0]

    def student_profile(self, profile: Any) -> Any:
        wd = self.options["weight_decay"]
        return profile if wd is None else profile.replace(weight_decay=float(wd))

    def pseudo_labels(self, teacher_model: torch.nn.Module, teacher_info: dict[str, Any], data: TrainData, *,
                      profile: Any, device: str, workdir: Path,
                      progress: bool = False) -> tuple[list[Any], dict[str, Any]]:
        """Pseudo-label the unlabeled patches (cached in ``workdir``).

        Returns:
            ``(patches, info)``: :class:`~methods.core.targets.TrainSample` list of the unlabeled patches
            that received at least one PL instance, and a JSON-able description (chosen threshold, count
            curve, counts, timings).
        """
        from methods.core.persist import data_digest
        from methods.core.targets import TrainSample

        o = self.options
        unlabeled = list(data.unlabeled)
        labeled = [p for p in data.labeled if p.label is not None]
        lab_counts = [instance_count(p.label) for p in labeled]
        # scores <= floor can never pass a candidate threshold (>= 0.10) or the fixed one: not stored
        floor = float(CANDIDATE_THRESHOLDS[0])
        if o["box_threshold"] != "auto":
            floor = min(floor, float(o["box_threshold"]))
        det_key = _digest({
            "teacher": teacher_info.get("key"), "tta": bool(o["tta"]), "flips": list(o["tta_flips"]),
            "scales": list(o["tta_scales"]), "data": data_digest(unlabeled), "floor": floor, "format": 1,
        })
        det_path = workdir / DETECTIONS_FILE
        t0 = time.perf_counter()
        cached = load_detections(det_path, det_key)
        ids = [str(p.id) for p in unlabeled]
        if cached is not None and cached[0] == ids:
            dets, det_cached = cached[1], True
        else:
            from benchmark.distributed import shard_map

            dets = shard_map(lambda images: teacher_detections(  # DDP: sharded over ranks, gathered on all
                teacher_model, images, tta=bool(o["tta"]), tta_flips=o["tta_flips"],
                tta_scales=o["tta_scales"], batch_size=int(getattr(profile, "eval_batch_size", 4) or 4),
                device=device, progress=progress,
            ), [p.image for p in unlabeled])
            dets = [{k: v[np.asarray(d["scores"], np.float64) > floor] for k, v in d.items()} for d in dets]
            save_detections(det_path, ids, dets, det_key)
            det_cached = False
        det_s = time.perf_counter() - t0

        curve = match_count_threshold([d["scores"] for d in dets], lab_counts)
        auto = o["box_threshold"] == "auto"
        thr = curve.threshold if auto else float(o["box_threshold"])
        map_key = _digest({"det": det_key, "thr": thr, "pix": float(o["pixel_threshold"]),
                           "min_area": int(o["pl_min_area"])})
        maps_path = workdir / MAPS_FILE
        maps: list[np.ndarray] | None = None
        if maps_path.is_file():
            try:
                z = np.load(maps_path, allow_pickle=False)
                if str(z["key"]) == map_key:
                    maps = [z[f"m{i}"] for i in range(len(unlabeled))]
            except Exception as exc:  # noqa: BLE001
                log.warning("ignoring unreadable pseudo-label maps %s: %s", maps_path, exc)
        maps_cached = maps is not None
        if maps is None:
            maps = [pseudo_label_map(d, p.image.shape[:2], box_threshold=thr,
                                     pixel_threshold=float(o["pixel_threshold"]), min_area=int(o["pl_min_area"]))
                    for d, p in zip(dets, unlabeled)]
            _atomic_savez(maps_path, key=np.array(map_key), **{f"m{i}": m for i, m in enumerate(maps)})
        samples = [TrainSample(image=p.image, label=m, id=str(p.id)) for p, m in zip(unlabeled, maps) if m.any()]
        from benchmark.distributed import note

        note("labeled", data_digest(labeled))
        note("pseudo_labels", data_digest(samples))
        pl_counts = [instance_count(m) for m in maps]
        info = {
            "box_threshold": thr,
            "box_threshold_mode": "auto" if auto else "fixed",
            "auto_threshold": curve.threshold,
            "pixel_threshold": float(o["pixel_threshold"]),
            "labeled_mean_count": curve.target_mean,
            "unlabeled_mean_count_at_threshold": float(np.mean(
                [np.count_nonzero(np.asarray(d["scores"], np.float64) > thr) for d in dets])) if dets else 0.0,
            "count_curve": {"thresholds": list(curve.thresholds), "mean_counts": list(curve.mean_counts)},
            "n_unlabeled": len(unlabeled),
            "n_raw_detections": int(sum(len(d["scores"]) for d in dets)),
            "n_pl_instances": int(sum(pl_counts)),
            "n_pl_patches_used": len(samples),
            "mean_pl_instances_per_patch": float(np.mean(pl_counts)) if pl_counts else 0.0,
            "tta_views": [list(v) for v in tta_views(bool(o["tta"]), o["tta_flips"], o["tta_scales"])],
            "detections_cached": det_cached,
            "maps_cached": maps_cached,
            "detection_seconds": round(det_s, 1),
        }
        _atomic_json(workdir / META_FILE, info)
        return samples, info

    def _load_student(self, path: Path, device: str) -> torch.nn.Module:
        from methods.core.checkpoint import load_checkpoint
        from methods.core.persist import load_model, profile_from_dict

        blob = load_checkpoint(path)
        saved = profile_from_dict(blob["profile"])
        model = load_model(path, device=device, mask_branch=self.build_branch(saved, self._norm(saved)))
        return self.prepare_model(model)

    # ------------------------------------------------------------------ Method API
    def fit(self, data: TrainData, *, profile: Any, seed: int, device: str, workdir: Path,
            progress: bool = True) -> None:
        from methods.core.checkpoint import CheckpointError
        from methods.core.persist import MODEL_FILE, data_digest, save_model
        from methods.core.model import build_model
        from methods.core.targets import TrainSample
        from methods.core.train import history_summary, train

        labeled, _ = data.require(self.name)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.profile, self.device = profile, device
        t_fit = time.perf_counter()

        teacher_model, teacher_info = obtain_teacher(self, data, profile=profile, seed=seed, device=device,
                                                     workdir=workdir, progress=progress)
        if data.unlabeled:
            pl_samples, pl_info = self.pseudo_labels(teacher_model, teacher_info, data, profile=profile,
                                                     device=device, workdir=workdir, progress=progress)
        else:
            pl_samples, pl_info = [], {"n_unlabeled": 0, "note": "no unlabeled patches: student on labeled only"}
        teacher_state = (
            {k: v.detach().cpu() for k, v in teacher_model.state_dict().items()}
            if self.options["student_init"] == "teacher" else None
        )
        del teacher_model

        sprofile = self.student_profile(profile)
        lab_samples = [TrainSample(image=p.image, label=p.label, id=str(p.id)) for p in labeled]
        train_list = lab_samples * int(self.options["labeled_repeat"]) + pl_samples
        key = {
            "method": self.name, "version": self.version, "config": self.student_config(), "seed": seed,
            "profile": sprofile.digest(), "labeled": data_digest(labeled), "pl": data_digest(pl_samples),
            "teacher": teacher_info.get("key") if teacher_state is not None else None,
        }
        path = workdir / MODEL_FILE
        self.fit_info = {"teacher": teacher_info, "pseudo_labels": pl_info}
        if path.exists():
            model = self._load_student(path, device)
            if model.saved_meta.get("key") != json.loads(json.dumps(key, default=str)):
                raise CheckpointError(
                    f"{path} holds a student trained with different settings; delete it or use another workdir"
                )
            self.model = model
            self.fit_info["student"] = model.saved_meta.get("student", {})
            self.fit_info["student"]["reloaded"] = True
            self._write_info(workdir, t_fit)
            return

        torch.manual_seed(seed)
        norm = self._norm(sprofile)
        model = self.prepare_model(build_model(sprofile, mask_branch=self.build_branch(sprofile, norm)))
        init_info: dict[str, Any] = {"init": self.options["student_init"]}
        if teacher_state is not None:
            own = model.state_dict()
            copy = {k: v for k, v in teacher_state.items() if k in own and own[k].shape == v.shape}
            model.load_state_dict(copy, strict=False)
            init_info["copied_tensors"] = len(copy)
            init_info["own_tensors"] = len(own)
        result = train(
            model, train_list, sprofile, seed=seed, device=device, workdir=workdir, stage="student",
            augment=self.student_augment(), progress=progress, config=key,
        )
        last = result.history[-min(20, len(result.history)):]
        student_info = {
            **init_info,
            "iterations": result.iterations,
            "resumed_from": result.resumed_from,
            "train_seconds_last_call": round(result.seconds, 1),
            "n_train_samples": len(train_list),
            "n_labeled": len(labeled),
            "labeled_repeat": int(self.options["labeled_repeat"]),
            "n_pseudo_labeled": len(pl_samples),
            "weight_decay": sprofile.weight_decay,
            "final_losses": history_summary(result.history),
            "final_grad_norm": _finite_mean([h.get("grad_norm") for h in last]),
            "model_config": model.nuclei_config,
        }
        keys = sorted({k for h in result.history for k in h})
        _atomic_json(workdir / "student_history.json", {
            "columns": keys,
            "rows": [[_finite_or_none(h.get(k)) for k in keys] for h in result.history],
        })
        save_model(model, path, profile=sprofile, meta={"key": key, "student": student_info})
        result.checkpoint.unlink(missing_ok=True)  # model.pt supersedes it (the optimizer state doubles its size)
        model.eval()
        self.model = model
        self.fit_info["student"] = student_info
        self._write_info(workdir, t_fit)

    def _write_info(self, workdir: Path, t0: float) -> None:
        self.fit_info["fit_seconds_last_call"] = round(time.perf_counter() - t0, 1)
        self.fit_info["box_threshold"] = self.fit_info.get("pseudo_labels", {}).get("box_threshold")
        _atomic_json(workdir / "fit_info.json", self.fit_info)

    def _need_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() before predict()")
        return self.model

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        from methods.core.inference import predict_instance_maps

        model = self._need_model()
        rule = {k: self.options[k] for k in self.PREDICT_ONLY}
        batch = int(getattr(self.profile, "eval_batch_size", 4) or 4)
        return predict_instance_maps(model, images, batch_size=batch, device=self.device, **rule)

    def teardown(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
