"""Whole-image stitching: perfect patch predictions must give back the whole-image instances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import disk

from benchmark.data.io import relabel_sequential
from benchmark.data.patching import PatchParams, cut_patches
from benchmark.data.stitching import ownership_bounds, predict_whole_image, stitch


def _blobs(h, w, n, seed=0, rmax=12):
    """Non-touching disks: (uint8 RGB image with dark nuclei on white, int32 instance map)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.int32)
    k = 0
    for _ in range(n * 20):
        if k == n:
            break
        r = int(rng.integers(4, rmax + 1))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        rr, cc = disk((cy, cx), r, shape=(h, w))
        gr, gc = disk((cy, cx), r + 2, shape=(h, w))  # keep 2 px between nuclei
        if rr.size == 0 or lab[gr, gc].any():
            continue
        k += 1
        lab[rr, cc] = k
    img = np.full((h, w, 3), 240, np.uint8)
    img[lab > 0] = 40
    return img, lab


def _same_partition(a, b):
    """Equal up to a renaming of ids (a bijection between instances)."""
    if a.shape != b.shape or ((a > 0) != (b > 0)).any():
        return False
    pairs = set(zip(a[a > 0].tolist(), b[b > 0].tolist()))
    return len(pairs) == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


def test_ownership_partitions_axis():
    starts = [0, 128, 256, 384, 512, 640, 744]
    b = ownership_bounds(starts, 256, 1000)
    assert b[0] == (0, 192) and b[1] == (192, 320) and b[-1][1] == 1000
    assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
    for (lo, hi), s in zip(b, starts):
        assert s <= lo and hi <= s + 256  # owned block inside its patch


@pytest.mark.parametrize("shape", [(1000, 1000), (512, 512), (700, 530), (200, 300)])
def test_stitch_perfect_patch_predictions(shape):
    img, lab = _blobs(*shape, n=int(shape[0] * shape[1] / 2500), seed=shape[0])
    patches = cut_patches(img, lab, PatchParams(), name="x")
    out = stitch(list(patches.labels), patches.positions, img.shape)
    assert out.shape == shape and out.dtype == np.int32
    assert _same_partition(out, lab)
    assert out.max() == lab.max()


def test_predict_whole_image_threshold_model():
    img, lab = _blobs(600, 800, n=150, seed=3)

    calls = []

    def predict(batch):
        calls.append(len(batch))
        return [ndimage.label(b.mean(-1) < 128)[0] for b in batch]

    out = predict_whole_image(predict, img, batch_size=7)
    assert _same_partition(out, lab)
    assert sum(calls) == len(cut_patches(img, None).positions) and max(calls) <= 7


def test_duplicates_from_shifted_predictions_are_dropped():
    """Two patches predicting the same nucleus with centroids on both sides of the ownership boundary
    must give one instance, not two."""
    size = 256
    positions = [(0, 0), (0, 128)]
    # boundary between the two patches along columns is (128 + 256) // 2 = 192
    a = np.zeros((size, size), np.int32)
    a[100:110, 185:199] = 1  # centroid col 191.5 -> owned by patch 0
    b = np.zeros((size, size), np.int32)
    b[100:110, 187 - 128 : 201 - 128] = 5  # same nucleus shifted 2 px: centroid col 193.5 -> patch 1
    out = stitch([a, b], positions, (256, 384))
    assert out.max() == 1
    assert (out == 1).sum() == 140


def test_cut_instance_not_duplicated_and_not_lost():
    # a nucleus straddling the seam: both patches see parts, exactly one keeps it (whole)
    lab = np.zeros((256, 384), np.int32)
    lab[50:70, 180:205] = 1
    patches = cut_patches(np.zeros((256, 384, 3), np.uint8), lab, PatchParams(), name="s")
    out = stitch(list(patches.labels), patches.positions, (256, 384))
    assert _same_partition(out, relabel_sequential(lab))


def test_stitch_input_validation():
    with pytest.raises(ValueError, match="positions"):
        stitch([np.zeros((4, 4))], [], (4, 4))
    with pytest.raises(ValueError, match="no patches"):
        stitch([], [], (4, 4))
    with pytest.raises(ValueError, match="must be"):
        stitch([np.zeros((4, 4)), np.zeros((5, 5))], [(0, 0), (0, 1)], (5, 5))
    empty = stitch([np.zeros((256, 256), np.int32)], [(0, 0)], (256, 256))
    assert empty.max() == 0
