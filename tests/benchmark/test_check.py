"""benchmark.check: the toy profile shared by check-method and the CLI end-to-end tests."""

import pytest

from benchmark.check import TINY_PROFILE_FIELDS, check_profile, tiny_profile_args
from benchmark.profiles import get_profile


def _cli_profile(args: list[str]):
    """What ``benchmark run`` builds from ``--profile P --set profile.F=V ...`` (strings, as argparse gives)."""
    assert args[:2] == ["--profile", "smoke"]
    sets = dict(a.removeprefix("profile.").split("=", 1) for a in args[3::2])
    assert all(k == "--set" for k in args[2::2])
    return get_profile(args[1]).replace(**sets)


def test_cli_args_build_exactly_the_check_profile():
    assert _cli_profile(tiny_profile_args()) == check_profile()
    assert _cli_profile(tiny_profile_args()).digest() == check_profile().digest()
    p = _cli_profile(tiny_profile_args(iterations=20))
    assert p == check_profile(iterations=20) and p.iterations == 20 and p.input_size == 128


def test_check_profile_is_smoke_shrunk_and_rejects_unknown_fields():
    p = check_profile()
    assert all(getattr(p, k) == v for k, v in TINY_PROFILE_FIELDS.items())
    assert p.backbone == get_profile("smoke").backbone and p.input_size < get_profile("smoke").input_size
    with pytest.raises(ValueError, match="unknown profile field.*valid fields"):
        check_profile(iterationz=3)


# ------------------------------------------------------------------ the named checks
def test_checks_are_named_functions_listed_in_run_order():
    from benchmark import check

    names = check.check_names()
    assert names[:3] == ["class_attributes", "constructor", "fit"] and "deterministic" in names
    assert len(set(names)) == len(names)
    for c in check.iter_checks():
        assert c.fn is getattr(check, f"check_{c.name}"), c.name
    assert [c.name for c in check.iter_checks(["deterministic", "fit"])] == ["fit", "deterministic"]
    with pytest.raises(ValueError, match="unknown check.*nope.*known: class_attributes"):
        list(check.iter_checks(["nope"]))


def test_one_check_runs_alone_and_its_temporary_folder_is_removed(monkeypatch, tmp_path):
    import tempfile

    from benchmark.check import check_method
    from methods.watershed.method import WatershedMethod

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    report = check_method(WatershedMethod, checks=["other_sizes"])
    assert report.passed, report.format()
    assert [r.name for r in report.results] == ["non-square / non-256 image sizes"]
    assert list(tmp_path.iterdir()) == []


def test_a_failing_stop_check_skips_the_rest():
    from benchmark.api import Method
    from benchmark.check import check_method

    class Broken(Method):
        name = "broken"
        description = "raises in its constructor"

        def __init__(self, **options):
            raise RuntimeError("no")

        def fit(self, data, **kwargs):  # pragma: no cover - never reached
            raise AssertionError

        def predict(self, images):  # pragma: no cover - never reached
            raise AssertionError

    report = check_method(Broken)
    assert not report.passed
    assert [r.passed for r in report.results] == [True, False]
    assert "RuntimeError: no" in report.results[1].message


def test_cli_check_option_runs_only_that_check(capsys):
    from benchmark import cli

    assert cli.main(["check-method", "watershed", "--check", "predict_empty"]) == 0
    out = capsys.readouterr().out
    assert "predict([]) returns []" in out and "determinism" not in out
    assert cli.main(["check-method", "watershed", "--check", "nope"]) == 2
    assert "unknown check(s) nope" in capsys.readouterr().err
