"""Weak annotations derived from an instance map (for methods that declare ``needs``).

* points: one ``(row, col)`` per instance, its centroid (mean pixel coordinate; for a fragmented
  instance it may fall outside the instance), ``float32 (N, 2)``.
* boxes: one ``(x1, y1, x2, y2)`` per instance, tight pixel bounds with ``x2``/``y2`` exclusive,
  ``float32 (N, 4)``.

Both are ordered by instance id (ids present in the map, ascending).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _ids(label: np.ndarray) -> np.ndarray:
    ids = np.unique(label)
    return ids[ids > 0]


def instance_points(label: np.ndarray) -> np.ndarray:
    """Centroids ``(row, col)`` of the instances of ``label``, ``float32 (N, 2)``."""
    label = np.asarray(label)
    ids = _ids(label)
    if ids.size == 0:
        return np.zeros((0, 2), dtype=np.float32)
    cents = ndimage.center_of_mass(np.ones(label.shape, dtype=np.float64), label, ids)
    return np.asarray(cents, dtype=np.float32).reshape(-1, 2)


def instance_boxes(label: np.ndarray) -> np.ndarray:
    """Boxes ``(x1, y1, x2, y2)`` (exclusive ``x2``/``y2``) of the instances of ``label``, ``float32 (N, 4)``."""
    label = np.asarray(label)
    ids = _ids(label)
    if ids.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    lab = label.astype(np.int64, copy=False)
    slices = ndimage.find_objects(lab, max_label=int(ids[-1]))
    boxes = [
        (s[1].start, s[0].start, s[1].stop, s[0].stop) for i in ids if (s := slices[int(i) - 1]) is not None
    ]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
