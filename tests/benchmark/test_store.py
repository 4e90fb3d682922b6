"""Store integrity: checksums in done.json, verified by ``run`` (recompute), ``report`` (refuse) and
``verify``; umask-respecting modes; orphaned temp files cleaned when a cell is claimed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmark import store
from benchmark.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from benchmark.profiles import get_profile
from benchmark.runner import GridConfig, Runner


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "patch-cache"))


@pytest.fixture(scope="module")
def sealed_store(tmp_path_factory) -> Path:
    """One real watershed cell on synthetic 1/8, written by the runner (checksums included)."""
    out = tmp_path_factory.mktemp("store") / "results"
    cfg = GridConfig(methods=["watershed"], datasets=["synthetic"], ratios=["1/8"], seeds=[0],
                     profile=get_profile("smoke"), out=out, progress=False)
    assert Runner(cfg, echo=lambda m: None).run() == 0
    return out


@pytest.fixture
def store_copy(sealed_store, tmp_path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(sealed_store, dst)
    return dst


def _cell(out: Path) -> Path:
    (cell,) = [p.parent for p in out.glob("*/*/*/*/done.json")]
    return cell


def _truncate_csv(path: Path, rows: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: rows + 1]))


def test_done_json_records_size_and_sha256_of_every_artefact(sealed_store):
    cell = _cell(sealed_store)
    arts = json.loads((cell / store.DONE).read_text())["artefacts"]
    assert set(arts) == set(store.ARTEFACTS)
    for name, rec in arts.items():
        assert rec == store.file_digest(cell / name), name
    assert store.verify_cell(cell) == ([], False)


@pytest.mark.parametrize("damage", ["truncate_csv", "edit_cell_json", "delete_npz", "append_env"])
def test_verify_cell_names_the_damaged_file(store_copy, damage):
    cell = _cell(store_copy)
    target = {"truncate_csv": "metrics_patch.csv", "edit_cell_json": "cell.json",
              "delete_npz": "predictions.npz", "append_env": "env.json"}[damage]
    if damage == "truncate_csv":
        _truncate_csv(cell / target, 19)
    elif damage == "edit_cell_json":
        (cell / target).write_text((cell / target).read_text().replace('"seed": 0', '"seed": 1'))
    elif damage == "delete_npz":
        (cell / target).unlink()
    else:
        with open(cell / target, "a") as fh:
            fh.write(" ")
    problems, legacy = store.verify_cell(cell)
    assert not legacy and len(problems) == 1 and target in problems[0]


def test_run_recomputes_a_damaged_cell_and_says_why(store_copy):
    cell = _cell(store_copy)
    original = (cell / "metrics_patch.csv").read_bytes()
    _truncate_csv(cell / "metrics_patch.csv", 19)
    messages: list[str] = []
    cfg = GridConfig(methods=["watershed"], datasets=["synthetic"], ratios=["1/8"], seeds=[0],
                     profile=get_profile("smoke"), out=store_copy, progress=False)
    assert Runner(cfg, echo=messages.append).run() == 0
    text = "\n".join(messages)
    assert "0 already done, 1 to run" in text
    assert "recomputing a damaged cell" in text and "metrics_patch.csv" in text
    assert (cell / "metrics_patch.csv").read_bytes() == original
    assert store.verify_cell(cell) == ([], False)


def test_report_refuses_damage_naming_the_file_unless_skip_damaged(store_copy, capsys):
    cell = _cell(store_copy)
    _truncate_csv(cell / "metrics_patch.csv", 19)
    assert main(["report", "--results", str(store_copy), "--no-figures"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "metrics_patch.csv" in err and "--skip-damaged" in err and "Traceback" not in err
    assert not (store_copy / "reports" / "table1.md").exists()
    assert main(["report", "--results", str(store_copy), "--no-figures", "--skip-damaged"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "warning: skipping damaged cell" in err and "metrics_patch.csv" in err
    assert "watershed" not in (store_copy / "reports" / "table1.md").read_text()


@pytest.mark.parametrize("target,text", [("cell.json", '{"method": "wat'), ("done.json", "{'x'"),
                                         ("metrics_image.csv", "")])
def test_unparseable_store_files_are_named_errors(store_copy, capsys, target, text):
    cell = _cell(store_copy)
    (cell / target).write_text(text)
    assert main(["report", "--results", str(store_copy), "--no-figures"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert target in err and "Traceback" not in err


def test_verify_command_exit_codes(store_copy, capsys):
    assert main(["verify", "--out", str(store_copy)]) == EXIT_OK
    assert "1 done cell(s) checked, 0 damaged" in capsys.readouterr().out
    cell = _cell(store_copy)
    (cell / "examples.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert main(["verify", "--out", str(store_copy)]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert f"DAMAGED {cell}" in out and "examples.npz" in out
    assert main(["verify", "--out", str(store_copy / "nope")]) == EXIT_USAGE


def test_legacy_cell_without_checksums_is_checked_for_readability(store_copy, capsys):
    cell = _cell(store_copy)
    done = json.loads((cell / store.DONE).read_text())
    done.pop("artefacts")
    (cell / store.DONE).write_text(json.dumps(done))
    assert store.verify_cell(cell) == ([], True)
    assert main(["verify", "--out", str(store_copy)]) == EXIT_OK
    assert "UNVERIFIED" in capsys.readouterr().out
    (cell / "metrics_patch.csv").write_text("image_id,dice\n")  # unreadable as metrics
    problems, legacy = store.verify_cell(cell)
    assert legacy and "metrics_patch.csv" in problems[0]


def test_store_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store.atomic_write_json(tmp_path / "a.json", {"x": 1})
        store.save_predictions(tmp_path / "p.npz", {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "p.npz").stat().st_mode & 0o777 == 0o644


def test_orphaned_temp_files_are_removed_when_the_cell_is_claimed(store_copy):
    cell = _cell(store_copy)
    (cell / store.DONE).unlink()  # as if killed while sealing
    orphan = cell / ".done.json.abc123.tmp"
    orphan.write_text("{")
    (cell / ".predictions.npz.xyz.npz").write_bytes(b"")
    cfg = GridConfig(methods=["watershed"], datasets=["synthetic"], ratios=["1/8"], seeds=[0],
                     profile=get_profile("smoke"), out=store_copy, progress=False)
    assert Runner(cfg, echo=lambda m: None).run() == 0
    assert not orphan.exists() and not list(cell.glob(".*.npz"))


def test_legacy_cell_with_a_corrupt_npz_is_damaged(store_copy):
    cell = _cell(store_copy)
    done = json.loads((cell / store.DONE).read_text())
    done.pop("artefacts")
    (cell / store.DONE).write_text(json.dumps(done))
    (cell / "examples.npz").write_bytes(b"PK\x03\x04 not a zip")
    problems, legacy = store.verify_cell(cell)
    assert legacy and len(problems) == 1 and "examples.npz" in problems[0]
    with pytest.raises(store.StoreError, match="examples.npz"):
        list(store.iter_cells(store_copy))


# ------------------------------------------------------------------------------------------- disk full
def _error_of(write) -> BaseException:
    try:
        write()
    except Exception as exc:  # noqa: BLE001 - the error itself is what is tested
        return exc
    raise AssertionError("the write to /dev/full did not fail")


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


@needs_dev_full
def test_a_write_to_a_full_device_is_a_disk_full_error_naming_the_store(tmp_path):
    import torch

    def to_file():
        with open("/dev/full", "w") as fh:
            fh.write("x" * 10_000)

    def torch_to_handle():
        with open("/dev/full", "wb") as fh:
            torch.save({"w": torch.zeros(100_000)}, fh)

    # torch.save given a path reports the short write as a RuntimeError with no errno
    for write in (to_file, torch_to_handle, lambda: torch.save({"w": torch.zeros(100_000)}, "/dev/full")):
        full = store.disk_full(_error_of(write), tmp_path / "cell")
        assert isinstance(full, store.DiskFullError), write
        assert str(tmp_path / "cell") in full.strerror and "MB free now" in full.strerror
        assert full.errno == 28


def test_other_errors_are_not_disk_full(tmp_path):
    assert store.disk_full(_error_of(lambda: open(tmp_path / "missing")), tmp_path) is None
    assert store.disk_full(ValueError("loss is nan"), tmp_path) is None
    assert store.disk_full(RuntimeError("CUDA out of memory"), tmp_path) is None
