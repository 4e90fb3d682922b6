"""Cells per hour: ``inline`` against ``--executor local --cells-per-device 1, 2, 4``.

Each configuration trains the same grid (one method, ``--seeds 0..N-1`` on synthetic 1/8) into its own
fresh store, in one run of this script (noisy machines: compare the ratios, not absolute figures), and
writes a markdown table to ``--out``.

    # one GPU (what the docs ask for on an H200):
    python scripts/bench_executors.py --device cuda:0 --profile smoke --cells 8 --packing 1,2,4
    # CPU (toy profile, a quick check that the script works):
    python scripts/bench_executors.py --device cpu --toy --cells 4 --packing 1,2
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def grid_args(args, out: Path) -> list[str]:
    from benchmark.check import tiny_profile_args

    profile = tiny_profile_args() if args.toy else ["--profile", args.profile]
    seeds = ",".join(str(s) for s in range(args.cells))
    return ["run", "--methods", args.method, "--datasets", "synthetic", "--ratios", "1/8", "--seeds", seeds,
            "--quiet", "--out", str(out), *profile]


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "benchmark", *cmd], env=env, cwd=REPO, capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"benchmark failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda:N (the device every local worker shares)")
    p.add_argument("--method", default="maskrcnn")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--toy", action="store_true", help="the toy profile of the tests (seconds per cell on CPU)")
    p.add_argument("--cells", type=int, default=4, help="cells in the grid (one per seed)")
    p.add_argument("--packing", default="1,2,4", help="--cells-per-device values to measure")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the inline run (CPU)")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "bench_executors.md")
    args = p.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env.setdefault("NUCLEI_SSL_BENCH_CACHE", str(Path(tmp) / "cache"))
        base = timed(grid_args(args, Path(tmp) / "inline") + ["--device", args.device], env)
        rows.append(("inline", 1, base))
        for k in [int(x) for x in args.packing.split(",")]:
            extra = ["--executor", "local", "--devices", args.device, "--cells-per-device", str(k)]
            if args.device == "cpu":
                extra += ["--workers", str(k)]
            rows.append((f"local, --cells-per-device {k}", k, timed(grid_args(args, Path(tmp) / f"k{k}") + extra, env)))
    lines = [
        "# Executors: cells per hour",
        "",
        f"- command: `python scripts/bench_executors.py {' '.join(sys.argv[1:])}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, load average at start "
        f"{', '.join(f'{x:.1f}' for x in load_start)}, at end {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"device {args.device}",
        f"- grid: {args.cells} cells of `{args.method}` (seeds 0..{args.cells - 1}, synthetic 1/8), "
        f"profile {'toy (tests)' if args.toy else args.profile}; each configuration into a fresh store",
        "",
        "| executor | workers on the device | wall s | cells/hour | vs inline |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, k, secs in rows:
        lines.append(f"| {name} | {k} | {secs:.1f} | {3600 * args.cells / secs:.0f} | {base / secs:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
