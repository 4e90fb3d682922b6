"""``watershed``: the non-learning reference row (colour deconvolution + threshold + watershed).

A classical nuclei pipeline whose few numbers are *fitted* on the labeled patches, so that it is a fair
"no deep learning" floor for every table:

1. **Hematoxylin channel**: ``skimage.color.rgb2hed`` (Ruifrok & Johnston colour deconvolution), first
   channel, Gaussian-smoothed (``smooth_sigma``). With ``normalize="median"`` (default) each image's
   median H is subtracted first, which removes most of the per-slide stain-intensity offset.
2. **Threshold** (fitted): candidates are ``threshold_quantiles`` evenly spaced quantiles (1 %..99 %)
   of the pooled H values of the labeled patches; the one maximising pooled foreground Dice against
   the labeled masks wins (ties: the lowest quantile).
   A pixel must also be stained at all: its smoothed total optical density must exceed ``od_floor``
   (fitted: half the 1st percentile over the labeled foreground, at least 0.05), so blank or
   near-white images give no instances whatever the per-image normalisation does.
3. **Clean-up**: binary opening with a disk of ``opening_radius``, holes filled.
4. **Split touching nuclei**: Euclidean distance transform (Gaussian-smoothed, sigma 1), markers from
   ``skimage.feature.peak_local_max(min_distance=...)`` on it, watershed of the negated distance
   restricted to the foreground. A connected component that received no marker becomes one instance.
5. **Small objects** below ``min_area`` pixels are removed; ids are relabelled ``1..N``.

Fitted values (stored in :attr:`WatershedMethod.fitted_` and reported by ``config()["fitted"]``):

- ``threshold`` and ``od_floor``: step 2.
- ``min_area`` (unless given): half the 5th percentile of the areas of the labeled instances that do
  not touch the patch border (all instances if every one does), at least 4 pixels.
- ``median_radius``: ``sqrt(median area / pi)`` over the same instances.
- ``min_distance`` (unless given): ``round(f * median_radius)`` (at least 2) for ``f`` in
  ``distance_factors``, picking the candidate with the highest mean AJI on the labeled patches
  (ties: the smallest candidate).

Nothing is random: ``seed`` only picks which patches are used when there are more than
``max_fit_patches`` labeled ones. Unlabeled patches, ``val``, the profile and the device are ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from benchmark.api import Method, TrainData
from benchmark.options import option


@dataclasses.dataclass(frozen=True)
class WatershedOptions:
    """Options of :class:`WatershedMethod`."""

    smooth_sigma: float = option(1.0, "Gaussian sigma (pixels) applied to the H channel", low=0.0)
    normalize: str = option("median", "subtract each image's median H, or keep raw H", choices=("median", "none"))
    threshold_quantiles: int = option(99, "number of candidate thresholds (quantiles 1 %..99 %)", low=2)
    opening_radius: int = option(1, "disk radius of the binary opening (0 = no opening)", low=0)
    min_distance: int = option(0, "marker spacing in pixels; 0 = fit it", low=0)
    distance_factors: tuple[float, ...] = option(
        (0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3), "min_distance candidates, multiples of the median nucleus radius",
        low=0.0, low_open=True,
    )
    min_area: int = option(0, "smallest kept object in pixels; 0 = fit it", low=0)
    max_fit_patches: int = option(200, "at most this many labeled patches are used for fitting", low=1)


class WatershedMethod(Method):
    """Colour deconvolution, fitted hematoxylin threshold, distance-transform watershed.

    Options (keyword arguments of the constructor; defaults in :attr:`defaults`):
        smooth_sigma (float, 1.0): Gaussian sigma (pixels) applied to the H channel.
        normalize (str, "median"): ``"median"`` subtracts each image's median H; ``"none"`` keeps raw H.
        threshold_quantiles (int, 99): number of candidate thresholds (quantiles 1 %..99 %).
        opening_radius (int, 1): radius of the disk used for binary opening (0 = no opening).
        min_distance (int, 0): marker spacing in pixels; 0 = fit it (see module docstring).
        distance_factors (tuple, (0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3)): candidates for ``min_distance`` as
            multiples of the median nucleus radius.
        min_area (int, 0): smallest kept object in pixels; 0 = fit it.
        max_fit_patches (int, 200): at most this many labeled patches are used for fitting (a
            seed-determined subset when there are more).
    """

    name = "watershed"
    description = "H colour deconvolution + fitted threshold + distance-transform watershed (no learning)"
    uses_unlabeled = False
    deep = False
    version = "1"
    Options = WatershedOptions
    table_order = 10

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        if o["normalize"] not in ("median", "none"):
            raise ValueError(f"watershed: normalize must be 'median' or 'none', got {o['normalize']!r}")
        if float(o["smooth_sigma"]) < 0:
            raise ValueError(f"watershed: smooth_sigma must be >= 0, got {o['smooth_sigma']}")
        if int(o["threshold_quantiles"]) < 2:
            raise ValueError(f"watershed: threshold_quantiles must be >= 2, got {o['threshold_quantiles']}")
        for key in ("opening_radius", "min_distance", "min_area"):
            if int(o[key]) < 0:
                raise ValueError(f"watershed: {key} must be >= 0, got {o[key]}")
        if int(o["max_fit_patches"]) < 1:
            raise ValueError(f"watershed: max_fit_patches must be >= 1, got {o['max_fit_patches']}")
        factors = tuple(float(f) for f in o["distance_factors"])
        if not factors or min(factors) <= 0:
            raise ValueError(f"watershed: distance_factors must be positive numbers, got {factors}")
        o["distance_factors"] = factors
        #: fitted parameters (empty until :meth:`fit`): threshold, min_distance, min_area, ...
        self.fitted_: dict[str, Any] = {}

    # ------------------------------------------------------------------ API
    def config(self) -> dict[str, Any]:
        """Hyper-parameters (JSON types); after :meth:`fit` also ``"fitted"``: the fitted values."""
        cfg = dict(self.options)
        cfg["distance_factors"] = list(cfg["distance_factors"])
        if self.fitted_:
            cfg["fitted"] = dict(self.fitted_)
        return cfg

    def fit(
        self,
        data: TrainData,
        *,
        profile: Any = None,
        seed: int = 0,
        device: str = "cpu",
        workdir: Path | None = None,
        progress: bool = True,
    ) -> None:
        """Fit threshold, ``min_area`` and ``min_distance`` on ``data.labeled`` (see module docstring).

        Raises:
            ValueError: ``data.labeled`` is empty, or a labeled patch has no label / mismatched shapes.
        """
        labeled = list(data.labeled)
        if not labeled:
            raise ValueError(
                "watershed: data.labeled is empty; this baseline fits its threshold, minimum area and "
                "marker spacing on labeled patches, so give it at least one labeled patch"
            )
        for p in labeled:
            if p.label is None:
                raise ValueError(f"watershed: labeled patch {p.id!r} has label=None")
            if p.image.ndim != 3 or p.image.shape[2] != 3 or p.label.shape != p.image.shape[:2]:
                raise ValueError(
                    f"watershed: patch {p.id!r} has image {p.image.shape} and label {p.label.shape}; "
                    "expected (H, W, 3) and (H, W)"
                )
        cap = int(self.options["max_fit_patches"])
        if len(labeled) > cap:
            pick = np.sort(np.random.default_rng(seed).choice(len(labeled), cap, replace=False))
            labeled = [labeled[i] for i in pick.tolist()]

        hs = [self._h_channel(p.image) for p in labeled]
        fgs = [np.asarray(p.label) > 0 for p in labeled]
        threshold, fit_dice = _fit_threshold(hs, fgs, int(self.options["threshold_quantiles"]))
        fg_od = np.concatenate([self._optical_density(p.image)[f] for p, f in zip(labeled, fgs)])
        od_floor = max(0.05, 0.5 * float(np.percentile(fg_od, 1))) if fg_od.size else 0.05

        areas = _interior_areas([np.asarray(p.label) for p in labeled])
        if areas.size:
            median_radius = float(math.sqrt(float(np.median(areas)) / math.pi))
            area_floor = max(4, int(0.5 * float(np.percentile(areas, 5))))
        else:  # no instance at all in the labeled patches
            median_radius, area_floor = 4.0, 4
        min_area = int(self.options["min_area"]) or area_floor

        fitted: dict[str, Any] = {
            "threshold": float(threshold),
            "od_floor": od_floor,
            "threshold_fit_dice": float(fit_dice),
            "median_radius": median_radius,
            "min_area": min_area,
            "n_fit_patches": len(labeled),
        }
        if int(self.options["min_distance"]) > 0:
            fitted["min_distance"] = int(self.options["min_distance"])
        else:
            from benchmark.metrics import aji

            candidates = sorted(
                {max(2, int(round(f * median_radius))) for f in self.options["distance_factors"]}
            )
            masks = [
                self._foreground(h, threshold, self._optical_density(p.image), od_floor)
                for h, p in zip(hs, labeled)
            ]
            dists = [_distance(m) for m in masks]
            scores = []
            for md in candidates:
                preds = [_split(m, md, min_area, d) for m, d in zip(masks, dists)]
                scores.append(float(np.mean([aji(p.label, q) for p, q in zip(labeled, preds)])))
            best = int(np.argmax(scores))
            fitted["min_distance"] = candidates[best]
            fitted["min_distance_candidates"] = candidates
            fitted["min_distance_fit_aji"] = scores
        self.fitted_ = fitted

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One ``int32 (H, W)`` instance map per ``uint8 (H, W, 3)`` RGB image (0 = background).

        Raises:
            RuntimeError: called before :meth:`fit`.
            ValueError: an image is not ``(H, W, 3)``.
        """
        if not self.fitted_:
            raise RuntimeError("watershed: call fit() before predict()")
        out = []
        for k, img in enumerate(images):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"watershed: image {k} has shape {img.shape}; expected (H, W, 3) RGB")
            f = self.fitted_
            mask = self._foreground(
                self._h_channel(img), f["threshold"], self._optical_density(img), f["od_floor"]
            )
            out.append(_split(mask, self.fitted_["min_distance"], self.fitted_["min_area"]))
        return out

    # ------------------------------------------------------------------ steps
    def _h_channel(self, image: np.ndarray) -> np.ndarray:
        """Smoothed (and per-image median-centred) hematoxylin channel, ``float64 (H, W)``."""
        from skimage.color import rgb2hed

        h = rgb2hed(np.asarray(image, dtype=np.uint8))[..., 0]
        if self.options["normalize"] == "median":
            h = h - float(np.median(h))
        sigma = float(self.options["smooth_sigma"])
        if sigma > 0:
            h = ndimage.gaussian_filter(h, sigma, mode="reflect")
        return h

    def _optical_density(self, image: np.ndarray) -> np.ndarray:
        """Smoothed total optical density ``sum_c -ln(max(I_c, 1) / 255)``, ``float64 (H, W)``."""
        od = -np.log(np.maximum(np.asarray(image, dtype=np.float64), 1.0) / 255.0).sum(axis=-1)
        sigma = float(self.options["smooth_sigma"])
        return ndimage.gaussian_filter(od, sigma, mode="reflect") if sigma > 0 else od

    def _foreground(
        self, h: np.ndarray, threshold: float, od: np.ndarray, od_floor: float
    ) -> np.ndarray:
        """``h > threshold`` and ``od > od_floor``, opened, holes filled."""
        mask = (h > threshold) & (od > od_floor)
        r = int(self.options["opening_radius"])
        if r > 0:
            from skimage.morphology import disk

            mask = ndimage.binary_opening(mask, structure=disk(r))
        return ndimage.binary_fill_holes(mask)


def _fit_threshold(hs: list[np.ndarray], fgs: list[np.ndarray], n: int) -> tuple[float, float]:
    """The quantile threshold of the pooled ``hs`` maximising pooled Dice of ``h > t`` vs ``fgs``."""
    values = np.concatenate([h.ravel() for h in hs])
    fg = np.concatenate([f.ravel() for f in fgs])
    n_fg = int(fg.sum())
    candidates = np.quantile(values, np.linspace(0.01, 0.99, n))
    all_sorted = np.sort(values)
    fg_sorted = np.sort(values[fg])
    pred_pos = values.size - np.searchsorted(all_sorted, candidates, side="right")
    true_pos = n_fg - np.searchsorted(fg_sorted, candidates, side="right")
    denom = pred_pos + n_fg
    dice = np.where(denom > 0, 2.0 * true_pos / np.maximum(denom, 1), 1.0)
    best = int(np.argmax(dice))
    return float(candidates[best]), float(dice[best])


def _interior_areas(labels: list[np.ndarray]) -> np.ndarray:
    """Areas of instances not touching the patch border (all instances if none qualifies)."""
    inner, every = [], []
    for lab in labels:
        ids, counts = np.unique(lab[lab > 0], return_counts=True)
        if ids.size == 0:
            continue
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        touching = np.isin(ids, border)
        inner.append(counts[~touching])
        every.append(counts)
    inner_a = np.concatenate(inner) if inner else np.zeros(0, np.int64)
    return inner_a if inner_a.size else (np.concatenate(every) if every else np.zeros(0, np.int64))


def _distance(mask: np.ndarray) -> np.ndarray:
    """Gaussian-smoothed (sigma 1) Euclidean distance transform of ``mask``, zero outside it."""
    if not mask.any():
        return np.zeros(mask.shape, np.float64)
    return ndimage.gaussian_filter(ndimage.distance_transform_edt(mask), 1.0) * mask


def _split(
    mask: np.ndarray, min_distance: int, min_area: int, dist: np.ndarray | None = None
) -> np.ndarray:
    """Distance-transform watershed of a binary mask into ``int32`` instances ``1..N``.

    ``dist`` is :func:`_distance` of ``mask`` (computed if not given, passed in when fitting to reuse it).
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    out = np.zeros(mask.shape, np.int32)
    if not mask.any():
        return out
    if dist is None:
        dist = _distance(mask)
    peaks = peak_local_max(dist, min_distance=int(min_distance), exclude_border=False)
    peaks = peaks[mask[tuple(peaks.T)]] if len(peaks) else peaks
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    ws = watershed(-dist, markers, mask=mask).astype(np.int32)
    # connected components that received no marker become one instance each
    missing = mask & (ws == 0)
    if missing.any():
        extra, _ = ndimage.label(missing)
        ws[missing] = extra[missing] + len(peaks)
    # remove small objects, relabel 1..N
    counts = np.bincount(ws.ravel())
    keep = counts >= max(1, int(min_area))
    keep[0] = False
    lut = np.zeros(counts.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[ws]
