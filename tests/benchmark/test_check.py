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
