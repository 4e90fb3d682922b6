"""Command line: ``python -m benchmark {list,run,report,verify,splits,check-method}``.

Every subcommand has ``--help``. Exit codes: 0 success, 1 some cell/check failed (or, for ``verify``,
a damaged cell), 2 bad usage (unknown names, missing or broken data, bad options, damaged store).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _split_csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _require_csv(text: str, option: str) -> list[str]:
    """Comma-separated values of ``option``; an empty list (``--seeds ,``) is an error, not 0 cells."""
    values = _split_csv(text)
    if not values:
        raise ValueError(f"{option} {text!r}: no values given (it would run 0 cells); pass at least one "
                         f"value, comma-separated")
    return values


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
    pl.add_argument("-v", "--verbose", action="store_true",
                    help="also show distributions and every method's options (type, default, allowed)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")

    _add_run_parser(sub)

    add_status_parser(sub)

    _add_report_parser(sub)
    _add_verify_parser(sub)
    _add_splits_parser(sub)

    _add_check_method_parser(sub)
    return p


def _add_run_parser(sub) -> None:
    pr = sub.add_parser("run", help="train and evaluate a grid of methods × datasets × ratios × seeds")
    pr.add_argument("--methods", required=True, help="comma-separated method names (see `list`)")
    pr.add_argument("--datasets", required=True,
                    help="comma-separated dataset names, 'folder:PATH', or 'all' (monuseg,cryonuseg,digestpath)")
    pr.add_argument("--ratios", default="1/8,1/4,1/2", help="labeled ratios (default: 1/8,1/4,1/2)")
    pr.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    pr.add_argument("--profile", default=None,
                    help="training profile: quick, smoke, cpu, paper (default: the datasets' own default "
                         "profile when they agree, e.g. quick for synthetic; otherwise smoke)")
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
    pr.add_argument("--report-dir", type=Path, default=None,
                    help="where --report writes (default: <out>/reports, beside the store); implies --report")
    pr.add_argument("--split-recipe", default="paper", choices=["paper", "image"],
                    help="labeled subset: paper (default; patches drawn from all training images, as the "
                         "paper's Table 5) or image (whole training images labeled, no overlap leakage)")
    add_executor_arguments(pr)


def _add_report_parser(sub) -> None:
    pp = sub.add_parser("report", help="build tables and figures from a result store (runs nothing)")
    pp.add_argument("--results", type=Path, default=Path("results"), help="result store (default: ./results)")
    pp.add_argument("--out", "--report-dir", dest="out", type=Path, default=None,
                    help="output folder (default: <results>/reports, beside the store)")
    pp.add_argument("--skip-damaged", action="store_true",
                    help="leave damaged cells out with a warning (default: refuse the whole report)")
    pp.add_argument("--protocol", choices=["patch", "image"], default="patch",
                    help="patch: per 256×256 test patch (paper); image: stitched whole images")
    pp.add_argument("--aggregation", choices=["mean", "aggregated"], default="mean",
                    help="mean: per-image mean (default); aggregated: Σ intersections / Σ unions")
    pp.add_argument("--reference", default=None,
                    help="reference method of the paired tests (default: bass if present, else the best)")
    pp.add_argument("--test", choices=["permutation", "wilcoxon-patch"], default="permutation",
                    help="paired test on AJI: permutation (default; image-level sign flips, the test image "
                         "as the unit) or wilcoxon-patch (the paper's per-patch signed-rank test)")
    pp.add_argument("--correction", choices=["none", "holm", "bh"], default="holm",
                    help="multiple-comparison correction over the comparisons of each dataset and ratio "
                         "(default: holm)")
    pp.add_argument("--select-on", choices=["val", "test"], default="val",
                    help="split whose AJI selects a sweep's value (default: val; test prints a warning)")
    pp.add_argument("--bootstrap", type=int, default=10000, metavar="N",
                    help="paired-bootstrap resamples of the ΔAJI intervals (default: 10000; seed fixed)")
    pp.add_argument("--profile", default=None, help="only the cells of this training profile")
    pp.add_argument("--split", default=None, metavar="HASH", help="only the cells of this split hash (prefix)")
    pp.add_argument("--split-recipe", default=None, choices=["paper", "image"],
                    help="only the cells of this labeled-subset recipe")
    pp.add_argument("--methods", default=None, help="only these methods (comma-separated)")
    pp.add_argument("--no-figures", action="store_true", help="tables only")


def _add_check_method_parser(sub) -> None:
    pc = sub.add_parser("check-method", help="run the conformance kit on a method (for plugin authors)")
    pc.add_argument("method")
    pc.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    pc.add_argument("--seed", type=int, default=0, help="seed of the toy fits (default: 0)")
    pc.add_argument("--no-determinism", action="store_true", help="skip the second fit")
    pc.add_argument("--check", dest="checks", action="append", metavar="NAME",
                    help="run only this check (repeatable); names: benchmark.check.check_names()")
    pc.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                    help="method option, e.g. --set alpha=0.3")


def _add_verify_parser(sub) -> None:
    pv = sub.add_parser("verify", help="check every done cell of a result store against its checksums")
    pv.add_argument("--out", type=Path, default=Path("results"), help="result store (default: ./results)")


def _add_splits_parser(sub) -> None:
    ps = sub.add_parser("splits", help="make or show split manifests")
    ssub = ps.add_subparsers(dest="splits_command", metavar="ACTION")
    ssub.required = True
    psm = ssub.add_parser("make", help="write splits/<dataset>.json from the files on disk")
    psm.add_argument("--dataset", required=True, help="dataset name (see `list`) or folder:PATH")
    psm.add_argument("--data-root", type=Path, default=None)
    psm.add_argument("--image-split", dest="recipe", default=None, metavar="RECIPE",
                     help="image-level train/val/test split: a named recipe or counts such as 16/8/6 or "
                          "proportions such as 6:2:2 (default: the dataset's own)")
    # the old name of --image-split, kept so that earlier commands still work
    psm.add_argument("--recipe", dest="recipe", help=argparse.SUPPRESS)
    psm.add_argument("--seed", type=int, default=0, help="seed of the image and patch draws (default: 0)")
    psm.add_argument("--out", type=Path, default=None, help="output file (default: splits/<dataset>.json)")
    psm.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    psm.add_argument("--split-recipe", default="paper", choices=["paper", "image"],
                     help="labeled-subset recipe (default: paper); image writes splits/<dataset>.image.json")
    pss = ssub.add_parser("show", help="print the Table 5 counts of a manifest")
    pss.add_argument("--dataset", required=True, help="dataset name (see `list`) or folder:PATH")
    pss.add_argument("--data-root", type=Path, default=None)
    pss.add_argument("--format", choices=["md", "json"], default="md")
    pss.add_argument("--split-recipe", default=None, choices=["paper", "image"],
                     help="labeled-subset recipe (default: both)")


def add_status_parser(sub) -> None:
    """``benchmark status`` (:mod:`benchmark.executors.status`)."""
    pt = sub.add_parser("status", help="queued / running / done / failed cells of a result store")
    pt.add_argument("--out", type=Path, default=Path("results"), help="result store (default: ./results)")
    pt.add_argument("--json", action="store_true", help="machine-readable output")


def add_executor_arguments(pr: argparse.ArgumentParser) -> None:
    """``run``'s scale-out flags (:mod:`benchmark.executors`)."""
    g = pr.add_argument_group("executors (docs/gpu-and-cluster.md)")
    g.add_argument("--executor", default=None, help="inline (default) | local (the default when --workers, "
                   "--devices or --cells-per-device is given) | submitit")
    g.add_argument("--lock-timeout", type=float, default=1800.0, metavar="S",
                   help="seconds without a heartbeat after which another host's cell lock is stale")
    g.add_argument("--workers", type=int, default=None, help="local: worker processes "
                   "(default: devices × cells per device)")
    g.add_argument("--devices", default=None, help="local: cpu or cuda:0,cuda:1,... (one per worker slot)")
    g.add_argument("--cells-per-device", type=int, default=1, help="local: workers sharing one device")
    g.add_argument("--submitit-cluster", default="slurm", help="submitit: slurm (default) | local | debug")
    g.add_argument("--wait", action="store_true", help="submitit: block until the jobs finish")
    for flag, kind, text in (
        ("partition", str, "SLURM partition"), ("gpus-per-task", int, "GPUs per cell (N > 1: N DDP ranks)"),
        ("cpus-per-task", int, "CPUs per task"), ("mem", str, "memory per node, e.g. 64G"),
        ("time", str, "time limit: MINUTES, HH:MM:SS or D-HH:MM:SS"), ("account", str, "SLURM account"),
        ("qos", str, "SLURM QOS"), ("constraint", str, "SLURM node constraint, e.g. h100"),
        ("array-parallelism", int, "most array jobs running at once"),
    ):
        g.add_argument(f"--slurm-{flag}", type=kind, default=None, help=f"submitit: {text}")
    g.add_argument("--ddp-lr-scaling", default="linear", help="under torchrun (N ranks): linear (default: "
                   "lr x N for the N-times larger global batch) | none (profile.lr as is)")
    g.add_argument("--slurm-setup", action="append", default=None, metavar="LINE",
                   help="submitit: shell line run before each job (repeatable), e.g. 'module load cuda'")


def _exec_options(args):
    from benchmark.executors import ExecOptions

    slurm = {k[len("slurm_"):]: v for k, v in vars(args).items() if k.startswith("slurm_") and v is not None}
    executor = args.executor
    if executor is None:  # --workers 2 alone means "on 2 local worker processes"
        local = args.workers is not None or args.devices is not None or args.cells_per_device != 1
        executor = "local" if local else "inline"
    return ExecOptions(
        executor=executor, workers=args.workers,
        devices=tuple(_split_csv(args.devices)) if args.devices is not None else (),
        cells_per_device=args.cells_per_device, cluster=args.submitit_cluster, slurm=slurm,
        wait=args.wait)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from benchmark.data.base import DatasetError
    from benchmark.registry import RegistryError
    from benchmark.store import StoreError

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return {
                "list": cmd_list,
                "run": cmd_run,
                "status": cmd_status,
                "report": cmd_report,
                "verify": cmd_verify,
                "splits": cmd_splits,
                "check-method": cmd_check,
            }[args.command](args)
    except (RegistryError, DatasetError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file the suite had to read or write; name it instead of a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; re-run the same command to resume.", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``warning: ...`` line (they name the file themselves), not a source location."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ commands
def cmd_list(args) -> int:
    from tabulate import tabulate

    from benchmark.catalog import DATASETS
    from benchmark.data import DatasetError, open_dataset
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
        try:
            present = "yes" if ds.is_present() else "no"
        except DatasetError as exc:
            present = f"broken: {exc}"
        datasets.append({
            "name": name,
            "description": cls.description,
            "present": present,
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
    if args.verbose:
        _print_options(methods)
    dcols = ["name", "present", "location", "description"] + (["dist"] if args.verbose else [])
    print("\nDatasets (also: folder:PATH for images/ + labels/ folders)")
    print(tabulate([[d.get(c) for c in dcols] for d in datasets], headers=dcols))
    print("\nProfiles")
    print(tabulate([list(p.values()) for p in profiles], headers=list(profiles[0])))
    return EXIT_OK


def _print_options(methods: list[dict]) -> None:
    """``list -v``: every method's declared options (type, default, allowed values, description)."""
    from tabulate import tabulate

    from benchmark.options import canonical_text

    for m in methods:
        rows = [[o["name"], o["type"], canonical_text(o["default"]), o["allowed"], o["help"]]
                for o in m.get("options") or []]
        if rows:
            print(f"\nOptions of {m['name']} (--set {m['name']}.OPTION=VALUE)")
            print(tabulate(rows, headers=["option", "type", "default", "allowed", "description"]))


def default_profile_name(datasets: list[str]) -> str:
    """The profile a run gets without ``--profile``: the datasets' common ``default_profile`` class
    attribute (``synthetic``: ``quick``), else ``smoke``. Unknown names fall through to ``smoke`` here and
    fail later with the list of known datasets."""
    from benchmark.catalog import get_dataset_class

    names = set()
    for spec in datasets:
        try:
            cls = None if spec.startswith("folder:") or spec == "all" else get_dataset_class(spec)
        except Exception:  # noqa: BLE001 - reported by the runner with the available names
            cls = None
        names.add(getattr(cls, "default_profile", None))
    return names.pop() if len(names) == 1 and None not in names else "smoke"


def cmd_run(args) -> int:
    from benchmark import store
    from benchmark.devices import resolve_device
    from benchmark.profiles import get_profile
    from benchmark.runner import GridConfig, GridError, Runner, dry_run_rows

    overrides = _parse_assignments(args.overrides, "--set")
    sweeps = {k: _require_csv(v, f"--sweep {k}=") for k, v in _parse_assignments(args.sweeps, "--sweep").items()}
    profile_over = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("profile.")}
    overrides = {k: v for k, v in overrides.items() if not k.startswith("profile.")}
    if any(k.startswith("profile.") for k in sweeps):
        raise ValueError("--sweep over profile fields is not supported; run once per profile value")
    try:
        profile = get_profile(args.profile or default_profile_name(_split_csv(args.datasets)))
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None
    profile = profile.replace(**profile_over) if profile_over else profile
    _check_backbone(profile)
    seed_texts = _require_csv(args.seeds, "--seeds")
    try:
        seeds = [int(s) for s in seed_texts]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    from benchmark import distributed

    opts, device = _scale_out(args, resolve_device(args.device))
    cfg = GridConfig(
        methods=_require_csv(args.methods, "--methods"),
        datasets=_require_csv(args.datasets, "--datasets"),
        ratios=_require_csv(args.ratios, "--ratios"),
        seeds=seeds,
        profile=profile,
        device=device,
        out=args.out,
        data_root=args.data_root,
        overrides=overrides,
        sweeps=sweeps,
        force=args.force,
        skip_missing=args.skip_missing,
        progress=not args.quiet,
        split_recipe=args.split_recipe,
    )
    cfg.lock_timeout = args.lock_timeout
    lead = distributed.rank() == 0
    runner = Runner(cfg, echo=None if lead else (lambda m: None))
    try:
        if args.dry_run:
            rows = dry_run_rows(runner)
            from tabulate import tabulate

            print(tabulate([[r["status"], r["cell"], r["dir"]] for r in rows],
                           headers=["status", "cell", "directory"]))
            return EXIT_OK
        failed = _run_with(runner, opts)
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except store.DiskFullError as exc:
        print(f"grid stopped: {exc.strerror}. {store.DISK_FULL_FIX}", file=sys.stderr)
        return EXIT_FAILED
    except distributed.RankFailedError as exc:
        print(f"grid stopped: {exc}. Under torchrun a failing rank ends the run (torchrun stops the other "
              f"ranks). Finished cells are kept; fix the cause and re-run the same command.", file=sys.stderr)
        return EXIT_FAILED
    distributed.barrier()
    if failed:
        print(f"{failed} cell(s) failed; `python -m benchmark report` shows them.", file=sys.stderr)
    if (args.report or args.report_dir) and lead:
        from benchmark.reports import build_report

        report_dir = args.report_dir or args.out / "reports"
        written = build_report(results=args.out, out=report_dir)
        print(f"report: {len(written)} file(s) written to {report_dir}:", file=sys.stderr, flush=True)
        for path in written:
            print(path, flush=True)
    return EXIT_FAILED if failed else EXIT_OK


def _check_backbone(profile) -> None:
    """Refuse a bad ``profile.pretrained`` / ``norm`` / ``backbone_width`` combination before anything
    trains (otherwise every deep cell would fail with the same message)."""
    import warnings

    from methods.core.model import resolve_backbone_init

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning comes again, once, where a model is built
        try:
            resolve_backbone_init(profile)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None


def _scale_out(args, device: str):
    """Check the executor options (before anything runs) and join a DDP group under torchrun."""
    from benchmark import distributed
    from benchmark.executors import validate

    opts = _exec_options(args)
    validate(opts, report=bool(args.report or args.report_dir))
    if args.lock_timeout <= 0:
        raise ValueError(f"--lock-timeout {args.lock_timeout}: must be > 0 seconds")
    if distributed.env_world_size() > 1 and opts.executor != "inline":
        raise ValueError("under torchrun (WORLD_SIZE > 1) every rank runs the grid inline: drop --executor")
    return opts, distributed.init_from_env(device, args.ddp_lr_scaling)


def _run_with(runner, opts) -> int:
    if opts.executor == "submitit":  # inline and local check with the plan they make anyway
        runner.check_teacher_weights(runner.plan())
    if opts.executor == "local":
        from benchmark.executors.local import run_local

        return run_local(runner, opts)
    if opts.executor == "submitit":
        from benchmark.executors.submit import submit_grid

        return submit_grid(runner, opts)
    return runner.run()


def cmd_status(args) -> int:
    from benchmark.executors.status import format_status, store_status

    if not args.out.is_dir():
        raise ValueError(f"--out {args.out}: no such result store (a folder written by `benchmark run`)")
    rows = store_status(args.out)
    print(json.dumps(rows, indent=2) if args.json else format_status(rows))
    return EXIT_OK


def cmd_report(args) -> int:
    from benchmark.reports import TableOptions, build_report

    if args.bootstrap < 100:
        raise ValueError(f"--bootstrap {args.bootstrap}: use at least 100 resamples (default 10000)")
    _check_report_store(args.results, args.out)
    opts = TableOptions(
        protocol=args.protocol,
        aggregation=args.aggregation,
        reference=args.reference,
        test=args.test,
        correction=None if args.correction == "none" else args.correction,
        select_on=args.select_on,
        n_boot=args.bootstrap,
    )
    written = build_report(
        results=args.results,
        out=args.out,
        opts=opts,
        methods=_split_csv(args.methods) if args.methods else None,
        profile=args.profile,
        split=args.split,
        split_recipe=args.split_recipe,
        figures=not args.no_figures,
        skip_damaged=args.skip_damaged,
    )
    for path in written:
        print(path)
    return EXIT_OK


def _check_report_store(results: Path, out: Path | None) -> None:
    """``run --out STORE`` carried over to ``report`` names the report folder there, not the store.

    Raises:
        ValueError: ``results`` does not exist and ``out`` holds result cells (the message gives the
            ``--results`` command). When ``results`` exists, ``--out`` is taken as asked.
    """
    from benchmark import store

    if results.exists() or out is None or not out.is_dir() or not store.cell_dirs(out):
        return
    raise ValueError(f"--out {out} is a result store, but for `report` --out is the folder the tables go to "
                     f"and the store is --results (default ./results, which does not exist). Run: "
                     f"python -m benchmark report --results {out}")


def cmd_verify(args) -> int:
    """Every done cell against its checksums: exit 0 clean, 1 damaged (each cell and file listed)."""
    from benchmark import store

    out = Path(args.out)
    if not out.is_dir():
        raise ValueError(f"--out {out}: no result store there; pass the --out of a `benchmark run`.")
    check = store.verify_store(out)
    damaged, legacy, done = check.damaged, check.legacy, check.done
    for path, problem in damaged:
        print(f"DAMAGED {path}\n  {problem}")
    for path in legacy:
        print(f"UNVERIFIED {path}\n  no checksums in done.json (written before they existed): readable, "
              f"but changes cannot be detected; re-run it with --force to record them")
    print(f"{out}: {done} done cell(s) checked, {len(damaged)} damaged, {len(legacy)} without checksums")
    return EXIT_FAILED if damaged else EXIT_OK


def cmd_splits(args) -> int:
    from benchmark.data import manifest_for, manifest_path, open_dataset
    from benchmark.data import splits as sp

    ds = open_dataset(args.dataset, args.data_root)
    if args.splits_command == "make":
        out = args.out or manifest_path(args.dataset, args.split_recipe)
        if out.exists() and not args.force:
            raise ValueError(f"{out} exists; pass --force to overwrite it (committed manifests are the "
                             f"published splits: change them only on purpose)")
        kwargs = {"seed": args.seed, "labeled_recipe": args.split_recipe}
        if args.recipe:
            kwargs["recipe"] = args.recipe
        manifest = sp.make_manifest(ds, **kwargs)
        sp.save_manifest(manifest, out)
        print(f"wrote {out}")
        print(sp.format_counts(manifest, fmt="md"))
        return EXIT_OK
    recipes = [args.split_recipe] if args.split_recipe else list(sp.LABELED_RECIPES)
    texts = [sp.format_counts(manifest_for(ds, args.dataset, verify=False, split_recipe=r), fmt=args.format)
             for r in recipes]
    if args.format == "json":
        print(json.dumps([row for t in texts for row in json.loads(t)], indent=1))
    else:
        print("\n".join(texts))
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
