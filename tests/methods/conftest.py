"""Fixtures for the Mask R-CNN tests: small synthetic patches and a tiny, fast profile."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.synthetic import SyntheticDataset
from benchmark.profiles import PROFILES


def crop_patches(records, size: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping ``size`` crops (plain slicing) of every record, in order."""
    out = []
    for r in records:
        h, w = r.label.shape
        for y in range(0, h - size + 1, size):
            for x in range(0, w - size + 1, size):
                out.append((r.image[y:y + size, x:x + size].copy(), r.label[y:y + size, x:x + size].copy()))
    return out


@pytest.fixture(scope="session")
def synthetic_patches() -> list[tuple[np.ndarray, np.ndarray]]:
    """8 patches of 256x256 (two 512 synthetic tiles), 10-25 nuclei each."""
    ds = SyntheticDataset(n_images=2, size=512, seed=0)
    return crop_patches([ds.load(n) for n in ds.image_names()])


@pytest.fixture(scope="session")
def small_patches(synthetic_patches) -> list[tuple[np.ndarray, np.ndarray]]:
    """4 patches of 128x128 for fast mechanics tests (training loop, checkpoints)."""
    return [(im[:128, :128].copy(), lab[:128, :128].copy()) for im, lab in synthetic_patches[:4]]


@pytest.fixture
def tiny_profile():
    """The smoke profile shrunk for mechanics tests: 128 px input, few RoIs, short schedule."""
    return PROFILES["smoke"].replace(
        input_size=128, iterations=6, warmup_iters=2, checkpoint_every=3, rpn_post_nms_top_n_train=64,
        rpn_post_nms_top_n_test=64, box_batch_size_per_image=32, box_head_dim=64, mask_head_channels=32,
        detections_per_img=50, eval_batch_size=2,
    )
