"""The ``pointwssis`` method: teacher, point-selected pseudo masks (optionally refined), student.

See the package documentation (:mod:`methods.pointwssis`) for the pipeline.
"""

from __future__ import annotations

import dataclasses
import contextlib
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.api import Method, Patch, TrainData
from benchmark.options import option
from methods.core.options import RuleOptions
from methods.core.augment import NO_AUGMENT, Augment
from methods.core.checkpoint import CheckpointError
from methods.core.inference import predict_instance_maps
from methods.core.persist import data_digest, load_model, save_model
from methods.core.supervised import SupervisedMaskRCNN
from methods.core.model import build_model
from methods.core.targets import TrainSample
from methods.core.train import history_summary, train

from .matching import VIA_BOX, VIA_MASK, match_points, median_nucleus_size, paint_pseudo_label, point_boxes
from .refine import crop_masks, crop_windows, make_inputs, refine_masks, train_refiner
from .teacher import mask_probs_for_boxes, point_candidates

PL_FILE = "pseudo_labels.npz"


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def write_history(path: Path, history: Sequence[dict[str, float]]) -> None:
    """Every training iteration's losses, lr and gradient norm as ``{"columns": [...], "rows": [[...]]}``
    (non-finite values as ``null``), like the ``maskrcnn`` method's ``train_history.json``."""
    keys = sorted({k for h in history for k in h})

    def num(x: Any) -> float | None:
        return round(float(x), 6) if x is not None and math.isfinite(float(x)) else None

    path.write_text(json.dumps({"columns": keys, "rows": [[num(h.get(k)) for k in keys] for h in history]}))


def unlabeled_digest(patches: Sequence[Patch]) -> str:
    """Hash of the unlabeled patches' ids, images and points."""
    parts: list[Any] = []
    for p in patches:
        parts += [p.id, p.image, np.zeros(0) if p.points is None else np.asarray(p.points, np.float32)]
    return _digest(*parts)


@dataclasses.dataclass(frozen=True)
class PointWSSISOptions(RuleOptions):
    """Options of :class:`PointWSSISMethod` (plus the instance-map rule of :class:`RuleOptions`; here
    ``mask_thresh`` and ``min_area`` also apply to the teacher's candidate and pseudo masks)."""

    augment: bool = option(True, "flips / rotations / colour jitter while training the student")
    candidate_score: float = option(0.001, "teacher score threshold for candidates", low=0.0, high=1.0)
    candidate_cap: int = option(300, "the teacher keeps at least this many detections per patch", low=1)
    fallback_box: bool = option(True, "teacher mask head on a median-sized box at unmatched points")
    unmatched_as_boxes: bool = option(True, "points without a pseudo mask become box-only instances")
    refine: bool = option(False, "refine every pseudo mask with a small MaskRefineNet")
    refine_iters: int = option(300, "MaskRefineNet training iterations", low=1)


class PointWSSISMethod(Method):
    """PointWSSIS on Mask R-CNN: teacher, point-selected pseudo masks, student.

    Options (keyword arguments; defaults in :attr:`defaults`):
        score_thresh (float, 0.5): student detections painted into the output map (see ``maskrcnn``).
        mask_thresh (float, 0.5): pixel threshold for the student's masks *and* the teacher's candidate
            masks.
        dilate (int, 0): dilation of each output mask (``maskrcnn`` rule).
        min_area (int, 5): smallest output instance, smallest candidate mask and smallest pseudo mask.
        augment (bool, True): flips / rotations / colour jitter while training the student.
        candidate_score (float, 0.001): teacher score threshold for candidates (points replace thresholds).
        candidate_cap (int, 300): the teacher keeps at least this many detections per patch.
        fallback_box (bool, True): run the teacher's mask head on a median-sized box at unmatched points.
        unmatched_as_boxes (bool, True): points without a pseudo mask become box-only instances
            (``False``: they are dropped, i.e. that nucleus is trained as background).
        refine (bool, False): train a small MaskRefineNet on the labeled patches and refine every pseudo
            mask with it (:mod:`methods.pointwssis.refine`).
        refine_iters (int, 300): MaskRefineNet training iterations (Adam, 32 crops of 64x64 each).
    """

    name = "pointwssis"
    description = "PointWSSIS: Mask R-CNN teacher, one pseudo mask per given point, student (+points)"
    approximation = (
        "Mask R-CNN instead of SOLOv2; point-to-detection matching (mask, then box containment) replaces "
        "kernel selection; median-size box + teacher mask head for unmatched points; MaskRefineNet optional "
        "(off by default) and smaller (64x64 crops)"
    )
    needs = frozenset({"points"})
    teacher = "maskrcnn"
    deep = True
    uses_unlabeled = True
    version = "1"
    Options = PointWSSISOptions
    table_order = 40

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.model: nn.Module | None = None
        self.profile: Any = None
        self.device = "cpu"
        self.fit_info: dict[str, Any] = {}

    # -------------------------------------------------------------- teacher
    def _teacher(self, data: TrainData, *, profile: Any, seed: int, device: str, workdir: Path,
                 progress: bool) -> SupervisedMaskRCNN:
        teacher = SupervisedMaskRCNN()
        if self.teacher_workdir is not None:
            tdir = Path(self.teacher_workdir)
            if not (tdir / "model.pt").is_file():
                raise FileNotFoundError(
                    f"{self.name}: teacher_workdir {tdir} holds no finished maskrcnn model (model.pt); "
                    f"train the 'maskrcnn' cell first or leave teacher_workdir unset to train it here"
                )
        else:
            tdir = workdir / "teacher"
        # fit() loads a finished model with the same settings (and checks them) instead of retraining
        teacher.fit(TrainData(labeled=data.labeled), profile=profile, seed=seed, device=device, workdir=tdir,
                    progress=progress)
        return teacher

    # -------------------------------------------------------------- pseudo-labels
    @contextlib.contextmanager
    def _candidate_mode(self, teacher_model: nn.Module):
        """Lower the teacher's score threshold / raise its cap for candidate generation (restored after)."""
        heads = teacher_model.roi_heads
        saved = (heads.score_thresh, heads.detections_per_img)
        heads.score_thresh = float(self.options["candidate_score"])
        heads.detections_per_img = max(int(saved[1]), int(self.options["candidate_cap"]))
        try:
            yield
        finally:
            heads.score_thresh, heads.detections_per_img = saved

    def point_masks(
        self, teacher_model: nn.Module, images: Sequence[np.ndarray], points: Sequence[np.ndarray], *,
        box_size: tuple[float, float], batch_size: int = 4, device: str = "cpu",
    ) -> list[tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
        """One rough mask per point (steps 2-4 of the package doc, before painting).

        Returns:
            per image ``(masks, priorities, sources)``: a ``bool (H, W)`` mask per point (empty when nothing
            was found), its painting priority (detection score; -1 for fallback masks) and its source
            (``"via_mask"``, ``"via_box"``, ``"fallback"`` or ``"none"``).
        """
        out = []
        with self._candidate_mode(teacher_model):
            for start in range(0, len(images), max(1, batch_size)):
                ims = list(images[start:start + batch_size])
                pts = [np.asarray(p, np.float32).reshape(-1, 2) for p in points[start:start + batch_size]]
                dets = point_candidates(teacher_model, ims, pts, device=device)
                for im, pt, det in zip(ims, pts, dets):
                    out.append(self._masks_one(teacher_model, im, pt, det, box_size, device))
        return out

    def _masks_one(self, model, image, pts, det, box_size, device):
        o = self.options
        h, w = image.shape[:2]
        n = len(pts)
        binary = det["masks"] >= float(o["mask_thresh"])
        usable = binary.sum(axis=(1, 2)) >= max(1, int(o["min_area"]))
        idx = np.flatnonzero(usable)
        match = match_points(pts, det["boxes"][idx], det["scores"][idx], binary[idx])
        masks = [np.zeros((h, w), dtype=bool) for _ in range(n)]
        prio = np.full(n, -1.0)  # fallback masks are painted first, matched ones by increasing score
        source = np.array(["via_mask" if v == VIA_MASK else "via_box" if v == VIA_BOX else "none"
                           for v in match.via], dtype=object)
        for i in np.flatnonzero(match.detection >= 0):
            d = idx[match.detection[i]]
            masks[i] = binary[d]
            prio[i] = float(det["scores"][d])
        missing = np.flatnonzero(match.detection < 0)
        if o["fallback_box"] and len(missing):
            probs = mask_probs_for_boxes(model, image, point_boxes(pts[missing], box_size, (h, w)), device=device)
            for j, i in enumerate(missing):
                masks[i] = probs[j] >= float(o["mask_thresh"])
                source[i] = "fallback"
        return masks, prio, source

    def pseudo_labels(
        self, teacher_model: nn.Module, patches: Sequence[Patch], *, box_size: tuple[float, float],
        batch_size: int = 4, device: str = "cpu", refiner: nn.Module | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, int]]:
        """Point-guided pseudo-labels for ``patches`` (each with ``points``).

        Args:
            refiner: a trained :class:`~methods.pointwssis.refine.MaskRefineNet`; when given, every point's
                rough mask is replaced by its refinement (kept rough when the refinement has fewer than
                ``min_area`` pixels).

        Returns:
            ``(maps, extra_boxes, stats)``: per patch an ``int32 (H, W)`` pseudo instance map and a
            ``float32 (K, 4)`` array of box-only instances; ``stats`` counts the points (``points``) and
            partitions them by final outcome: a pseudo mask from a detection whose mask (``via_mask``) or
            only box (``via_box``) contains the point, from the mask head on a median box
            (``fallback``), or none (``box_only`` / ``dropped``, see ``unmatched_as_boxes``);
            ``refined`` counts the masks replaced by the refiner.
        """
        o = self.options
        stats = dict.fromkeys(("points", "via_mask", "via_box", "fallback", "box_only", "dropped", "refined"), 0)
        for p in patches:
            if p.points is None:
                raise ValueError(f"{self.name}: unlabeled patch {p.id!r} has no points")
        rough = self.point_masks(teacher_model, [p.image for p in patches], [p.points for p in patches],
                                 box_size=box_size, batch_size=batch_size, device=device)
        maps: list[np.ndarray] = []
        extras: list[np.ndarray] = []
        for p, (masks, prio, source) in zip(patches, rough):
            h, w = p.image.shape[:2]
            pts = np.asarray(p.points, np.float32).reshape(-1, 2)
            stats["points"] += len(pts)
            if refiner is not None and len(pts):
                refined = refine_masks(refiner, p.image, pts, masks, device=device)
                for i, m in enumerate(refined):
                    if m.sum() >= max(1, int(o["min_area"])):
                        masks[i] = m
                        stats["refined"] += 1
                        if source[i] == "none":
                            source[i] = "fallback"
            label, kept = paint_pseudo_label(masks, prio, (h, w), min_area=int(o["min_area"]))
            for i in np.flatnonzero(kept):
                stats[source[i]] += 1
            lost = np.flatnonzero(~kept)
            if o["unmatched_as_boxes"]:
                extras.append(point_boxes(pts[lost], box_size, (h, w)))
                stats["box_only"] += len(lost)
            else:
                extras.append(np.zeros((0, 4), np.float32))
                stats["dropped"] += len(lost)
            maps.append(label)
        return maps, extras, stats

    def train_refiner(
        self, teacher_model: nn.Module, labeled: Sequence[Patch], *, box_size: tuple[float, float], seed: int,
        batch_size: int = 4, device: str = "cpu",
    ) -> tuple[nn.Module, dict[str, Any]]:
        """MaskRefineNet on the labeled patches: the teacher's point-selected masks (points = the labeled
        instances' centroids) as rough masks, the ground-truth instances as targets."""
        from benchmark.data.points import instance_points

        points = [instance_points(p.label) for p in labeled]
        rough = self.point_masks(teacher_model, [p.image for p in labeled], points, box_size=box_size,
                                 batch_size=batch_size, device=device)
        xs, ys = [], []
        for p, pts, (masks, _, _) in zip(labeled, points, rough):
            if not len(pts):
                continue
            ids = np.unique(p.label)
            ids = ids[ids > 0]
            targets = [p.label == i for i in ids]  # instance_points is ordered by increasing id
            windows = crop_windows(pts, masks)
            xs.append(make_inputs(p.image, pts, masks, windows))
            ys.append(crop_masks(targets, windows))
        if not xs:
            raise ValueError(f"{self.name}: refine=True needs labeled patches with instances")
        net, losses = train_refiner(torch.cat(xs), torch.cat(ys), iterations=int(self.options["refine_iters"]),
                                    seed=seed, device=device)
        tail = losses[-min(20, len(losses)):]
        return net, {"crops": int(sum(len(x) for x in xs)), "iterations": len(losses),
                     "final_loss": float(np.mean(tail))}

    # -------------------------------------------------------------- fit / predict
    def _train_key(self, seed: int, profile: Any, labeled_digest: str, unl_digest: str, teacher_key: Any):
        o = self.options
        return {
            "method": self.name, "version": self.version, "seed": seed, "profile": profile.digest(),
            "labeled": labeled_digest, "unlabeled": unl_digest, "teacher": teacher_key,
            "pl": {k: o[k] for k in ("mask_thresh", "min_area", "candidate_score", "candidate_cap",
                                      "fallback_box", "unmatched_as_boxes", "refine", "refine_iters")},
            "augment": bool(o["augment"]),
        }

    def fit(self, data: TrainData, *, profile: Any, seed: int, device: str, workdir: Path,
            progress: bool = True) -> None:
        labeled, unlabeled = data.require(self.name, "points")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.profile, self.device = profile, device
        key = self._train_key(seed, profile, data_digest(labeled), unlabeled_digest(unlabeled), None)

        path = workdir / "model.pt"
        if path.exists():
            model = load_model(path, device=device)
            saved = model.saved_meta.get("key") or {}
            if any(saved.get(k) != v for k, v in key.items() if k != "teacher"):
                raise CheckpointError(
                    f"{path} holds a {self.name} model trained with different settings or data; delete it or "
                    f"use another workdir to retrain."
                )
            self.model, self.fit_info = model, model.saved_meta
            return

        teacher = self._teacher(data, profile=profile, seed=seed, device=device, workdir=workdir,
                                progress=progress)
        teacher_meta = getattr(teacher, "fit_info", None) or getattr(teacher, "info", None) or {}
        key["teacher"] = teacher_meta.get("key")
        box_size = median_nucleus_size([p.label for p in labeled])
        batch = int(getattr(profile, "eval_batch_size", 4) or 4)
        t_pl = time.perf_counter()
        maps, extras, stats = self._cached_pseudo_labels(
            workdir, key, teacher.model, labeled, unlabeled, box_size, batch, seed, device,
        )
        pl_seconds = time.perf_counter() - t_pl
        teacher.teardown()

        samples = [TrainSample(image=p.image, label=p.label, id=p.id) for p in labeled]
        samples += [TrainSample(image=p.image, label=m, boxes=b if len(b) else None, id=p.id)
                    for p, m, b in zip(unlabeled, maps, extras)]
        torch.manual_seed(seed)
        model = build_model(profile)
        result = train(
            model, samples, profile, seed=seed, device=device, workdir=workdir, stage="student",
            augment=Augment() if self.options["augment"] else NO_AUGMENT, progress=progress, config=key,
        )
        self.fit_info = {
            "key": key,
            "model_config": model.nuclei_config,
            "iterations": result.iterations,
            "train_seconds_last_call": round(result.seconds, 1),
            "resumed_from": result.resumed_from,
            "final_losses": history_summary(result.history),
            "n_labeled": len(labeled),
            "n_pseudo_labeled": len(unlabeled),
            "median_box_wh": list(box_size),
            "pseudo_label_stats": stats,
            "pseudo_label_seconds_last_call": round(pl_seconds, 1),
        }
        save_model(model, path, profile=profile, meta=self.fit_info)
        (workdir / "model.json").write_text(json.dumps(self.fit_info, indent=2))
        write_history(workdir / "student_history.json", result.history)
        # model.pt supersedes the training checkpoint (its optimizer state doubles the size)
        result.checkpoint.unlink(missing_ok=True)
        model.eval()
        self.model = model

    def _cached_pseudo_labels(self, workdir: Path, key: dict, teacher_model: nn.Module, labeled: Sequence[Patch],
                              unlabeled: Sequence[Patch], box_size, batch_size: int, seed: int, device: str):
        """Pseudo-labels (and, with ``refine``, the MaskRefineNet first), cached in
        ``workdir/pseudo_labels.npz`` under a digest of ``key``."""
        tag = _digest(key)
        path = workdir / PL_FILE
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == tag and len(z["ids"]) == len(unlabeled):
                    maps = list(z["maps"])
                    counts = z["box_counts"]
                    flat = z["boxes"]
                    extras = np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []
                    stats = json.loads(str(z["stats"]))
                    return maps, [np.asarray(e, np.float32).reshape(-1, 4) for e in extras], stats
        refiner = None
        refine_info: dict[str, Any] = {}
        if self.options["refine"]:
            refiner, refine_info = self.train_refiner(teacher_model, labeled, box_size=box_size, seed=seed,
                                                      batch_size=batch_size, device=device)
        maps, extras, stats = self.pseudo_labels(teacher_model, unlabeled, box_size=box_size,
                                                 batch_size=batch_size, device=device, refiner=refiner)
        if refine_info:
            stats = {**stats, "refiner": refine_info}
        if unlabeled and len({m.shape for m in maps}) == 1:  # cache only same-size patches (the usual case)
            tmp = path.with_name(f".{PL_FILE}.tmp.npz")
            np.savez_compressed(
                tmp, key=np.array(tag), ids=np.array([p.id for p in unlabeled]),
                maps=np.stack(maps).astype(np.int32),
                boxes=np.concatenate(extras).astype(np.float32) if extras else np.zeros((0, 4), np.float32),
                box_counts=np.array([len(e) for e in extras], dtype=np.int64), stats=np.array(json.dumps(stats)),
            )
            tmp.replace(path)
            (workdir / "pseudo_labels.json").write_text(json.dumps({"box_size_wh": list(box_size), **stats},
                                                                    indent=2))
        return maps, extras, stats

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() before predict()")
        o = self.options
        batch = int(getattr(self.profile, "eval_batch_size", 4) or 4)
        return predict_instance_maps(
            self.model, list(images), batch_size=batch, device=self.device,
            score_thresh=o["score_thresh"], mask_thresh=o["mask_thresh"], dilate=o["dilate"],
            min_area=o["min_area"],
        )

    def teardown(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
