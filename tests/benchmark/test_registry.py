"""The generic registry and the method/dataset catalogs, including real entry points."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmark.api import Method
from benchmark.catalog import BUILTIN_DATASETS, BUILTIN_METHODS, METHODS
from benchmark.registry import (
    PluginLoadError,
    Registry,
    RegistryConflict,
    UnknownNameError,
    load_target,
)


def test_lazy_target_is_not_imported_until_get(tmp_path, monkeypatch):
    (tmp_path / "lazy_mod_x.py").write_text("VALUE = 41 + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing")
    reg.register("x", "lazy_mod_x:VALUE")
    assert "lazy_mod_x" not in sys.modules
    assert reg.names() == ["x"]
    assert reg.get("x") == 42
    assert "lazy_mod_x" in sys.modules


def test_same_target_twice_is_fine_different_target_conflicts():
    reg = Registry("method")
    reg.register("a", "os:path", dist="d1")
    reg.register("a", "os:path", dist="d1-editable")  # same thing seen twice
    with pytest.raises(RegistryConflict) as exc:
        reg.register("a", "os:sep", dist="other-dist")
    msg = str(exc.value)
    assert "d1" in msg and "other-dist" in msg and "os:path" in msg and "os:sep" in msg


def test_unknown_name_lists_available_and_closest():
    reg = Registry("method")
    for n in ("maskrcnn", "bass", "watershed"):
        reg.register(n, "os:path")
    with pytest.raises(UnknownNameError) as exc:
        reg.get("mask-rcnn")
    msg = str(exc.value)
    assert "Did you mean 'maskrcnn'" in msg
    assert "bass, maskrcnn, watershed" in msg


def test_broken_target_reports_name_and_dist_but_describe_survives():
    reg = Registry("method")
    reg.register("good", "os:path")
    reg.register("bad", "no_such_module_xyz:Thing", dist="broken-plugin")
    with pytest.raises(PluginLoadError) as exc:
        reg.get("bad")
    assert "'bad'" in str(exc.value) and "broken-plugin" in str(exc.value)
    rows = {name: (entry, obj) for name, entry, obj in reg.describe()}
    assert rows["good"][1] is not None
    assert rows["bad"][1] is None and "ModuleNotFoundError" in rows["bad"][0].error


def test_base_class_is_enforced():
    reg = Registry("method", base_cls=Method)
    reg.register("notamethod", "os:path")
    with pytest.raises(PluginLoadError, match="not a subclass"):
        reg.get("notamethod")


def test_load_target_requires_colon():
    with pytest.raises(ValueError, match="module:object"):
        load_target("os.path")


def test_builtins_match_pyproject_entry_points():
    """The in-code built-ins and the declared entry points must be the same lists."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    eps = data["project"]["entry-points"]
    assert eps["nuclei_ssl_bench.methods"] == BUILTIN_METHODS
    assert eps["nuclei_ssl_bench.datasets"] == BUILTIN_DATASETS


def test_every_builtin_method_loads_and_is_described():
    for name in BUILTIN_METHODS:
        cls = METHODS.get(name)
        assert issubclass(cls, Method)
        assert cls.name == name, f"{cls} declares name {cls.name!r} but is registered as {name!r}"
        assert cls.description


def test_external_plugin_through_a_real_entry_point(tmp_path, monkeypatch, dist_writer):
    """A third-party distribution on sys.path is discovered, loaded and conflicts are caught."""
    dist_writer(
        tmp_path,
        "ext-plugin",
        "nuclei_ssl_bench.methods",
        {"ext-thresh": "ext_plugin_mod:ExtMethod"},
        {"ext_plugin_mod": """
            from benchmark.api import Method
            class ExtMethod(Method):
                name = "ext-thresh"
                description = "external test plugin"
                def fit(self, data, **kw): pass
                def predict(self, images): return []
        """},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method", group="nuclei_ssl_bench.methods", base_cls=Method)
    names = reg.names()
    assert "ext-thresh" in names
    assert reg.entry("ext-thresh").dist == "ext-plugin"
    assert reg.get("ext-thresh").description == "external test plugin"


def test_two_distributions_claiming_one_name_raise(tmp_path, monkeypatch, dist_writer):
    for dist in ("plugin-one", "plugin-two"):
        dist_writer(tmp_path / dist, dist, "nuclei_ssl_bench.methods",
                  {"clash": f"{dist.replace('-', '_')}_mod:M"}, {})
        monkeypatch.syspath_prepend(str(tmp_path / dist))
    reg = Registry("method", group="nuclei_ssl_bench.methods")
    with pytest.raises(RegistryConflict) as exc:
        reg.names()
    assert "plugin-one" in str(exc.value) and "plugin-two" in str(exc.value)
