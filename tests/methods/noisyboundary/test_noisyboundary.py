"""NoisyBoundary: the BPM Laplacian weight map, the BPM loss modes, the NTM head and the strong augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.profiles import PROFILES
from methods.core.targets import TrainSample
from methods.noisyboundary.method import NoisyBoundaryBranch, NoisyBoundaryMethod, StrongAugment, laplacian_weight


def test_laplacian_weight_single_pixel_hand_values():
    # sigmoid(+30) = 1, sigmoid(-30) ~ 1e-13: a single foreground pixel in the middle of a 5x5 RoI.
    logits = torch.full((1, 5, 5), -30.0)
    logits[0, 2, 2] = 30.0
    w = laplacian_weight(logits)[0]
    # |L * p| = 8 at the centre, 1 at its 8 neighbours, 0 elsewhere; mean = 16 / 25 = 0.64
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 1 / 0.64
    expected[2, 2] = 8 / 0.64
    assert torch.allclose(w, expected, atol=1e-5)
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-5)


def test_laplacian_weight_is_detached_per_roi_and_falls_back_to_uniform():
    logits = torch.randn(3, 1, 8, 8, requires_grad=True)
    w = laplacian_weight(logits)
    assert not w.requires_grad and w.shape == (3, 8, 8)
    assert torch.allclose(w.mean(dim=(1, 2)), torch.ones(3), atol=1e-5)
    flat = laplacian_weight(torch.full((1, 6, 6), -40.0))  # no response anywhere: uniform weights
    assert torch.all(flat == 1.0)
    # edges get more weight than flat interiors: a half-plane mask
    half = torch.full((1, 8, 8), -30.0)
    half[0, :, :4] = 30.0
    hw = laplacian_weight(half)[0]
    assert float(hw[4, 3]) > float(hw[4, 1]) and float(hw[4, 4]) > float(hw[4, 6])


def test_bpm_modes():
    torch.manual_seed(0)
    branch_paper = NoisyBoundaryBranch(32, 16, 2, None, bpm="paper")
    branch_code = NoisyBoundaryBranch(32, 16, 2, None, bpm="code")
    branch_none = NoisyBoundaryBranch(32, 16, 2, None, bpm="none")
    logits = torch.randn(4, 1, 28, 28)
    t = (torch.rand(4, 28, 28) > 0.5).float()
    valid = torch.ones(4, dtype=torch.bool)
    plain = F.binary_cross_entropy_with_logits(logits[:, 0], t)
    assert float(branch_none.mask_bce(logits, t, valid)) == pytest.approx(float(plain), rel=1e-6)
    assert float(branch_code.mask_bce(logits, t, valid)) == pytest.approx(3 * float(plain), rel=1e-6)
    w = laplacian_weight(logits)
    expected = (F.binary_cross_entropy_with_logits(logits[:, 0], t, reduction="none") * w).mean()
    assert float(branch_paper.mask_bce(logits, t, valid)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="bpm"):
        NoisyBoundaryBranch(bpm="x")


def test_ntm_head_has_no_crc_and_supervises_fused_plus_coarse():
    branch = NoisyBoundaryMethod().build_branch(PROFILES["smoke"], "gn")
    cfg = branch.cfg
    assert cfg.nmh and cfg.lrd and not cfg.crc and cfg.supervise == "fused" and cfg.lrd_boundary_weight == 1.0
    assert not hasattr(branch, "crc_encoder") and branch.fusion.in_channels == 2
    assert NoisyBoundaryMethod.teacher == "maskrcnn" and NoisyBoundaryMethod.deep
    with pytest.raises(ValueError, match="bpm"):
        NoisyBoundaryMethod(bpm="sometimes")


def test_strong_augment_is_seeded_and_keeps_labels_aligned():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lab = np.zeros((64, 64), np.int32)
    lab[10:20, 30:40] = 1
    s = TrainSample(img, lab)
    aug = StrongAugment()
    a = aug(s, np.random.default_rng(5))
    b = aug(s, np.random.default_rng(5))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert a.image.dtype == np.uint8 and a.image.shape == img.shape
    assert int((a.label == 1).sum()) == 100  # geometry only moves the nucleus
    outs = [aug(s, np.random.default_rng(k)).image for k in range(6)]
    assert any(not np.array_equal(o, outs[0]) for o in outs[1:])
    # every photometric op runs and changes the image
    for op in StrongAugment.OPS:
        out = aug.photometric(img, op, np.random.default_rng(1))
        assert out.dtype == np.uint8 and not np.array_equal(out, img), op
    # cutout paints grey holes
    holes = aug.cutout(np.zeros((50, 50, 3), np.uint8), np.random.default_rng(2))
    assert (holes == 128).any() and (holes == 0).any()


@pytest.mark.slow
def test_check_method_noisyboundary():
    from benchmark.catalog import METHODS
    from benchmark.check import check_method, check_profile

    for name, target in (("maskrcnn", "methods.maskrcnn.method:MaskRCNNMethod"),
                         ("noisyboundary", "methods.noisyboundary.method:NoisyBoundaryMethod")):
        if name not in METHODS:
            METHODS.register(name, target)
    profile = check_profile(iterations=4, checkpoint_every=2)
    report = check_method(NoisyBoundaryMethod, profile=profile)
    assert report.passed, report.format()
