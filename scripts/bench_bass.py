"""Time one training iteration of the BASS student against plain Mask R-CNN on the same batches.

For each profile (default ``smoke`` and ``cpu``) it builds, from the same seed, the plain model
(:func:`methods.core.model.build_model`, the teacher / ``maskrcnn`` method) and the student of each requested
BASS variant (``bass`` = NMH + LRD + CRC by default), feeds all of them the *same* batches of synthetic
256x256 patches (~15-25 nuclei) and measures forward + backward + SGD step. Iterations are interleaved
(plain, bass, plain, bass, ...) so that load from other processes hits every model alike; the table gives
the median over ``--iters`` timed iterations after ``--warmup`` untimed ones and the ratio of medians.
``--profile-ops`` additionally prints the top operators of one BASS step (torch profiler). The FLOP
columns count one forward + backward of each model on the same batch (``torch.utils.flop_counter``): the
ratio that the wall-time ratio would reach if every FLOP cost the same.

Example (what produced the table of reports/bench_bass.md; the CPU-time ratio with one thread is the
robust number on a loaded machine)::

    PYTHONPATH=. python scripts/bench_bass.py --profiles smoke,cpu --threads 1 --warmup 2 --iters 7 \
        --out reports/bench_bass.md
"""

from __future__ import annotations

import argparse
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
from methods.bass.method import (
    BassCodeMethod,
    BassLRDMethod,
    BassMethod,
    BassNMHLRDMethod,
    BassNMHMethod,
)
from methods.core.model import build_model, resolve_backbone_init
from methods.core.targets import TrainSample, sample_to_target

VARIANTS = {c.name: c for c in (BassMethod, BassNMHMethod, BassLRDMethod, BassNMHLRDMethod, BassCodeMethod)}


def _patches(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    ds = SyntheticDataset(n_images=max(1, (n + 3) // 4), size=512, seed=0)
    out = []
    for name in ds.image_names():
        r = ds.load(name)
        for y in (0, 256):
            for x in (0, 256):
                out.append((r.image[y:y + 256, x:x + 256].copy(), r.label[y:y + 256, x:x + 256].copy()))
    return out[:n]


def parse_variant(spec: str) -> tuple[type, dict[str, str]]:
    """``"bass"`` or ``"bass:crc_max_rois=16;alpha=0.3"`` -> (method class, options)."""
    name, _, rest = spec.partition(":")
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    opts = dict(kv.split("=", 1) for kv in rest.split(";") if kv)
    return VARIANTS[name], opts


def _model(profile, variant: str | None):
    torch.manual_seed(0)
    if variant is None:
        return build_model(profile)
    norm = resolve_backbone_init(profile)[0]
    cls, opts = parse_variant(variant)
    method = cls(**opts)
    return method.prepare_model(build_model(profile, mask_branch=method.build_branch(profile, norm)))


def bench_profile(profile, variants: list[str], device: str, warmup: int, iters: int, profile_ops: bool) -> dict:
    dev = torch.device(device)
    names = ["maskrcnn"] + variants
    models = {n: _model(profile, None if n == "maskrcnn" else n).to(dev).train() for n in names}
    opts = {n: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)
            for n, m in models.items()}
    patches = _patches(8)
    bs = profile.batch_size
    batches = []
    for k in range(warmup + iters):
        chunk = [patches[(k * bs + j) % len(patches)] for j in range(bs)]
        imgs, tgts = zip(*[sample_to_target(TrainSample(im, lab)) for im, lab in chunk])
        batches.append(([i.to(dev) for i in imgs], [{kk: v.to(dev) for kk, v in t.items()} for t in tgts]))
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    pos_rois: dict[str, list[int]] = {n: [] for n in names}
    for k, (imgs, tgts) in enumerate(batches):
        for n in names:
            torch.manual_seed(1000 + k)  # identical proposal sampling for every model
            m, opt = models[n], opts[n]
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t, c = time.perf_counter(), time.process_time()
            losses = m(imgs, tgts)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if k >= warmup:
                times[n].append(time.perf_counter() - t)
                cpu[n].append(time.process_time() - c)
                stats = getattr(m.roi_heads.mask_branch, "last_crc_stats", None)
                if stats:
                    pos_rois[n].append(int(stats.get("rois", 0)))
    flops = {}
    for n in names:  # FLOPs of one step on the last batch (forward + backward), same RoI sampling seed
        from torch.utils.flop_counter import FlopCounterMode

        torch.manual_seed(1000 + len(batches) - 1)
        counter = FlopCounterMode(display=False)
        with counter:
            sum(models[n](*batches[-1]).values()).backward()
        models[n].zero_grad(set_to_none=True)
        flops[n] = counter.get_total_flops()
    ops = None
    if profile_ops and variants:
        from torch.profiler import ProfilerActivity, profile as tprofile

        m, opt = models[variants[0]], opts[variants[0]]
        imgs, tgts = batches[-1]
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            losses = m(imgs, tgts)
            sum(losses.values()).backward()
        ops = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    med = {n: statistics.median(v) for n, v in times.items()}
    cmed = {n: statistics.median(v) for n, v in cpu.items()}
    return {
        "median": med,
        "ratio": {n: med[n] / med["maskrcnn"] for n in variants},
        "cpu_median": cmed,
        "cpu_ratio": {n: cmed[n] / cmed["maskrcnn"] for n in variants},
        "all": times,
        "crc_rois": {n: (statistics.median(v) if v else None) for n, v in pos_rois.items()},
        "flops": flops,
        "ops": ops,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="smoke,cpu", help="comma-separated training profiles")
    ap.add_argument("--variants", default="bass,bass:crc_max_rois=16,bass-nmh-lrd,bass-code",
                    help="BASS variants to time, NAME or NAME:opt=value;opt=value")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile-ops", action="store_true", help="print the top operators of one BASS step")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        parse_variant(v)
    lines = [
        "# BASS student: training-iteration time vs plain Mask R-CNN",
        "",
        f"`PYTHONPATH=. python scripts/bench_bass.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip(),
        "",
        f"Machine: {platform.machine()}, {platform.processor() or platform.system()}, torch {torch.__version__}, "
        f"{args.threads} threads, device {args.device}. Median of {args.iters} interleaved iterations after "
        f"{args.warmup} warm-ups (forward + backward + SGD step, batch = profile.batch_size synthetic 256x256 "
        f"patches, identical batches and RoI sampling seeds for every model). Wall = elapsed time; CPU = "
        f"process CPU time (all threads), less sensitive to other processes competing for the cores.",
        "",
        "| profile | model | wall s/iter (median) | wall ratio | CPU s/iter (median) | CPU ratio | GFLOP/step | "
        "FLOP ratio | positive RoIs in CRC (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    extra = []
    for pname in args.profiles.split(","):
        profile = PROFILES[pname]
        res = bench_profile(profile, variants, args.device, args.warmup, args.iters, args.profile_ops)
        for n, med in res["median"].items():
            ratio = "1.00" if n == "maskrcnn" else f"{res['ratio'][n]:.2f}"
            cratio = "1.00" if n == "maskrcnn" else f"{res['cpu_ratio'][n]:.2f}"
            rois = res["crc_rois"].get(n)
            fl, fl0 = res["flops"][n], res["flops"]["maskrcnn"]
            lines.append(f"| {pname} | {n} | {med:.3f} | {ratio} | {res['cpu_median'][n]:.3f} | {cratio} | "
                         f"{fl / 1e9:.1f} | {fl / fl0:.2f} | {rois if rois is not None else '-'} |")
        print("\n".join(lines[-len(res['median']):]), flush=True)
        if res["ops"]:
            extra += ["", f"Top operators of one `{variants[0]}` step ({pname}):", "", "```", res["ops"], "```"]
    text = "\n".join(lines + extra) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
