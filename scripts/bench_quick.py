"""Candidate ``quick`` profiles for the first run: wall time and *validation* AJI per method and ratio.

Each ``--variant NAME:KEY=VALUE;KEY=VALUE`` is a set of ``--set`` overrides on top of ``--profile``
(``profile.iterations=120`` or a method option such as ``bass.crc_max_rois=16``). Every variant runs the
real CLI (``benchmark run --methods maskrcnn,bass --datasets synthetic``) into its own fresh store, one
after the other in this process's run (noisy machines: compare variants from the same run). The table
reports the patch-level AJI on the **validation** split, which is what a profile may be chosen on;
test scores are left out on purpose (``benchmark report`` gives them for the variant that was chosen).

    python scripts/bench_quick.py --out reports/bench_quick.md \\
        --variant "committed:" --variant "short:profile.iterations=120"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name:a=1;b=2"`` -> ``("name", ["a=1", "b=2"])``."""
    name, _, rest = text.partition(":")
    return name, [kv.strip() for kv in rest.split(";") if kv.strip()]


def run_variant(args, sets: list[str], store: Path, env: dict) -> float:
    cmd = [sys.executable, "-m", "benchmark", "run", "--methods", args.methods, "--datasets", "synthetic",
           "--ratios", args.ratios, "--profile", args.profile, "--quiet", "--out", str(store)]
    for kv in sets:
        cmd += ["--set", kv]
    cmd += args.extra.split()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"variant failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def cells(store: Path) -> list[dict]:
    rows = []
    for done in sorted(store.glob("synthetic/*/*/*/done.json")):
        d = json.loads(done.read_text())
        val = pd.read_csv(done.parent / "metrics_val.csv")
        rows.append({"ratio": done.parts[-4].replace("-", "/"), "method": done.parts[-3],
                     "val AJI %": round(100 * float(val["aji"].mean()), 2),
                     "fit s": round(float(d.get("fit_seconds", float("nan"))), 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True, help="NAME:KEY=VALUE;KEY=VALUE (repeatable)")
    ap.add_argument("--methods", default="maskrcnn,bass")
    ap.add_argument("--ratios", default="1/8,1/4,1/2")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--out", type=Path, required=True, help="markdown table to write")
    ap.add_argument("--extra", default="", help="more `benchmark run` flags for every variant, e.g. '--workers 2'")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-quick-"))
    env = dict(os.environ, PYTHONPATH=str(REPO), NUCLEI_SSL_BENCH_CACHE=str(tmp / "cache"))
    rows, walls = [], []
    for text in args.variant:
        name, sets = parse_variant(text)
        load = os.getloadavg()[0]
        wall = run_variant(args, sets, tmp / name, env)
        walls.append(f"| {name} | `{'; '.join(sets) or '(none)'}` | {wall:.0f} | {load:.2f} |")
        rows += [{"variant": name, **row} for row in cells(tmp / name)]
        print(walls[-1], flush=True)
    table = pd.DataFrame(rows).pivot_table(index=["variant", "ratio"], columns="method",
                                           values=["val AJI %", "fit s"], sort=False).round(2)
    table.columns = [f"{method} {what}" for what, method in table.columns]
    text = "\n".join([
        f"# Candidate first-run profiles (`scripts/bench_quick.py`, base profile `{args.profile}`)", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores. Methods "
        f"`{args.methods}`, ratios {args.ratios}, seed 0, run flags `{args.extra or '(none)'}`. "
        "AJI is the mean patch AJI on the **validation** "
        "split (the split a profile may be chosen on); the test split is not looked at here.", "",
        "| variant | overrides | wall s (whole grid, incl. start-up) | load avg before |", "|---|---|---:|---:|",
        *walls, "", table.reset_index().to_markdown(index=False), ""])
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
