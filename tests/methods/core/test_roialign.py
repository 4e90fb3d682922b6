"""methods.core.roialign: torchvision's RoIAlign results, bit for bit, with a multi-threaded CPU backward."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision

from methods.core import roialign


def _boxes(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):  # two images of 256 px
        xy = torch.rand(n, 2, generator=g) * 200
        wh = torch.rand(n, 2, generator=g) * 60 + 2
        out.append(torch.cat([xy, xy + wh], 1))
    return out


def _features(channels: int, seed: int) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((str(i), torch.randn(2, channels, 64 >> i, 64 >> i, generator=g).requires_grad_())
                       for i in range(4))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("output_size, sampling_ratio", [(7, 2), (14, 2), (28, 1)])
def test_multiscale_pooling_and_its_gradient_are_bitwise_torchvisions(threads, output_size, sampling_ratio):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        names = ["0", "1", "2", "3"]
        results = []
        for pooler in (torchvision.ops.MultiScaleRoIAlign(names, output_size, sampling_ratio),
                       roialign.MultiScaleRoIAlign(names, output_size, sampling_ratio)):
            feats, boxes = _features(33, seed=1), _boxes(40, seed=2)  # 33: chunks of unequal size
            out = pooler(feats, boxes, [(256, 256), (256, 256)])
            weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
            (out * weight).sum().backward()
            results.append((out.detach(), [f.grad for f in feats.values()]))
        (a, grads_a), (b, grads_b) = results
        assert torch.equal(a, b)
        assert all(torch.equal(x, y) for x, y in zip(grads_a, grads_b))
    finally:
        torch.set_num_threads(before)


def test_roi_align_function_matches_torchvision_without_grad_and_for_aligned():
    x = torch.randn(2, 8, 32, 32)
    rois = torch.tensor([[0, 1.0, 2.0, 20.0, 25.0], [1, 0.0, 0.0, 31.0, 31.0]])
    for aligned in (False, True):
        want = torchvision.ops.roi_align(x, rois, (5, 6), 0.5, 2, aligned)
        assert torch.equal(roialign.roi_align(x, rois, (5, 6), 0.5, 2, aligned), want)
        xg = x.clone().requires_grad_()
        got = roialign.roi_align(xg, rois, (5, 6), 0.5, 2, aligned)
        assert torch.equal(got, want) and got.requires_grad


def test_the_models_poolers_are_the_threaded_ones():
    from benchmark.check import check_profile
    from methods.core.model import build_model

    model = build_model(check_profile())
    assert isinstance(model.roi_heads.box_roi_pool, roialign.MultiScaleRoIAlign)
    assert isinstance(model.roi_heads.mask_roi_pool, roialign.MultiScaleRoIAlign)
