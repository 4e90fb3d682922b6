"""RoIAlign whose CPU backward uses every torch thread, with bit-identical results.

Why: torchvision's CPU ``_roi_align_backward`` kernel runs on one thread. On a 2-core machine it took
22 % of a ``cpu``-profile training step with 2 threads
(``reports/step_profile_cpu_2threads_torchvision_roialign.txt``) while the other core idled. Channels
are independent in RoIAlign (forward and backward), so this module
splits the channels into one chunk per torch thread and runs torchvision's own kernels on the chunks in
a small thread pool (the kernels release the GIL). Every output element is computed by the same
kernel, in the same order, as without the split: the results are bitwise equal
(``tests/methods/core/test_roialign.py``).

- :func:`roi_align`: ``torchvision.ops.roi_align`` with that backward (CUDA inputs, a single thread or a
  single channel go straight to torchvision).
- :class:`MultiScaleRoIAlign`: ``torchvision.ops.MultiScaleRoIAlign`` (same arguments, same level
  assignment) calling :func:`roi_align` per FPN level.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torchvision
from torch import Tensor
from torchvision.ops import poolers

_POOL: dict[str, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOL_LOCK:
        pool = _POOL.get("pool")
        if pool is None or pool._max_workers != workers:  # torch's thread count changed
            if pool is not None:
                pool.shutdown(wait=False)
            pool = _POOL["pool"] = ThreadPoolExecutor(workers, thread_name_prefix="roi-align")
        return pool


def _chunks(channels: int) -> int:
    return max(1, min(torch.get_num_threads(), channels))


def _backward(grad: Tensor, rois: Tensor, scale: float, out: tuple[int, int], shape: torch.Size,
              sampling_ratio: int, aligned: bool) -> Tensor:
    """``torch.ops.torchvision._roi_align_backward`` over channel chunks, one per torch thread."""
    n, _c, h, w = shape

    def one(g: Tensor) -> Tensor:
        return torch.ops.torchvision._roi_align_backward(
            g.contiguous(), rois, scale, out[0], out[1], n, g.shape[1], h, w, sampling_ratio, aligned)

    parts = grad.chunk(_chunks(grad.shape[1]), dim=1)
    if len(parts) == 1:
        return one(grad)
    return torch.cat(list(_pool(len(parts)).map(one, parts)), dim=1)


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, rois: Tensor, scale: float, out: tuple[int, int], sampling_ratio: int,
                aligned: bool) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.meta = (scale, out, x.shape, sampling_ratio, aligned)
        return torch.ops.torchvision.roi_align(x, rois, scale, out[0], out[1], sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        scale, out, shape, sampling_ratio, aligned = ctx.meta
        return _backward(grad, rois, scale, out, shape, sampling_ratio, aligned), None, None, None, None, None


def roi_align(x: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """``torchvision.ops.roi_align`` (same arguments and result) with a multi-threaded CPU backward.

    Args:
        x: ``float (N, C, H, W)`` features.
        rois: ``float (K, 5)`` boxes ``(batch index, x1, y1, x2, y2)`` in input coordinates.
        output_size: ``(h, w)`` or one side; spatial_scale, sampling_ratio, aligned: as torchvision.

    Returns:
        ``(K, C, h, w)`` pooled features.
    """
    out = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if x.is_cuda or not (x.requires_grad and torch.is_grad_enabled()) or _chunks(x.shape[1]) == 1:
        return torchvision.ops.roi_align(x, rois, out, spatial_scale, sampling_ratio, aligned)
    return _RoIAlign.apply(x, rois, float(spatial_scale), out, int(sampling_ratio), bool(aligned))


def multiscale_roi_align(features: list[Tensor], boxes: list[Tensor], output_size: tuple[int, int],
                         sampling_ratio: int, scales: list[float], mapper) -> Tensor:
    """Each box pooled from its FPN level (torchvision's canonical level mapping) with :func:`roi_align`."""
    rois = poolers._convert_to_roi_format(boxes)
    if len(features) == 1:
        return roi_align(features[0], rois, output_size, scales[0], sampling_ratio)
    levels = mapper(boxes)
    first = features[0]
    result = first.new_zeros((len(rois), first.shape[1], *output_size))
    for level, (feature, scale) in enumerate(zip(features, scales)):
        idx = torch.where(levels == level)[0]
        result[idx] = roi_align(feature, rois[idx], output_size, scale, sampling_ratio).to(result.dtype)
    return result


class MultiScaleRoIAlign(poolers.MultiScaleRoIAlign):
    """``torchvision.ops.MultiScaleRoIAlign`` (same constructor) pooling with :func:`roi_align`."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        x_filtered = poolers._filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = poolers._setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level)
        return multiscale_roi_align(x_filtered, boxes, self.output_size, self.sampling_ratio, self.scales,
                                    self.map_levels)
