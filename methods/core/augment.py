"""Seeded training augmentation applied identically to the image, its instance map and its boxes.

Geometric: random horizontal flip, vertical flip and 90-degree rotation (the dihedral group of the
square; nuclei have no orientation). Photometric (image only): modest colour/stain jitter: contrast
around the mean, a global brightness shift and a per-channel gain (which shifts the H&E hue balance).
Every draw comes from the ``numpy.random.Generator`` passed in, so the training loop's per-iteration
generator makes augmentation reproducible and resumable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .targets import TrainSample


@dataclasses.dataclass(frozen=True)
class Augment:
    """Augmentation settings.

    Attributes:
        hflip / vflip: flip with probability 0.5 each.
        rot90: rotate by k*90 degrees, k uniform in 0..3 (square patches only; others skip it).
        contrast: contrast factor drawn from ``[1 - contrast, 1 + contrast]`` (0 = off).
        brightness: brightness shift drawn from ``[-brightness, brightness]`` x 255 (0 = off).
        channel_gain: per-RGB-channel gain from ``[1 - g, 1 + g]`` (0 = off).
    """

    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    contrast: float = 0.1
    brightness: float = 0.05
    channel_gain: float = 0.05

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __call__(self, sample: TrainSample, rng: np.random.Generator) -> TrainSample:
        """Return an augmented copy of ``sample`` (draws a fixed number of values from ``rng``)."""
        img = sample.image
        lab = sample.label
        boxes = None if sample.boxes is None else np.asarray(sample.boxes, np.float32).reshape(-1, 4).copy()
        # fixed number of draws per call so the stream does not depend on the options
        u = rng.random(3)
        k = int(rng.integers(0, 4))
        c = rng.uniform(-1.0, 1.0, size=5)

        if self.hflip and u[0] < 0.5:
            w = img.shape[1]
            img = img[:, ::-1]
            lab = None if lab is None else lab[:, ::-1]
            if boxes is not None:
                boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
        if self.vflip and u[1] < 0.5:
            h = img.shape[0]
            img = img[::-1]
            lab = None if lab is None else lab[::-1]
            if boxes is not None:
                boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
        if self.rot90 and img.shape[0] == img.shape[1]:
            for _ in range(k):
                w = img.shape[1]
                img = np.rot90(img)
                lab = None if lab is None else np.rot90(lab)
                if boxes is not None:
                    x1, y1, x2, y2 = boxes.T.copy()
                    boxes = np.stack([y1, w - x2, y2, w - x1], axis=1).astype(np.float32)

        if self.contrast or self.brightness or self.channel_gain:
            f = img.astype(np.float32)
            mean = f.mean()
            f = (f - mean) * (1.0 + self.contrast * c[0]) + mean
            f = f + self.brightness * 255.0 * c[1]
            f = f * (1.0 + self.channel_gain * c[2:5])[None, None, :]
            img = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        return TrainSample(
            image=np.ascontiguousarray(img),
            label=None if lab is None else np.ascontiguousarray(lab),
            boxes=boxes,
            id=sample.id,
        )


NO_AUGMENT = Augment(hflip=False, vflip=False, rot90=False, contrast=0.0, brightness=0.0, channel_gain=0.0)
