"""How close one CPU training step comes to the machine's matrix-multiply throughput.

Efficiency = FLOPs of a training step (counted with ``torch.utils.flop_counter.FlopCounterMode``)
divided by (seconds per step x sgemm throughput). The sgemm figure is measured in the same run, on the
same threads, by timing a large ``torch.mm`` (``--gemm`` x ``--gemm`` float32), so machine load moves
both numbers alike. Two step times are reported:

- **model step**: forward + backward + SGD on pre-built batches (what the network costs);
- **training loop**: :func:`methods.core.train.train` itself (sampling, augmentation, target
  generation, gradient clipping, bookkeeping), per-iteration wall time taken by an ``after_step`` hook.

The FLOP count is the mean over the timed model-step batches (RoI counts vary a little per batch); the
training loop sees different batches of the same kind, so it is credited with the same count. With
``--ops FILE`` one model step is profiled with ``torch.profiler`` and its operator table (sorted by
self CPU time) is written to ``FILE``. Example (what produced reports/bench_step_efficiency.md)::

    PYTHONPATH=. python scripts/bench_step_efficiency.py --profile cpu --iters 8 \
        --ops reports/step_profile_cpu.txt --out reports/bench_step_efficiency.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.data.synthetic import SyntheticDataset
from benchmark.profiles import PROFILES
from methods.core.augment import Augment
from methods.core.model import build_model
from methods.core.targets import TrainSample, sample_to_target
from methods.core.train import train


def patches(n_images: int) -> list[TrainSample]:
    """256x256 synthetic training patches (4 per 512x512 tile)."""
    ds = SyntheticDataset(n_images=n_images, size=512, seed=0)
    out = []
    for name in ds.image_names():
        r = ds.load(name)
        for y in (0, 256):
            for x in (0, 256):
                out.append(TrainSample(r.image[y:y + 256, x:x + 256].copy(), r.label[y:y + 256, x:x + 256].copy()))
    return out


def sgemm_gflops(n: int, reps: int = 5) -> float:
    """Median float32 ``torch.mm`` throughput (GFLOP/s) of an ``n x n`` product on the current threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


def _step(model, opt, imgs, tgts) -> None:
    losses = model(imgs, tgts)
    opt.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    opt.step()


def model_step(profile, samples: list[TrainSample], warmup: int, iters: int, ops: Path | None,
               channels_last: bool = False):
    """(median seconds, mean FLOPs) of forward + backward + SGD on pre-built batches."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_model(profile).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    bs = profile.batch_size
    batches = []
    for k in range(warmup + iters):
        chunk = [sample_to_target(samples[(k * bs + j) % len(samples)]) for j in range(bs)]
        batches.append(([c[0] for c in chunk], [c[1] for c in chunk]))
    times, flops = [], []
    for k, (imgs, tgts) in enumerate(batches):
        t = time.perf_counter()
        _step(model, opt, imgs, tgts)
        if k >= warmup:
            times.append(time.perf_counter() - t)
    for imgs, tgts in batches[warmup:]:
        counter = FlopCounterMode(display=False)
        with counter:
            _step(model, opt, imgs, tgts)
        flops.append(counter.get_total_flops())
    if ops is not None:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        with tprofile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            _step(model, opt, *batches[-1])
        ops.parent.mkdir(parents=True, exist_ok=True)
        ops.write_text(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40) + "\n")
    return statistics.median(times), float(np.mean(flops))


@contextlib.contextmanager
def torchvision_poolers():
    """Models built inside use torchvision's own RoI poolers (single-threaded CPU backward): the
    behaviour before :mod:`methods.core.roialign`, for a before/after row in the same run."""
    import torchvision

    import methods.core.model as model_mod

    saved = model_mod.MultiScaleRoIAlign
    model_mod.MultiScaleRoIAlign = torchvision.ops.MultiScaleRoIAlign
    try:
        yield
    finally:
        model_mod.MultiScaleRoIAlign = saved


class _Clock:
    """``after_step`` hook recording the wall time of every iteration."""

    def __init__(self) -> None:
        self.stamps = [time.perf_counter()]

    def after_step(self, model, iteration) -> None:
        self.stamps.append(time.perf_counter())


def train_loop(profile, samples: list[TrainSample], warmup: int, iters: int, prefetch: bool = True) -> float:
    """Median seconds per iteration of the real training loop (augmentation on, no checkpoint writes);
    ``prefetch=False`` turns off the loop's background batch preparation (the behaviour before it)."""
    import methods.core.train as train_mod

    train_mod.PREFETCH = prefetch
    torch.manual_seed(0)
    model = build_model(profile)
    clock = _Clock()
    n = warmup + iters
    with tempfile.TemporaryDirectory() as tmp:
        p = profile.replace(checkpoint_every=10 ** 6)
        train(model, samples, p, seed=0, device="cpu", workdir=tmp, hook=clock, augment=Augment(),
              progress=False, iterations=n + 1, stop_after=n)
    dt = np.diff(clock.stamps)
    return float(np.median(dt[warmup:]))


def worker_loops(args) -> list[float]:
    """Median s/iteration of each of ``args.workers_row`` training loops run at the same time, one torch
    thread each (separate processes, as the local executor's CPU workers)."""
    import subprocess

    cmd = [sys.executable, __file__, "--profile", args.profile, "--threads", "1", "--warmup", str(args.warmup),
           "--iters", str(args.iters), "--worker-loop"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(args.workers_row)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker loop failed: {outs}")
    return [float(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("LOOP ")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu", help="training profile (default cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--gemm", type=int, default=2048, help="side of the sgemm probe (default 2048)")
    ap.add_argument("--no-prefetch-row", action="store_true",
                    help="also time the training loop with methods.core.train.PREFETCH off")
    ap.add_argument("--channels-last", action="store_true", help="also time the model step in channels_last")
    ap.add_argument("--torchvision-roi-align-row", action="store_true",
                    help="also time model step and loop with torchvision's single-threaded RoIAlign backward")
    ap.add_argument("--workers-row", type=int, default=0, metavar="N",
                    help="also run the training loop in N concurrent single-thread processes (what "
                         "`benchmark run --workers N` does on CPU) and report the machine's throughput")
    ap.add_argument("--worker-loop", action="store_true", help=argparse.SUPPRESS)  # one such process
    ap.add_argument("--ops", type=Path, default=None, help="write the torch.profiler op table here")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = PROFILES[args.profile]
    samples = patches(4)
    if args.worker_loop:
        print(f"LOOP {train_loop(profile, samples, args.warmup, args.iters)}")
        return 0
    load0 = os.getloadavg()
    g = [sgemm_gflops(args.gemm)]
    step_s, flops = model_step(profile, samples, args.warmup, args.iters, args.ops)
    g.append(sgemm_gflops(args.gemm))
    loop_s = train_loop(profile, samples, args.warmup, args.iters)
    g.append(sgemm_gflops(args.gemm))
    rows = [("model step (forward + backward + SGD)", step_s, g[0], g[1]),
            ("training loop (methods.core.train.train)", loop_s, g[1], g[2])]
    if args.no_prefetch_row:
        off_s = train_loop(profile, samples, args.warmup, args.iters, prefetch=False)
        g.append(sgemm_gflops(args.gemm))
        rows.append(("training loop without background batch preparation (before)", off_s, g[-2], g[-1]))
    if args.torchvision_roi_align_row:
        with torchvision_poolers():
            tv_step, _ = model_step(profile, samples, args.warmup, args.iters, None)
            g.append(sgemm_gflops(args.gemm))
            tv_loop = train_loop(profile, samples, args.warmup, args.iters)
            g.append(sgemm_gflops(args.gemm))
        rows.append(("model step, torchvision RoIAlign backward (before)", tv_step, g[-3], g[-2]))
        rows.append(("training loop, torchvision RoIAlign backward (before)", tv_loop, g[-2], g[-1]))
    if args.workers_row:
        per_worker = worker_loops(args)
        g.append(sgemm_gflops(args.gemm))
        rows.append((f"training loop, {args.workers_row} single-thread processes at once (machine throughput: "
                     f"s/step = per-process {statistics.mean(per_worker):.3f} s / {args.workers_row})",
                     statistics.mean(per_worker) / args.workers_row, g[-2], g[-1]))
    if args.channels_last:
        cl_s, _ = model_step(profile, samples, args.warmup, args.iters, None, channels_last=True)
        g.append(sgemm_gflops(args.gemm))
        rows.append(("model step, channels_last model (experiment)", cl_s, g[-2], g[-1]))
    gemm = statistics.median(g)
    lines = [
        "# Training-step efficiency on CPU",
        "",
        f"- command: `python scripts/bench_step_efficiency.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
        f"load average at start {', '.join(f'{x:.2f}' for x in load0)}, at end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- profile `{args.profile}` (batch {profile.batch_size} x {profile.input_size} px); "
        f"FLOPs per step {flops / 1e9:.1f} GFLOP (forward + backward, torch.utils.flop_counter)",
        f"- sgemm ({args.gemm}^2 float32 torch.mm, same threads), measured before, between and after the "
        f"timed rows: {' / '.join(f'{x:.1f}' for x in g)} GFLOP/s (median {gemm:.1f}). On a loaded machine "
        f"the sgemm rate drifts, so each row is also divided by the mean of the two sgemm figures that "
        f"bracket it (last column)",
        f"- medians of {args.iters} steps after {args.warmup} warm-up",
        "",
        "| what | s/step | GFLOP/s achieved | efficiency (median sgemm) | efficiency (bracketing sgemm) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s, ga, gb in rows:
        rate = flops / s / 1e9
        lines.append(f"| {name} | {s:.3f} | {rate:.1f} | {100 * rate / gemm:.1f} % | {200 * rate / (ga + gb):.1f} % |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
