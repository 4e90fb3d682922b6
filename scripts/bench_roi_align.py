"""RoIAlign forward + backward on CPU: torchvision's poolers against :mod:`methods.core.roialign`.

The shapes are a ``cpu``-profile training step's: two 256 px images, a 128-channel FPN (levels 64..8 px),
256 box-head RoIs at 7x7 (sampling 2) and 64 mask RoIs at 14x14 (sampling 2). Both poolers run
interleaved in one process on the same inputs (noisy machines: read the ratio); the gradients are
checked to be bitwise equal.

    python scripts/bench_roi_align.py --threads 2 --reps 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from methods.core import roialign


def inputs(n_rois: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    feats = OrderedDict((str(i), torch.randn(2, 128, 64 >> i, 64 >> i, generator=g)) for i in range(4))
    boxes = []
    for _ in range(2):
        xy = torch.rand(n_rois // 2, 2, generator=g) * 220
        boxes.append(torch.cat([xy, xy + torch.rand(n_rois // 2, 2, generator=g) * 30 + 4], 1))
    return feats, boxes


def once(pooler, feats, boxes) -> tuple[float, list[torch.Tensor]]:
    leaves = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
    t = time.perf_counter()
    out = pooler(leaves, boxes, [(256, 256), (256, 256)])
    out.backward(torch.ones_like(out))
    return time.perf_counter() - t, [v.grad for v in leaves.values()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = ["0", "1", "2", "3"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}; median of {args.reps} interleaved forward+backward passes")
    print("| pooler | RoIs | torchvision ms | methods.core.roialign ms | speed-up | gradients equal |")
    print("|---|---:|---:|---:|---:|---|")
    for size, sampling, n in ((7, 2, 256), (14, 2, 64)):
        feats, boxes = inputs(n, seed=size)
        tv = torchvision.ops.MultiScaleRoIAlign(names, size, sampling)
        ours = roialign.MultiScaleRoIAlign(names, size, sampling)
        a, b, equal = [], [], True
        for _ in range(args.reps):
            ta, ga = once(tv, feats, boxes)
            tb, gb = once(ours, feats, boxes)
            a.append(ta)
            b.append(tb)
            equal = equal and all(torch.equal(x, y) for x, y in zip(ga, gb))
        ma, mb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
        print(f"| {size}x{size}, sampling {sampling} | {n} | {ma:.1f} | {mb:.1f} | {ma / mb:.2f}x | {equal} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
