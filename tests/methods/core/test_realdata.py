"""A few iterations on real MoNuSeg patches: the loss goes down (overfitting two patches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.profiles import PROFILES
from methods.core.augment import NO_AUGMENT
from methods.core.model import build_model
from methods.core.train import train

STEM = "TCGA-18-5592-01Z-00-DX1"


@pytest.mark.slow
@pytest.mark.realdata
def test_loss_decreases_on_real_monuseg_patches(shared_datasets, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    root = shared_datasets / "monuseg" / "MoNuSegTrainingData"
    image = tifffile.imread(root / "Tissue_Images" / f"{STEM}.tif")
    label = tifffile.imread(root / "InstanceMaps" / f"{STEM}.tif")
    assert image.shape == (1000, 1000, 3) and label.dtype == np.int32
    image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    patches = [(image[y:y + 256, x:x + 256].copy(), label[y:y + 256, x:x + 256].copy())
               for y, x in [(256, 256), (512, 512)]]
    assert all(len(np.unique(lab)) > 10 for _, lab in patches)

    p = PROFILES["smoke"].replace(iterations=14, warmup_iters=2, lr_steps=(), checkpoint_every=100)
    torch.manual_seed(0)
    model = build_model(p)
    r = train(model, patches, p, seed=0, device="cpu", workdir=tmp_path, progress=False, augment=NO_AUGMENT)
    losses = [h["loss"] for h in r.history]
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert np.isfinite(losses).all()
    assert last < 0.75 * first, losses
