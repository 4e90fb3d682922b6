"""Time benchmark.metrics against a straightforward HoVer-Net-style per-instance loop.

Generates realistic synthetic instance maps (random elliptical nuclei; the prediction is a perturbed
copy with misses, splits, merges and false positives, relabelled with random gappy ids), checks that
the fast metrics agree with the loop implementation to 1e-6 and prints a Markdown report.

Single core: BLAS/OpenMP thread counts are set to 1 before numpy is imported and the process is
pinned to one CPU where the OS allows it.

Usage::

    python scripts/bench_metrics.py                 # 1000x1000, ~500 nuclei, seeds 0 1 2
    python scripts/bench_metrics.py --size 512 --nuclei 150 --seeds 0
    python scripts/bench_metrics.py > reports/bench_metrics.md
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.metrics import aji, aji_plus, dice, instance_counts, pq, scores_from_counts  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# Synthetic maps
# ---------------------------------------------------------------------------------------------------


def _paint_ellipse(img, value, cy, cx, a, b, theta, half=0):
    """Paint an ellipse (semi-axes a >= b, angle theta); ``half`` = +1/-1 keeps one side of the minor axis."""
    h, w = img.shape
    r = int(np.ceil(a)) + 1
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    u = dy * np.sin(theta) + dx * np.cos(theta)
    v = dy * np.cos(theta) - dx * np.sin(theta)
    inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if half:
        inside &= (u * half) >= 0
    img[y0:y1, x0:x1][inside] = value


def make_maps(seed: int, size: int = 1000, n_nuclei: int = 500):
    """Return ``(true, pred)`` int32 maps of shape ``(size, size)``."""
    rng = np.random.default_rng(seed)
    cy = rng.uniform(0, size, n_nuclei)
    cx = rng.uniform(0, size, n_nuclei)
    a = rng.uniform(5.0, 13.0, n_nuclei)
    b = a * rng.uniform(0.6, 1.0, n_nuclei)
    th = rng.uniform(0, np.pi, n_nuclei)
    true = np.zeros((size, size), np.int32)
    for k in range(n_nuclei):
        _paint_ellipse(true, k + 1, cy[k], cx[k], a[k], b[k], th[k])

    # prediction: perturbed nuclei; 5 % missed, 6 % split in two, 6 % merged with a touching neighbour
    pred = np.zeros_like(true)
    pid = np.arange(1, n_nuclei + 1)
    tree = cKDTree(np.c_[cy, cx])
    dist, nn = tree.query(np.c_[cy, cx], k=2)
    for k in range(n_nuclei):
        j = nn[k, 1]
        if j < k and dist[k, 1] < a[k] + a[j] + 2 and rng.random() < 0.06:
            pid[k] = pid[j]
    next_id = n_nuclei + 1
    for k in range(n_nuclei):
        if rng.random() < 0.05:
            continue
        py, px = cy[k] + rng.normal(0, 1.2), cx[k] + rng.normal(0, 1.2)
        pa, pb = a[k] * rng.uniform(0.85, 1.15), b[k] * rng.uniform(0.85, 1.15)
        pt = th[k] + rng.normal(0, 0.15)
        if rng.random() < 0.06:
            _paint_ellipse(pred, pid[k], py, px, pa, pb, pt, half=1)
            _paint_ellipse(pred, next_id, py, px, pa, pb, pt, half=-1)
            next_id += 1
        else:
            _paint_ellipse(pred, pid[k], py, px, pa, pb, pt)
    for _ in range(n_nuclei // 20):  # false positives
        s = rng.uniform(4.0, 9.0)
        _paint_ellipse(pred, next_id, *rng.uniform(0, size, 2), s, s * 0.8, rng.uniform(0, np.pi))
        next_id += 1
    # random gappy relabelling of the prediction
    new_ids = np.zeros(next_id, np.int32)
    new_ids[1:] = rng.choice(np.arange(1, 50 * next_id), size=next_id - 1, replace=False)
    pred = new_ids[pred]
    return true, pred


# ---------------------------------------------------------------------------------------------------
# Reference: HoVer-Net metrics/stats_utils.py style, one boolean mask per instance
# ---------------------------------------------------------------------------------------------------


def _masks(x):
    ids = [i for i in np.unique(x) if i != 0]
    return ids, {i: (x == i) for i in ids}


def _pairwise(true, pred):
    t_ids, t_masks = _masks(true)
    p_ids, p_masks = _masks(pred)
    p_index = {p: j for j, p in enumerate(p_ids)}
    inter = np.zeros((len(t_ids), len(p_ids)), np.float64)
    union = np.zeros((len(t_ids), len(p_ids)), np.float64)
    for i, t in enumerate(t_ids):
        t_mask = t_masks[t]
        for p in np.unique(pred[t_mask]):
            if p == 0:
                continue
            p_mask = p_masks[p]
            total = t_mask.sum() + p_mask.sum()
            it = (t_mask & p_mask).sum()
            inter[i, p_index[p]] = it
            union[i, p_index[p]] = total - it
    t_area = np.array([t_masks[t].sum() for t in t_ids], np.float64)
    p_area = np.array([p_masks[p].sum() for p in p_ids], np.float64)
    return inter, union, t_area, p_area


def _aji_from(inter, union, t_area, p_area, paired_true, paired_pred):
    overall_inter = inter[paired_true, paired_pred].sum()
    overall_union = union[paired_true, paired_pred].sum()
    t_un = np.setdiff1d(np.arange(len(t_area)), paired_true)
    p_un = np.setdiff1d(np.arange(len(p_area)), paired_pred)
    overall_union += t_area[t_un].sum() + p_area[p_un].sum()
    return 1.0 if overall_union == 0 else overall_inter / overall_union


def ref_dice(true, pred):
    t, p = true > 0, pred > 0
    denom = t.sum() + p.sum()
    return 1.0 if denom == 0 else 2.0 * (t & p).sum() / denom


def ref_aji(true, pred):
    inter, union, t_area, p_area = _pairwise(true, pred)
    if inter.size == 0:
        return _aji_from(inter, union, t_area, p_area, np.zeros(0, int), np.zeros(0, int))
    iou = inter / (union + 1.0e-6)
    paired_pred = np.argmax(iou, axis=1)
    paired_true = np.nonzero(np.max(iou, axis=1) > 0.0)[0]
    return _aji_from(inter, union, t_area, p_area, paired_true, paired_pred[paired_true])


def ref_aji_plus(true, pred):
    inter, union, t_area, p_area = _pairwise(true, pred)
    iou = inter / (union + 1.0e-6)
    paired_true, paired_pred = linear_sum_assignment(-iou)
    keep = iou[paired_true, paired_pred] > 0.0
    return _aji_from(inter, union, t_area, p_area, paired_true[keep], paired_pred[keep])


def ref_pq(true, pred, match_iou=0.5):
    inter, union, t_area, p_area = _pairwise(true, pred)
    n_t, n_p = inter.shape
    if n_t == 0 and n_p == 0:
        return 1.0, 1.0, 1.0
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    if match_iou >= 0.5:
        paired_iou = iou[iou > match_iou]
    else:
        r, c = linear_sum_assignment(-iou)
        paired_iou = iou[r, c]
        paired_iou = paired_iou[paired_iou > match_iou]
    tp = len(paired_iou)
    fp, fn = n_p - tp, n_t - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = paired_iou.sum() / (tp + 1.0e-6)
    return dq, sq, dq * sq


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------


def _time(fn, repeat):
    """(median seconds, best seconds, last result) over ``repeat`` calls."""
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), out


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--nuclei", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeat", type=int, default=30, help="timing repeats of the fast path (median)")
    ap.add_argument("--ref-repeat", type=int, default=1, help="timing repeats of the loop reference")
    args = ap.parse_args(argv)

    pinned = False
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
            pinned = True
        except OSError:
            pass

    names = ("dice", "aji", "aji_plus", "pq")
    fast = {
        "dice": lambda t, p: dice(t, p),
        "aji": lambda t, p: aji(t, p),
        "aji_plus": lambda t, p: aji_plus(t, p),
        "pq": lambda t, p: pq(t, p).pq,
    }
    slow = {
        "dice": ref_dice,
        "aji": ref_aji,
        "aji_plus": ref_aji_plus,
        "pq": lambda t, p: ref_pq(t, p)[2],
    }
    rows = []
    max_diff = 0.0
    all_ok = True
    for seed in args.seeds:
        true, pred = make_maps(seed, args.size, args.nuclei)
        n_t = len(np.unique(true)) - 1
        n_p = len(np.unique(pred)) - 1
        fg = float((true > 0).mean())
        per = {}
        for name in names:
            f_s, f_best, f_val = _time(lambda: fast[name](true, pred), args.repeat)
            r_s, _, r_val = _time(lambda: slow[name](true, pred), args.ref_repeat)
            diff = abs(float(f_val) - float(r_val))
            max_diff = max(max_diff, diff)
            all_ok &= diff <= 1e-6
            per[name] = (f_val, r_val, diff, f_s, f_best, r_s)
        c_s, c_best, counts = _time(lambda: instance_counts(true, pred), args.repeat)
        s = scores_from_counts(counts)
        r_dq, r_sq, r_pq = ref_pq(true, pred)
        for key, ref in (("dq", r_dq), ("sq", r_sq), ("pq", r_pq), ("dice", per["dice"][1]),
                         ("aji", per["aji"][1]), ("aji_plus", per["aji_plus"][1])):
            d = abs(s[key] - ref)
            max_diff = max(max_diff, d)
            all_ok &= d <= 1e-6
        rows.append((seed, n_t, n_p, fg, per, c_s, c_best))

    print("# Metric benchmark: `benchmark.metrics` vs per-instance loop (HoVer-Net style)")
    print()
    print(f"- command: `OMP_NUM_THREADS=1 python scripts/bench_metrics.py "
          f"--size {args.size} --nuclei {args.nuclei} --seeds {' '.join(map(str, args.seeds))}`")
    print(f"- CPU: {_cpu_name()}; pinned to one core: {'yes' if pinned else 'no'}; "
          f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    if hasattr(os, "getloadavg"):
        print(f"- machine load average (1 min) at the end of the run: {os.getloadavg()[0]:.2f} "
              f"on {os.cpu_count()} logical CPUs (other jobs inflate the times)")
    print(f"- maps: {args.size}×{args.size}, {args.nuclei} random elliptical nuclei (semi-axes 5-13 px); "
          "pred = perturbed copy with ~5 % misses, ~6 % splits, merges of touching neighbours, "
          f"{args.nuclei // 20} false positives, random gappy pred ids")
    print(f"- fast path: median (and best) of {args.repeat} runs; reference: median of {args.ref_repeat} "
          "run(s); times in ms; speed-ups use medians")
    print(f"- agreement: max |fast − reference| over all metrics and seeds = {max_diff:.2e} "
          f"({'OK, ≤ 1e-6' if all_ok else 'FAILED, > 1e-6'})")
    print()
    for seed, n_t, n_p, fg, per, c_s, c_best in rows:
        print(f"## seed {seed}: {n_t} true / {n_p} predicted instances, foreground {100 * fg:.1f} %")
        print()
        print("| metric | value | reference value | abs diff | fast ms median (best) | loop ms | speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        tot_f = tot_b = tot_r = 0.0
        for name in names:
            f_val, r_val, diff, f_s, f_best, r_s = per[name]
            tot_f += f_s
            tot_b += f_best
            tot_r += r_s
            print(f"| `{name}` | {float(f_val):.6f} | {float(r_val):.6f} | {diff:.1e} | "
                  f"{1e3 * f_s:.2f} ({1e3 * f_best:.2f}) | {1e3 * r_s:.0f} | {r_s / f_s:.0f}× |")
        print(f"| **all four wrappers** | | | | **{1e3 * tot_f:.2f}** ({1e3 * tot_b:.2f}) | **{1e3 * tot_r:.0f}** | "
              f"**{tot_r / tot_f:.0f}×** |")
        print(f"| `instance_counts` (all metrics, one pass) | | | | {1e3 * c_s:.2f} ({1e3 * c_best:.2f}) | "
              f"{1e3 * tot_r:.0f} | {tot_r / c_s:.0f}× |")
        print()
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
