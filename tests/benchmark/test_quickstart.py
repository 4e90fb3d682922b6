"""The first run: synthetic's own default profile, the no-data hint, and the per-stage ETA."""

from __future__ import annotations

import pytest

from benchmark.cli import EXIT_USAGE, default_profile_name, main
from benchmark.eta import EtaModel
from benchmark.profiles import PROFILES


def test_existing_profile_digests_are_pinned():
    # a new profile field must default to the old behaviour: these digests key every cached result
    assert {k: PROFILES[k].digest() for k in ("smoke", "cpu", "paper")} == {
        "smoke": "d6453fa7de44", "cpu": "ba706cc1ba7e", "paper": "4dbbdb5b887c",
    }


def test_synthetic_runs_quick_by_default_others_smoke():
    assert default_profile_name(["synthetic"]) == "quick"
    assert "quick" in PROFILES
    assert default_profile_name(["monuseg"]) == "smoke"
    assert default_profile_name(["synthetic", "monuseg"]) == "smoke"
    assert default_profile_name(["all"]) == "smoke"
    assert default_profile_name(["no-such-dataset"]) == "smoke"


def test_dry_run_without_profile_uses_quick(capsys, tmp_path):
    assert main(["run", "--methods", "maskrcnn", "--datasets", "synthetic", "--ratios", "1/8",
                 "--dry-run", "--out", str(tmp_path)]) == 0
    assert "quick" in capsys.readouterr().out


def test_no_data_message_suggests_synthetic_and_skip_missing(capsys, tmp_path):
    code = main(["run", "--methods", "watershed", "--datasets", "all", "--data-root", str(tmp_path / "none"),
                 "--out", str(tmp_path / "out")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--datasets synthetic" in err and "--skip-missing" in err


def _done(fit_info, *, fit=0.0, pred=10.0, n_test=10, n_unl=100):
    return {"fit_seconds": fit, "predict_seconds": pred, "n_test_patches": n_test, "n_unlabeled": n_unl,
            "fit_info": fit_info}


def test_eta_prices_a_student_by_stage_rates_not_by_the_first_cell():
    eta = EtaModel(iterations=100)
    # nothing measured yet: no ETA rather than a made-up one
    assert eta.estimate([("maskrcnn", "synthetic", "1/8", True, None)]) is None
    # teacher: 100 s training (1 s/it) + 10 s prediction (1 s/patch)
    eta.observe("maskrcnn", "synthetic", "1/8", _done({"train_seconds_last_call": 100.0}), 110.0)
    teacher = eta.estimate([("maskrcnn", "synthetic", "1/4", True, None)])
    assert teacher == pytest.approx(110.0)
    # an unmeasured student: its training at the teacher's rate + a PL pass over 100 unlabeled patches
    student = eta.estimate([("bass", "synthetic", "1/8", True, "maskrcnn")])
    assert student == pytest.approx(100.0 + 100 * 1.0 + 10.0)
    # once a student cell is measured its own rates take over (2 s/it, PL 0.5 s/patch)
    info = {"student": {"train_seconds_last_call": 200.0}, "pseudo_labels": {"detection_seconds": 50.0}}
    eta.observe("bass", "synthetic", "1/8", _done(info, pred=20.0), 300.0)
    # (200 + 50 + 20 s of stages, plus the 30 s the cell took beyond them)
    assert eta.estimate([("bass", "synthetic", "1/8", True, "maskrcnn")]) == pytest.approx(200 + 50 + 20 + 30)
    # classical methods cost what they measured, 0 before
    assert eta.estimate([("watershed", "synthetic", "1/8", False, None)]) == 0.0


def test_eta_adds_what_the_stages_leave_out_so_a_like_cell_costs_what_the_last_one_took():
    eta = EtaModel(iterations=100)
    # 100 s training + 10 s prediction, but the cell took 140 s: 30 s of start-up, validation, writing
    eta.observe("maskrcnn", "synthetic", "1/8", _done({"train_seconds_last_call": 100.0}), 140.0)
    assert eta.estimate([("maskrcnn", "synthetic", "1/4", True, None)]) == pytest.approx(140.0)
    # an unmeasured student borrows its teacher's overhead along with its rates
    assert eta.estimate([("bass", "synthetic", "1/8", True, "maskrcnn")]) == pytest.approx(100 + 100 + 10 + 30)
    info = {"student": {"train_seconds_last_call": 200.0}, "pseudo_labels": {"detection_seconds": 50.0}}
    eta.observe("bass", "synthetic", "1/8", _done(info, pred=20.0), 330.0)  # 270 s of stages + 60 s
    assert eta.estimate([("bass", "synthetic", "1/8", True, "maskrcnn")]) == pytest.approx(330.0)
    # a cell faster than its stages (clock skew, a reloaded teacher) never makes the overhead negative
    eta.observe("maskrcnn", "synthetic", "1/2", _done({"train_seconds_last_call": 100.0}), 50.0)
    assert eta.overhead["maskrcnn"] == [30.0, 0.0]


def test_late_profile_fields_enter_the_key_only_when_changed():
    from benchmark.profiles import LATE_FIELDS

    base = PROFILES["cpu"]
    assert not set(LATE_FIELDS) & set(base.to_dict())
    for field, value in (("backbone_width", 32), ("optimizer", "adamw"), ("rpn_pre_nms_top_n_train", 1000),
                         ("rpn_pre_nms_top_n_test", 500)):
        changed = base.replace(**{field: value})
        assert changed.to_dict()[field] == value and changed.digest() != base.digest()
        assert base.replace(**{field: LATE_FIELDS[field]}).digest() == base.digest()


def test_readme_first_command_runs_quick_on_two_local_workers():
    import re
    import shlex
    from pathlib import Path

    from benchmark.cli import _exec_options, build_parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)\n```", readme, re.S).group(1)
    args = shlex.split(first.split("python -m benchmark ", 1)[1])
    parsed = build_parser().parse_args(args)
    opts = _exec_options(parsed)
    assert (opts.executor, opts.workers) == ("local", 2)
    assert parsed.profile is None and default_profile_name(parsed.datasets.split(",")) == "quick"
    quick = PROFILES["quick"]
    assert (quick.optimizer, quick.backbone_width, quick.iterations) == ("adamw", 32, 200)
