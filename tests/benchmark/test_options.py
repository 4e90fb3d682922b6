"""Typed options: one declaration per method drives coercion, validation, config(), listing, cell keys;
every bad option, sweep value, seed and profile field stops the grid before any cell (exit 2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmark import options
from benchmark.api import Method
from benchmark.catalog import BUILTIN_METHODS, get_method
from benchmark.cli import EXIT_USAGE, main
from benchmark.options import OptionError, option

GOLDEN = Path(__file__).parent / "golden" / "method_configs.json"
#: the non-default cases pinned in GOLDEN besides every built-in's defaults (values as the CLI gives them)
PINNED_CASES = {
    "bass|alpha=0.3": ("bass", {"alpha": "0.3"}),
    "bass|tta_scales=0.5,1.0": ("bass", {"tta_scales": "0.5,1.0"}),
    "bass|weight_decay=0.001": ("bass", {"weight_decay": "0.001"}),
    "bass|box_threshold=0.4": ("bass", {"box_threshold": "0.4"}),
    "bass-code|d=3": ("bass-code", {"d": "3"}),
    "watershed|distance_factors=0.5,1": ("watershed", {"distance_factors": "0.5,1"}),
    "mmt-psm|predict_with=student": ("mmt-psm", {"predict_with": "student"}),
}


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def test_config_of_every_builtin_is_pinned_to_before_the_typed_options():
    """GOLDEN was written by the code before typed options (commit 261625d): same keys, same JSON values."""
    golden = json.loads(GOLDEN.read_text())
    got = {name: get_method(name)().config() for name in BUILTIN_METHODS}
    got.update({k: get_method(m)(**o).config() for k, (m, o) in PINNED_CASES.items()})
    assert sorted(got) == sorted(golden)
    for key in golden:
        assert _dumps(got[key]) == _dumps(golden[key]), key


@pytest.mark.parametrize("name", sorted(BUILTIN_METHODS))
def test_every_builtin_declares_typed_options_whose_defaults_pass_their_own_checks(name):
    cls = get_method(name)
    assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen
    for field, tp in options.fields_of(cls.Options):
        spec = options.spec_of(field)
        assert spec.help, f"{name}.{field.name} has no description"
        assert options.coerce(field.default, tp, spec, key=f"{name}.{field.name}") == field.default
    assert dict(cls.defaults) == options.defaults_of(cls.Options)


def test_maskrcnn_augment_false_turns_augmentation_off_and_nope_is_refused():
    cls = get_method("maskrcnn")
    for text, expected in (("false", False), ("off", False), ("0", False), ("true", True), ("Yes", True)):
        assert cls(augment=text).options["augment"] is expected
    with pytest.raises(OptionError) as exc:
        cls(augment="nope")
    msg = str(exc.value)
    assert "maskrcnn.augment='nope'" in msg and "true/false" in msg


def test_maskrcnn_has_no_defaults_dict_of_its_own():
    from methods.core.supervised import SupervisedMaskRCNN

    assert not hasattr(SupervisedMaskRCNN, "DEFAULTS")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(OptionError, match=r"unknown bass option\(s\) 'gamma': there is no option of that name; valid options: .*alpha"):
        get_method("bass")(gamma=1)


@pytest.mark.parametrize("method,key,value,phrase", [
    ("bass", "alpha", "abc", "expected a number"),
    ("bass", "alpha", "0", "out of range; allowed: float in (0.0, 1.0]"),
    ("bass", "alpha", "nan", "finite"),
    ("bass", "d", "1.5", "expected an integer"),
    ("bass", "bands", "fancy", "one of 'paper', 'code'"),
    ("bass", "box_threshold", "high", "expected float or 'auto'"),
    ("bass", "box_threshold", "1.5", "out of range"),
    ("bass", "tta_scales", "1,x", "every element: expected a number"),
    ("bass", "tta_flips", "h,diag", "not an allowed value"),
    ("watershed", "max_fit_patches", "0", ">= 1"),
])
def test_bad_values_name_key_value_and_what_is_allowed(method, key, value, phrase):
    with pytest.raises(OptionError) as exc:
        get_method(method)(**{key: value})
    msg = str(exc.value)
    assert f"{method}.{key}={value!r}" in msg and phrase in msg and "allowed:" in msg


def test_keywords_and_tuples_coerce_from_cli_strings():
    bass = get_method("bass")
    assert bass(box_threshold="auto").options["box_threshold"] == "auto"
    assert bass(box_threshold="0.38").options["box_threshold"] == 0.38
    assert bass(tta_scales="0.5;1.0").options["tta_scales"] == (0.5, 1.0)
    assert bass(weight_decay="1e-4").config()["weight_decay"] == 1e-4
    assert bass().config()["weight_decay"] is None  # "profile" is recorded as None, as before


def test_variants_keep_their_defaults_and_family_options():
    assert get_method("bass-nmh")().options["lrd"] is False
    assert get_method("bass-lrd")(alpha="0.3").options["alpha"] == 0.3
    assert get_method("bass-code")().options["tta_flips"] == ("h",)


def test_profiles_use_the_same_coercion():
    import benchmark.profiles as profiles

    assert not hasattr(profiles, "_coerce")
    p = profiles.PROFILES["smoke"]
    assert p.replace(iterations="12", amp="off", lr_steps="0.5").iterations == 12
    for field, value, phrase in (("iterations", "abc", "expected an integer"), ("iterations", "-5", ">= 1"),
                                 ("lr", "nan", "finite"), ("norm", "bn2", "one of")):
        with pytest.raises(OptionError) as exc:
            p.replace(**{field: value})
        assert f"profile.{field}={value!r}" in str(exc.value) and phrase in str(exc.value)


def test_older_plugin_with_a_defaults_dict_gets_inferred_types():
    class Legacy(Method):
        name = "legacy-test"
        defaults = {"k": 1, "scales": (1.0,), "flag": True}

        def fit(self, data, **kw):  # pragma: no cover - never trained here
            pass

        def predict(self, images):  # pragma: no cover
            return []

    m = Legacy(k="2", scales="0.5,2", flag="no")
    assert m.config() == {"k": 2, "scales": [0.5, 2.0], "flag": False}
    with pytest.raises(OptionError, match="unknown legacy-test option"):
        Legacy(other=1)


def test_option_helper_rejects_bad_variant_defaults():
    @dataclasses.dataclass(frozen=True)
    class Opts:
        x: int = option(1, "x", low=0)

    with pytest.raises(OptionError, match="V.x=-1"):
        options.with_defaults(Opts, "V", x=-1)
    assert options.with_defaults(Opts, "V", x=3)().x == 3


# ------------------------------------------------------------------------------ the grid, before any cell
def test_cell_options_are_canonical_and_keep_the_old_spelling():
    """``0.3`` and ``0.30`` are one cell; the common spelling stays what the key held before (raw CLI text),
    so cached cells keep their directory."""
    from benchmark.profiles import PROFILES
    from benchmark.runner import GridConfig, expand_cells

    cfg = GridConfig(methods=["bass"], datasets=["synthetic"], ratios=["1/8"], seeds=[0],
                     profile=PROFILES["smoke"], sweeps={"bass.alpha": ["0.3", "0.30", "0.5"]},
                     overrides={"bass.tta": "True"})
    cells = expand_cells(cfg, ["synthetic"])
    assert [c.options for c in cells] == [(("alpha", "0.3"), ("tta", "true")), (("alpha", "0.5"), ("tta", "true"))]


def _run(tmp_path: Path, *extra: str, methods: str = "bass", dry: bool = True) -> int:
    args = ["run", "--methods", methods, "--datasets", "synthetic", "--ratios", "1/8", "--quiet",
            "--out", str(tmp_path / "store"), *extra]
    return main(args + (["--dry-run"] if dry else []))


@pytest.mark.parametrize("extra,phrases", [
    (["--set", "bass.alpha=abc"], ["bass.alpha='abc'", "expected a number", "allowed:"]),
    (["--sweep", "bass.alpha=0.1,abc"], ["bass.alpha='abc'", "expected a number"]),
    (["--sweep", "bass.alpha="], ["--sweep bass.alpha=", "no value"]),
    (["--seeds", "-1"], ["seed -1", ">= 0"]),
    (["--seeds", ","], ["--seeds", "no value"]),
    (["--ratios", ","], ["--ratios", "no value"]),
    (["--set", "bass.gamma=1"], ["no option 'gamma'", "alpha"]),
    (["--set", "profile.iterations=abc"], ["profile.iterations='abc'", "expected an integer"]),
    (["--set", "profile.iterations=-5"], ["profile.iterations='-5'", ">= 1"]),
    (["--set", "profile.lr=nan"], ["profile.lr='nan'", "finite"]),
    (["--set", "bass.nmh=false", "--set", "bass.lrd=false"], ["method 'bass'", "NMH or LRD"]),
])
def test_bad_grid_input_exits_2_under_dry_run(tmp_path, capsys, extra, phrases):
    assert _run(tmp_path, *extra) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, (phrase, err)


def test_empty_methods_list_exits_2(tmp_path, capsys):
    assert _run(tmp_path, methods=",") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--methods" in err and "no value" in err


def test_maskrcnn_augment_nope_exits_2(tmp_path, capsys):
    assert _run(tmp_path, "--set", "maskrcnn.augment=nope", methods="maskrcnn") == EXIT_USAGE
    assert "maskrcnn.augment='nope'" in capsys.readouterr().err


def test_family_sweep_value_checked_on_every_variant(tmp_path, capsys):
    assert _run(tmp_path, "--sweep", "bass.d=2,2.5", methods="bass-nmh,bass") == EXIT_USAGE
    assert "bass.d='2.5'" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--sweep", "bass.alpha=0.1,abc"],
                                   ["--set", "bass.nmh=false", "--set", "bass.lrd=false"]])
def test_bass_error_comes_before_its_teacher_trains(tmp_path, capsys, extra):
    """Not a dry run: the grid stops before the maskrcnn teacher cell is even created."""
    assert _run(tmp_path, *extra, dry=False) == EXIT_USAGE
    store = tmp_path / "store"
    assert not store.exists() or not any(p.is_dir() for p in store.rglob("maskrcnn"))


def test_list_verbose_shows_declared_options(capsys):
    assert main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "Options of maskrcnn" in out and "augment" in out
    assert "Options of bass" in out and "alpha" in out and "in (0.0, 1.0]" in out


def test_list_json_carries_the_option_declarations(capsys):
    assert main(["list", "--json"]) == 0
    methods = {m["name"]: m for m in json.loads(capsys.readouterr().out)["methods"]}
    alpha = next(o for o in methods["bass"]["options"] if o["name"] == "alpha")
    assert alpha["default"] == 0.7 and alpha["type"] == "float" and alpha["help"]
