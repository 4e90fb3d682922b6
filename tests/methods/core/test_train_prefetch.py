"""Background batch preparation changes the speed of the training loop, never its numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.data.synthetic import generate_tile
from methods.core import train as train_mod
from methods.core.augment import Augment
from methods.core.model import build_model
from methods.core.targets import TrainSample, instance_masks


def _run(samples, profile, tmp_path, prefetch: bool, monkeypatch) -> tuple[list, dict]:
    monkeypatch.setattr(train_mod, "PREFETCH", prefetch)
    torch.manual_seed(0)
    model = build_model(profile)
    res = train_mod.train(model, samples, profile, seed=3, device="cpu", workdir=tmp_path / str(prefetch),
                          augment=Augment(), progress=False)
    return res.history, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_prefetch_gives_the_same_loss_curve_and_weights(small_patches, tiny_profile, tmp_path, monkeypatch):
    profile = tiny_profile.replace(iterations=4)
    samples = [TrainSample(im, lab) for im, lab in small_patches]
    h_off, w_off = _run(samples, profile, tmp_path, False, monkeypatch)
    h_on, w_on = _run(samples, profile, tmp_path, True, monkeypatch)
    assert len(h_on) == len(h_off) == 4
    for a, b in zip(h_on, h_off):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7, nan_ok=True), k
    assert all(torch.allclose(w_on[k].float(), w_off[k].float(), atol=1e-6) for k in w_on)


def test_prepare_batch_is_a_pure_function_of_the_iteration(small_patches):
    samples = [TrainSample(im, lab) for im, lab in small_patches]

    def batch_fn(it, bs):
        return [samples[(it * bs + j) % len(samples)] for j in range(bs)]

    a = train_mod.prepare_batch(batch_fn, 5, 2, 0, Augment())
    b = train_mod.prepare_batch(batch_fn, 5, 2, 0, Augment())
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert all(torch.equal(x["masks"], y["masks"]) for x, y in zip(a[2], b[2]))


def _reference_instance_masks(label):
    ids = np.unique(label)
    ids = ids[ids != 0]
    masks = np.stack([(label == i).astype(np.uint8) for i in ids]) if len(ids) else np.zeros((0,) + label.shape, np.uint8)
    boxes = []
    for m in masks:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    return masks, np.asarray(boxes, np.float32).reshape(-1, 4)


@pytest.mark.parametrize("shift", [0, 100])
def test_instance_masks_match_the_whole_patch_comparison(shift):
    _, lab = generate_tile(0, 1, size=256)
    lab = np.where(lab > 3, lab + shift, 0).astype(np.int32)  # gaps and large ids
    got, ref = instance_masks(lab), _reference_instance_masks(lab)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
    empty = instance_masks(np.zeros((32, 32), np.int32))
    assert empty[0].shape == (0, 32, 32) and empty[1].shape == (0, 4)
