"""The command line through ``benchmark.cli.main(argv)``."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import EXIT_OK, EXIT_USAGE, build_parser, main


@pytest.mark.parametrize("cmd", [[], ["list"], ["run"], ["report"], ["splits"], ["splits", "make"],
                                 ["splits", "show"], ["check-method"], ["verify"]])
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main(cmd + ["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_list_shows_methods_datasets_profiles(capsys):
    assert main(["list"]) == EXIT_OK
    out = capsys.readouterr().out
    for word in ("Methods", "watershed", "Datasets", "synthetic", "Profiles", "smoke", "cpu", "paper"):
        assert word in out


def test_list_json_is_machine_readable(capsys):
    assert main(["list", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    names = {m["name"] for m in data["methods"]}
    assert "watershed" in names
    syn = next(d for d in data["datasets"] if d["name"] == "synthetic")
    assert syn["present"] == "yes"


def test_unknown_method_lists_available_with_exit_2(capsys, tmp_path):
    code = main(["run", "--methods", "watershd", "--datasets", "synthetic", "--out", str(tmp_path), "--dry-run"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Did you mean 'watershed'" in err and "Available:" in err


def test_unknown_dataset_lists_available(capsys, tmp_path):
    code = main(["run", "--methods", "watershed", "--datasets", "monuseeg", "--out", str(tmp_path), "--dry-run"])
    assert code == EXIT_USAGE
    assert "Did you mean 'monuseg'" in capsys.readouterr().err


def test_bad_set_syntax_and_unknown_profile(capsys, tmp_path):
    assert main(["run", "--methods", "watershed", "--datasets", "synthetic", "--set", "nonsense",
                 "--dry-run", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["run", "--methods", "watershed", "--datasets", "synthetic", "--profile", "gpu-huge",
                 "--dry-run", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "available: smoke, cpu, paper" in capsys.readouterr().err
    assert main(["run", "--methods", "watershed", "--datasets", "synthetic", "--set", "profile.nope=1",
                 "--dry-run", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "unknown profile field" in capsys.readouterr().err


def test_set_must_reach_a_requested_method(capsys, tmp_path):
    code = main(["run", "--methods", "watershed", "--datasets", "synthetic", "--set", "bass.alpha=0.3",
                 "--dry-run", "--out", str(tmp_path)])
    assert code == EXIT_USAGE
    assert "matches none of the requested methods" in capsys.readouterr().err


def test_cuda_requested_without_cuda_is_a_clear_error(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["run", "--methods", "watershed", "--datasets", "synthetic", "--device", "cuda",
                 "--dry-run", "--out", str(tmp_path)])
    assert code == EXIT_USAGE
    assert "cuda" in capsys.readouterr().err.lower()


def test_dry_run_lists_cells(capsys, tmp_path):
    code = main(["run", "--methods", "watershed", "--datasets", "synthetic", "--ratios", "1/8,1/2",
                 "--seeds", "0,1", "--dry-run", "--out", str(tmp_path)])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("watershed | synthetic") == 4 and "todo" not in out.lower() or "incomplete" in out


def test_all_datasets_missing_stops_before_training(capsys, tmp_path):
    code = main(["run", "--methods", "watershed", "--datasets", "all", "--data-root", str(tmp_path / "none"),
                 "--out", str(tmp_path / "out")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "monuseg" in err and "cryonuseg" in err and "digestpath" in err
    assert not (tmp_path / "out").exists()


def test_parser_defaults():
    args = build_parser().parse_args(["run", "--methods", "a", "--datasets", "b"])
    # the profile is resolved per dataset (benchmark.cli.default_profile_name)
    assert args.ratios == "1/8,1/4,1/2" and args.seeds == "0" and args.profile is None


@pytest.mark.parametrize("flag", ["--image-split", "--recipe"])  # --recipe: the old name, still accepted
def test_splits_make_image_split_sets_the_train_val_test_counts(flag, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["splits", "make", "--dataset", "synthetic", flag, "20/6/4", "--out", str(out)]) == EXIT_OK
    manifest = json.loads(out.read_text())
    assert manifest["recipe"] == "20/6/4"
    assert manifest["image_counts"] == {"train": 20, "val": 6, "test": 4}
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["splits", "make", "--dataset", "synthetic", flag, "20/6/5", "--out", str(tmp_path / "x.json")]) \
        == EXIT_USAGE
    assert "20+6+5 = 31" in capsys.readouterr().err


def test_splits_make_help_names_image_split_not_the_old_flag(capsys):
    with pytest.raises(SystemExit):
        main(["splits", "make", "--help"])
    out = capsys.readouterr().out
    assert "--image-split" in out and "--recipe" not in out and "--split-recipe" in out
