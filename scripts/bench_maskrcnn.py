"""Time the nuclei Mask R-CNN: seconds per training iteration and inference patches per second.

For each backbone x input size it builds :func:`methods.core.model.build_model` from a profile (default:
the ``cpu`` profile's lean heads; ``--profile paper`` for torchvision-sized heads), feeds batches of
synthetic 256x256 patches (~15-25 nuclei, resized to the input size by the model's transform, as in
training) and reports the median over ``--iters`` timed steps after ``--warmup`` untimed ones:

- train: forward + backward + SGD step at ``profile.batch_size`` patches;
- inference: ``eval_batch_size`` patches per forward, no_grad. An untrained model scores most of its
  proposals near 0.5, so it returns up to the detection cap: the inference figure is a worst case
  (a trained model returns ~the number of nuclei). The mean detection count is reported.

Runs on the CPU always and on CUDA too when available (``--devices``). Prints Markdown; ``--out`` also
writes it to a file. Example (what produced reports/bench_maskrcnn.md)::

    PYTHONPATH=. python scripts/bench_maskrcnn.py --out reports/bench_maskrcnn.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.data.synthetic import SyntheticDataset
from benchmark.profiles import PROFILES
from methods.core.model import build_model
from methods.core.targets import TrainSample, sample_to_target

DEFAULT_CONFIGS = "resnet18:256,resnet18:512,resnet50:256,resnet50:512,resnet18:800"


def _patches(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    ds = SyntheticDataset(n_images=max(1, (n + 3) // 4), size=512, seed=0)
    out = []
    for name in ds.image_names():
        r = ds.load(name)
        for y in (0, 256):
            for x in (0, 256):
                out.append((r.image[y:y + 256, x:x + 256].copy(), r.label[y:y + 256, x:x + 256].copy()))
    return out[:n]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_one(profile, device: str, patches, warmup: int, iters: int) -> dict[str, float]:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(profile).to(dev)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    use_amp = dev.type == "cuda" and profile.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    bs = profile.batch_size
    batches = []
    for k in range(warmup + iters):
        chunk = [patches[(k * bs + j) % len(patches)] for j in range(bs)]
        imgs, tgts = zip(*[sample_to_target(TrainSample(im, lab)) for im, lab in chunk])
        batches.append(([i.to(dev) for i in imgs], [{kk: v.to(dev) for kk, v in t.items()} for t in tgts]))
    model.train()
    times = []
    for k, (imgs, tgts) in enumerate(batches):
        _sync(dev)
        t = time.perf_counter()
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
            losses = model(imgs, tgts)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(dev)
        if k >= warmup:
            times.append(time.perf_counter() - t)
    train_s = statistics.median(times)
    train_best = min(times)

    model.eval()
    eb = profile.eval_batch_size
    inf_times, dets = [], []
    with torch.no_grad():
        for k in range(warmup + iters):
            chunk = [patches[(k * eb + j) % len(patches)][0] for j in range(eb)]
            imgs = [torch.from_numpy(im).permute(2, 0, 1).float().div(255).to(dev) for im in chunk]
            _sync(dev)
            t = time.perf_counter()
            out = model(imgs)
            masks = [o["masks"].cpu() for o in out]  # include the copy back, as predict does
            _sync(dev)
            if k >= warmup:
                inf_times.append(time.perf_counter() - t)
                dets.extend(m.shape[0] for m in masks)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return {
        "train_s_per_iter": train_s,
        "train_best_s": train_best,
        "infer_best_patches_per_s": eb / min(inf_times),
        "train_patches_per_s": bs / train_s,
        "infer_patches_per_s": eb / statistics.median(inf_times),
        "mean_detections": float(np.mean(dets)),
        "gpu_peak_gib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu", help="profile giving head sizes / batch sizes (default cpu)")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"backbone:input_size list (default {DEFAULT_CONFIGS})")
    ap.add_argument("--gpu-configs", default=None, help="configs for CUDA (default: same plus resnet50:800)")
    ap.add_argument("--devices", default="auto", help="'auto' (cpu + cuda if present), 'cpu' or 'cuda'")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else [args.devices]
    base = PROFILES[args.profile]
    patches = _patches(8)

    lines = [
        "# Mask R-CNN timings",
        "",
        f"- command: `python scripts/bench_maskrcnn.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} CPU threads, torchvision "
        f"{__import__('torchvision').__version__}",
        f"- load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(other jobs share these cores: with a load of L on {os.cpu_count()} cores expect timings inflated "
        f"up to ~L/{os.cpu_count()}-fold; idle-machine figures are correspondingly lower)",
    ]
    if torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name(0)}")
    lines += [
        f"- heads from the `{args.profile}` profile: {base.rpn_post_nms_top_n_train} post-NMS proposals, "
        f"{base.box_batch_size_per_image} RoIs/img, box head {base.box_head_dim}, mask head "
        f"{base.mask_head_convs}x{base.mask_head_channels}, cap {base.detections_per_img} detections; "
        f"norm {base.norm}; train batch {base.batch_size}, inference batch {base.eval_batch_size}",
        f"- median and best (least disturbed by other jobs) of {args.iters} steps after {args.warmup} warm-up; input = 256x256 synthetic patches resized "
        f"to the input size; inference on an untrained model (worst case: detections near the cap)",
        "",
        "| device | backbone | input px | train s/iter (median) | train s/iter (best) | train patches/s "
        "| inference patches/s (median) | inference patches/s (best) | mean detections | GPU peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    t_all = time.perf_counter()
    for device in devices:
        spec = args.configs if device == "cpu" else (args.gpu_configs or args.configs + ",resnet50:800")
        for item in spec.split(","):
            backbone, size = item.split(":")
            prof = base.replace(backbone=backbone, input_size=int(size), amp=True)
            r = bench_one(prof, device, patches, args.warmup, args.iters)
            row = (
                f"| {device} | {backbone}-FPN | {size} | {r['train_s_per_iter']:.2f} | {r['train_best_s']:.2f} "
                f"| {r['train_patches_per_s']:.2f} | {r['infer_patches_per_s']:.2f} | {r['infer_best_patches_per_s']:.2f} "
                f"| {r['mean_detections']:.0f} | "
                + ("-" if np.isnan(r["gpu_peak_gib"]) else f"{r['gpu_peak_gib']:.1f}") + " |"
            )
            lines.append(row)
            print(row, file=sys.stderr, flush=True)
    lines += ["", f"Total benchmark time: {time.perf_counter() - t_all:.0f} s; load average at end: "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
