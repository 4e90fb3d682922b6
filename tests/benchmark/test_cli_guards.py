"""CLI guards of issue 12: empty lists, unusable --out, where a run's reports go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmark.cli import EXIT_OK, EXIT_USAGE, main

BASE = ["run", "--methods", "watershed", "--datasets", "synthetic", "--ratios", "1/8"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "patch-cache"))


@pytest.mark.parametrize("option,value", [("--seeds", ","), ("--ratios", ","), ("--methods", ","),
                                          ("--datasets", ","), ("--sweep", "watershed.min_distance=")])
def test_empty_lists_are_errors_not_zero_cells(tmp_path, capsys, option, value):
    argv = [*BASE, "--out", str(tmp_path / "o"), "--dry-run"]
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no values given" in err and option in err


@pytest.mark.parametrize("kind", ["file", "under_file", "unwritable"])
def test_unusable_out_is_a_named_error(tmp_path, capsys, kind):
    blocker = tmp_path / "blocker"
    if kind == "unwritable":
        blocker.mkdir()
        blocker.chmod(0o500)
        out = blocker / "store"
        if os.geteuid() == 0:  # root writes through modes; sysfs refuses even root
            blocker = Path("/sys")
            out = blocker / "nuclei-ssl-bench-store"
    else:
        blocker.write_text("x")
        out = blocker if kind == "file" else blocker / "store"
    try:
        code = main([*BASE, "--out", str(out), "--quiet"])
    finally:
        (tmp_path / "blocker").chmod(0o700)
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "--out" in err and str(blocker) in err and "Traceback" not in err


def test_run_report_goes_beside_the_store_and_paths_are_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "store"
    assert main([*BASE, "--out", str(out), "--quiet", "--report"]) == EXIT_OK
    cap = capsys.readouterr()
    assert not (tmp_path / "reports").exists()
    assert (out / "reports" / "table1.md").is_file()
    last = cap.out.strip().splitlines()
    assert str(out / "reports" / "table1.md") in last
    assert f"written to {out / 'reports'}" in cap.err
    other = tmp_path / "elsewhere"
    assert main([*BASE, "--out", str(out), "--quiet", "--report-dir", str(other)]) == EXIT_OK
    assert (other / "table1.md").is_file()
    assert main(["report", "--results", str(out), "--no-figures"]) == EXIT_OK
    assert str(out / "reports" / "table1.md") in capsys.readouterr().out


def test_report_out_pointing_at_a_store_says_to_use_results(tmp_path, capsys, monkeypatch):
    """``run --out S`` carried over as ``report --out S``: a named error, nothing written into the store."""
    monkeypatch.chdir(tmp_path)  # no ./results here
    out = tmp_path / "store"
    assert main([*BASE, "--out", str(out), "--quiet"]) == EXIT_OK
    capsys.readouterr()
    assert main(["report", "--out", str(out), "--no-figures"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--out {out} is a result store" in err and f"report --results {out}" in err
    assert not (out / "table1.md").exists()
    assert main(["report", "--results", str(out), "--out", str(tmp_path / "tables"), "--no-figures"]) == EXIT_OK
    assert (tmp_path / "tables" / "table1.md").is_file()


def test_list_shows_a_broken_dataset_with_its_error(tmp_path, capsys):
    """A dataset whose files are inconsistent is 'broken: <why>', not 'no' (issue 12 row 3)."""
    part = tmp_path / "monuseg" / "MoNuSegTrainingData"
    (part / "Tissue Images").mkdir(parents=True)
    (part / "Annotations").mkdir()
    (part / "Tissue Images" / "a.tif").write_bytes(b"")
    (part / "Annotations" / "stray.xml").write_text("<Annotations/>")
    assert main(["list", "--json", "--data-root", str(tmp_path)]) == EXIT_OK
    import json

    data = json.loads(capsys.readouterr().out)
    mon = next(d for d in data["datasets"] if d["name"] == "monuseg")
    assert mon["present"].startswith("broken:") and "stray.xml" in mon["present"]


@pytest.mark.parametrize("sets, message", [
    (["profile.pretrained=/no/such/weights.pth", "profile.norm=frozen_bn"], "profile.pretrained='/no/such"),
    (["profile.backbone_width=32", "profile.norm=frozen_bn", "profile.pretrained=/no/such.pth"],
     "backbone_width=32"),
])
def test_bad_backbone_settings_stop_before_any_cell(tmp_path, capsys, sets, message):
    out = tmp_path / "results"
    args = ["run", "--methods", "maskrcnn", "--datasets", "synthetic", "--ratios", "1/8", "--out", str(out)]
    for kv in sets:
        args += ["--set", kv]
    assert main(args) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not out.exists(), "no cell may start (or fail) before the profile is known to be usable"
