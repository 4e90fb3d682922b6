"""Time the README's first command as a new user meets it, and publish what it produced.

Runs the README's first ``python -m benchmark run ...`` command verbatim (the ``pip install -e . &&``
part is taken as done) in an empty working directory, with an empty cache (``NUCLEI_SSL_BENCH_CACHE``), as
on a fresh machine. It records the wall time, the children's CPU time and peak RSS, and the load average
before and after. Then it copies the run's report (Table 1, comparisons, results.csv, figures) into
``--out`` and writes ``--out/README.md``. With ``--readme`` it also rewrites the README's quick-start
table, between the ``<!-- quickstart:begin -->`` and ``<!-- quickstart:end -->`` markers, from that
run's ``results.csv``, so the README never quotes numbers that no run produced::

    python scripts/bench_first_run.py --out reports/quickstart --readme
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
COPY = ("table1.md", "table1.tex", "comparisons.md", "results.csv", "aji_distribution_synthetic.png",
        "qualitative_synthetic_1-8.png")


def readme_command() -> str:
    """The README's first command without its install step."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1)
    return first.split("&&", 1)[1].strip() if "&&" in first else first.strip()


def run(command: str, workdir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), NUCLEI_SSL_BENCH_CACHE=str(workdir / "cache"))
    argv = shlex.split(command)
    argv[0] = sys.executable if argv[0] == "python" else argv[0]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    lines = []  # every output line with the seconds since launch, to see where the time went
    with subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        for line in proc.stdout:
            lines.append(f"[{time.perf_counter() - t0:7.1f} s] {line.rstrip()}")
    wall = time.perf_counter() - t0
    log = "\n".join(lines) + "\n"
    if proc.returncode != 0:
        raise SystemExit(f"the first command failed (exit {proc.returncode}):\n{log[-4000:]}")
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "user": use.ru_utime, "sys": use.ru_stime, "rss_gib": use.ru_maxrss / 2 ** 20,
            "load0": load0, "load1": os.getloadavg(), "log": log}


def aji_table(results: pd.DataFrame) -> str:
    rows = results[results["dataset"] == "synthetic"].pivot_table(index="ratio", columns="method", values="aji")
    methods = [m for m in ("maskrcnn", "bass") if m in rows.columns]
    lines = ["| ratio | " + " | ".join(f"`{m}` AJI" for m in methods) + " |",
             "|---|" + "---:|" * len(methods)]
    for ratio in ("1/8", "1/4", "1/2"):
        if ratio in rows.index:
            lines.append(f"| {ratio} | " + " | ".join(f"{100 * rows.loc[ratio, m]:.2f} %" for m in methods) + " |")
    return "\n".join(lines)


def summary(command: str, m: dict, table: str, commit: str) -> str:
    def load(xs):
        return ", ".join(f"{x:.2f}" for x in xs)

    minutes, seconds = divmod(round(m["wall"]), 60)
    return "\n".join([
        f"Command (the README's first, in an empty directory with an empty cache; commit `{commit}`, "
        f"{os.cpu_count()} CPU cores):", "", f"    {command}", "",
        f"**{minutes} min {seconds:02d} s** wall ({m['user']:.0f} s user + {m['sys']:.0f} s system CPU, "
        f"peak RSS of one process {m['rss_gib']:.1f} GiB); load average before {load(m['load0'])}, after "
        f"{load(m['load1'])}. Patch AJI on the test split, profile `quick`, seed 0:", "", table, ""])


def write_readme_block(block: str) -> None:
    path = REPO / "README.md"
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block to rewrite")
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + BEGIN + "\n" + block + END + rest.split(END, 1)[1], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the copied report and README.md")
    ap.add_argument("--readme", action="store_true", help="also rewrite the README's quick-start table")
    args = ap.parse_args(argv)
    command = readme_command()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
        m = run(command, Path(tmp))
        reports = Path(tmp) / "results" / "reports"
        args.out.mkdir(parents=True, exist_ok=True)
        for name in COPY:
            if (reports / name).is_file():
                shutil.copy2(reports / name, args.out / name)
        results = pd.read_csv(reports / "results.csv")
    (args.out / "run.log").write_text(m["log"][-20000:], encoding="utf-8")
    text = summary(command, m, aji_table(results), commit)
    (args.out / "README.md").write_text(
        "# The first run (`scripts/bench_first_run.py`)\n\n" + text + "\nTable 1 of this run: "
        "[table1.md](table1.md) ([table1.tex](table1.tex), [comparisons.md](comparisons.md), every number in "
        "[results.csv](results.csv)); the run's log (tail): [run.log](run.log).\n", encoding="utf-8")
    if args.readme:
        write_readme_block(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
