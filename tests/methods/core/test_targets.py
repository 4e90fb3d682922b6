"""Targets from instance maps, binarised mask targets, and consistent augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.core.augment import NO_AUGMENT, Augment
from methods.core.targets import TrainSample, instance_masks, mask_targets, sample_to_target


def _label():
    lab = np.zeros((32, 32), np.int32)
    lab[2:6, 3:10] = 4      # ids need not be consecutive
    lab[20:31, 15:18] = 9
    return lab


def test_instance_masks_boxes_are_exclusive_and_ordered():
    masks, boxes = instance_masks(_label())
    assert masks.shape == (2, 32, 32) and masks.dtype == np.uint8
    np.testing.assert_array_equal(boxes, [[3, 2, 10, 6], [15, 20, 18, 31]])
    assert masks[0].sum() == 28 and masks[1].sum() == 33


def test_empty_label_gives_zero_instances():
    img, tgt = sample_to_target(TrainSample(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.int32)))
    assert img.shape == (3, 16, 16)
    assert tgt["boxes"].shape == (0, 4) and tgt["masks"].shape == (0, 16, 16)
    assert tgt["labels"].dtype == torch.int64


def test_box_only_instances_have_no_valid_mask():
    s = TrainSample(np.zeros((16, 16, 3), np.uint8), _label()[:16, :16], boxes=np.array([[1, 1, 5, 5], [3, 3, 3, 9]]))
    _, tgt = sample_to_target(s)
    # one labelled instance + one valid box (the zero-width box is dropped)
    assert tgt["boxes"].shape == (2, 4)
    assert tgt["mask_valid"].tolist() == [True, False]
    assert tgt["labels"].tolist() == [1, 1]


def test_mask_targets_are_binarised_and_match_the_crop():
    masks = torch.zeros((1, 40, 40), dtype=torch.uint8)
    masks[0, 10:30, 10:20] = 1  # left half of the box below
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    soft = mask_targets([masks], [boxes], [torch.tensor([0])], 28, binarize=None)
    hard = mask_targets([masks], [boxes], [torch.tensor([0])], 28)
    assert ((soft > 0) & (soft < 1)).any()  # torchvision's crops are soft at edges
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    # torchvision's convention: pixel centres at integer coordinates, so the last target row/column
    # (centred on the exclusive x2/y2 edge) is mostly background; everything else is exact
    assert hard[0, :27, :12].mean() == 1.0 and hard[0, :, 16:].sum() == 0 and hard[0, 27].sum() == 0
    small = mask_targets([masks], [boxes], [torch.tensor([0])], 14)
    assert small.shape == (1, 14, 14)


def _coded_sample():
    """An image whose colour encodes the instance id (so image/label alignment is checkable)."""
    rng = np.random.default_rng(0)
    lab = np.zeros((24, 24), np.int32)
    for i in range(1, 6):
        y, x = rng.integers(0, 20, 2)
        lab[y:y + 4, x:x + 3] = i
    img = np.stack([lab * 40, lab * 40, 255 - lab * 40], axis=-1).astype(np.uint8)
    _, boxes = instance_masks(lab)
    return TrainSample(img, lab, boxes=boxes)


@pytest.mark.parametrize("seed", range(8))
def test_geometric_augmentation_keeps_image_label_and_boxes_aligned(seed):
    s = _coded_sample()
    aug = Augment(contrast=0, brightness=0, channel_gain=0)
    out = aug(s, np.random.default_rng(seed))
    np.testing.assert_array_equal(out.image[..., 0].astype(np.int32), out.label * 40)
    _, boxes = instance_masks(out.label)
    np.testing.assert_array_equal(np.sort(out.boxes, axis=0), np.sort(boxes, axis=0))
    assert sorted(np.unique(out.label)) == sorted(np.unique(s.label))


def test_augmentation_is_seeded_and_covers_the_dihedral_group():
    s = _coded_sample()
    aug = Augment()
    a = aug(s, np.random.default_rng(3))
    b = aug(s, np.random.default_rng(3))
    np.testing.assert_array_equal(a.image, b.image)
    seen = {aug(s, np.random.default_rng(k)).label.tobytes() for k in range(64)}
    assert len(seen) == 8  # 4 rotations x flip
    out = NO_AUGMENT(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image, s.image)


def test_colour_jitter_is_modest_and_image_only():
    s = _coded_sample()
    out = Augment(hflip=False, vflip=False, rot90=False)(s, np.random.default_rng(1))
    np.testing.assert_array_equal(out.label, s.label)
    diff = np.abs(out.image.astype(int) - s.image.astype(int))
    assert 0 < diff.mean() < 40
