"""Command line: ``python -m benchmark {list,run,report,splits,check-method}``.

Every subcommand has ``--help``. Exit codes: 0 success, 1 some cell/check failed, 2 bad usage (unknown
names, missing data, bad options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _split_csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_assignments(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r}: expected KEY=VALUE, e.g. bass.alpha=0.3")
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="nuclei-ssl-bench: semi-supervised nuclei instance segmentation benchmark.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # list ------------------------------------------------------------------------------
    pl = sub.add_parser("list", help="list methods, datasets and profiles")
    pl.add_argument("--data-root", type=Path, default=None, help="folder holding one sub-folder per dataset")
    pl.add_argument("-v", "--verbose", action="store_true", help="also show distributions and targets")
    pl.add_argument("--json", action="store_true", help="machine-readable output")

    # run -------------------------------------------------------------------------------
    pr = sub.add_parser("run", help="train and evaluate a grid of methods × datasets × ratios × seeds")
    pr.add_argument("--methods", required=True, help="comma-separated method names (see `list`)")
    pr.add_argument("--datasets", required=True,
                    help="comma-separated dataset names, 'folder:PATH', or 'all' (monuseg,cryonuseg,digestpath)")
    pr.add_argument("--ratios", default="1/8,1/4,1/2", help="labeled ratios (default: 1/8,1/4,1/2)")
    pr.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    pr.add_argument("--profile", default="smoke", help="training profile: smoke, cpu, paper (default: smoke)")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    pr.add_argument("--data-root", type=Path, default=None,
                    help="folder holding one sub-folder per dataset (default: $NUCLEI_SSL_BENCH_DATA, "
                         "then ~/.cache/nuclei-ssl-bench/data)")
    pr.add_argument("--out", type=Path, default=Path("results"), help="result store (default: ./results)")
    pr.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                    help="override an option: METHOD.option=value (e.g. bass.alpha=0.3) or "
                         "profile.field=value (e.g. profile.iterations=500); repeatable")
    pr.add_argument("--sweep", dest="sweeps", action="append", metavar="KEY=V1,V2,...",
                    help="one cell per value, e.g. --sweep bass.alpha=0.1,0.3,0.5,0.7; repeatable")
    pr.add_argument("--dry-run", action="store_true", help="print the cells and which are done; run nothing")
    pr.add_argument("--force", action="store_true", help="recompute finished cells")
    pr.add_argument("--skip-missing", action="store_true",
                    help="with some datasets missing, run the present ones (default: stop)")
    pr.add_argument("--quiet", action="store_true", help="no progress bars")
    pr.add_argument("--report", action="store_true", help="build the report after the grid")

    # report ----------------------------------------------------------------------------
    pp = sub.add_parser("report", help="build tables and figures from a result store (runs nothing)")
    pp.add_argument("--results", type=Path, default=Path("results"), help="result store (default: ./results)")
    pp.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: ./reports)")
    pp.add_argument("--protocol", choices=["patch", "image"], default="patch",
                    help="patch: per 256×256 test patch (paper); image: stitched whole images")
    pp.add_argument("--aggregation", choices=["mean", "aggregated"], default="mean",
                    help="mean: per-image mean (default); aggregated: Σ intersections / Σ unions")
    pp.add_argument("--reference", default=None,
                    help="reference method of the paired tests (default: bass if present, else the best)")
    pp.add_argument("--test", choices=["wilcoxon", "ttest"], default="wilcoxon", help="paired test on AJI")
    pp.add_argument("--correction", choices=["none", "holm", "bh"], default="none",
                    help="multiple-comparison correction across the table")
    pp.add_argument("--methods", default=None, help="only these methods (comma-separated)")
    pp.add_argument("--no-figures", action="store_true", help="tables only")

    # splits ----------------------------------------------------------------------------
    ps = sub.add_parser("splits", help="make or show split manifests")
    ssub = ps.add_subparsers(dest="splits_command", metavar="ACTION")
    ssub.required = True
    psm = ssub.add_parser("make", help="write splits/<dataset>.json from the files on disk")
    psm.add_argument("--dataset", required=True)
    psm.add_argument("--data-root", type=Path, default=None)
    psm.add_argument("--recipe", default=None, help="split recipe (default: the dataset's default)")
    psm.add_argument("--seed", type=int, default=0)
    psm.add_argument("--out", type=Path, default=None, help="output file (default: splits/<dataset>.json)")
    psm.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    pss = ssub.add_parser("show", help="print the Table 5 counts of a manifest")
    pss.add_argument("--dataset", required=True)
    pss.add_argument("--data-root", type=Path, default=None)
    pss.add_argument("--format", choices=["md", "json"], default="md")

    _add_check_method_parser(sub)
    return p


def _add_check_method_parser(sub) -> None:
    pc = sub.add_parser("check-method", help="run the conformance kit on a method (for plugin authors)")
    pc.add_argument("method")
    pc.add_argument("--device", default="cpu")
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--no-determinism", action="store_true", help="skip the second fit")
    pc.add_argument("--check", dest="checks", action="append", metavar="NAME",
                    help="run only this check (repeatable); names: benchmark.check.check_names()")
    pc.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                    help="method option, e.g. --set alpha=0.3")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from benchmark.data.base import DatasetError
    from benchmark.registry import RegistryError

    try:
        return {
            "list": cmd_list,
            "run": cmd_run,
            "report": cmd_report,
            "splits": cmd_splits,
            "check-method": cmd_check,
        }[args.command](args)
    except (RegistryError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; re-run the same command to resume.", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------ commands
def cmd_list(args) -> int:
    from tabulate import tabulate

    from benchmark.catalog import DATASETS
    from benchmark.data import open_dataset
    from benchmark.profiles import PROFILES
    from benchmark.runner import describe_methods

    methods = describe_methods()
    datasets = []
    for name, entry, cls in DATASETS.describe():
        if cls is None:
            datasets.append({"name": name, "description": f"BROKEN: {entry.error}", "present": "?",
                             "location": "", "dist": entry.dist})
            continue
        ds = open_dataset(name, args.data_root)
        present = ds.is_present()
        datasets.append({
            "name": name,
            "description": cls.description,
            "present": "yes" if present else "no",
            "location": "(generated)" if name == "synthetic" else str(ds.root),
            "dist": entry.dist,
        })
    profiles = [
        {"name": p.name, "backbone": p.backbone, "input": p.input_size, "iterations": p.iterations,
         "batch": p.batch_size, "lr": p.lr, "digest": p.digest()}
        for p in PROFILES.values()
    ]
    if args.json:
        print(json.dumps({"methods": methods, "datasets": datasets, "profiles": profiles}, indent=2))
        return EXIT_OK
    mcols = ["name", "supervision", "description"] + (["dist"] if args.verbose else [])
    print("Methods")
    print(tabulate([[m.get(c) for c in mcols] for m in methods], headers=mcols))
    approx = [m for m in methods if m.get("approximation")]
    if approx:
        print("\nApproximations")
        for m in approx:
            print(f"  {m['name']}: {m['approximation']}")
    dcols = ["name", "present", "location", "description"] + (["dist"] if args.verbose else [])
    print("\nDatasets (also: folder:PATH for images/ + labels/ folders)")
    print(tabulate([[d.get(c) for c in dcols] for d in datasets], headers=dcols))
    print("\nProfiles")
    print(tabulate([list(p.values()) for p in profiles], headers=list(profiles[0])))
    return EXIT_OK


def cmd_run(args) -> int:
    from benchmark.devices import resolve_device
    from benchmark.profiles import get_profile
    from benchmark.runner import GridConfig, GridError, Runner, dry_run_rows

    overrides = _parse_assignments(args.overrides, "--set")
    sweeps = {k: _split_csv(v) for k, v in _parse_assignments(args.sweeps, "--sweep").items()}
    profile_over = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("profile.")}
    overrides = {k: v for k, v in overrides.items() if not k.startswith("profile.")}
    if any(k.startswith("profile.") for k in sweeps):
        raise ValueError("--sweep over profile fields is not supported; run once per profile value")
    try:
        profile = get_profile(args.profile)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None
    profile = profile.replace(**profile_over) if profile_over else profile
    try:
        seeds = [int(s) for s in _split_csv(args.seeds)]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    cfg = GridConfig(
        methods=_split_csv(args.methods),
        datasets=_split_csv(args.datasets),
        ratios=_split_csv(args.ratios),
        seeds=seeds,
        profile=profile,
        device=resolve_device(args.device),
        out=args.out,
        data_root=args.data_root,
        overrides=overrides,
        sweeps=sweeps,
        force=args.force,
        skip_missing=args.skip_missing,
        progress=not args.quiet,
    )
    runner = Runner(cfg)
    try:
        if args.dry_run:
            rows = dry_run_rows(runner)
            from tabulate import tabulate

            print(tabulate([[r["status"], r["cell"], r["dir"]] for r in rows],
                           headers=["status", "cell", "directory"]))
            return EXIT_OK
        failed = runner.run()
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.report:
        from benchmark.reports import build_report

        build_report(results=args.out, out=Path("reports"))
    if failed:
        print(f"{failed} cell(s) failed; `python -m benchmark report` shows them.", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_report(args) -> int:
    from benchmark.reports import build_report

    written = build_report(
        results=args.results,
        out=args.out,
        protocol=args.protocol,
        aggregation=args.aggregation,
        reference=args.reference,
        test=args.test,
        correction=None if args.correction == "none" else args.correction,
        methods=_split_csv(args.methods) if args.methods else None,
        figures=not args.no_figures,
    )
    for path in written:
        print(path)
    return EXIT_OK


def cmd_splits(args) -> int:
    from benchmark.data import SPLITS_DIR, dataset_key, manifest_for, open_dataset
    from benchmark.data import splits as sp

    ds = open_dataset(args.dataset, args.data_root)
    if args.splits_command == "make":
        out = args.out or SPLITS_DIR / f"{dataset_key(args.dataset)}.json"
        if out.exists() and not args.force:
            raise ValueError(f"{out} exists; pass --force to overwrite it (committed manifests are the "
                             f"published splits: change them only on purpose)")
        kwargs = {"seed": args.seed}
        if args.recipe:
            kwargs["recipe"] = args.recipe
        manifest = sp.make_manifest(ds, **kwargs)
        sp.save_manifest(manifest, out)
        print(f"wrote {out}")
        print(sp.format_counts(manifest, fmt="md"))
        return EXIT_OK
    manifest = manifest_for(ds, args.dataset, verify=False)
    print(sp.format_counts(manifest, fmt=args.format))
    return EXIT_OK


def cmd_check(args) -> int:
    from benchmark.check import check_method

    options = _parse_assignments(args.overrides, "--set")
    report = check_method(
        args.method,
        options=options,
        seed=args.seed,
        device=args.device,
        determinism=not args.no_determinism,
        echo=lambda m: print(m, file=sys.stderr, flush=True),
        checks=args.checks,
    )
    print(report.format())
    return EXIT_OK if report.passed else EXIT_FAILED
