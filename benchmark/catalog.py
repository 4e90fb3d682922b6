"""The two registries of the suite: methods and datasets.

Built-ins are registered here as lazy ``"module:object"`` strings (so a plain checkout finds them) *and*
declared as entry points in ``pyproject.toml`` (the same mechanism third-party plugins use). Nothing is
imported until a name is looked up with ``get``.
"""

from __future__ import annotations

from benchmark.api import Method
from benchmark.registry import Registry

METHOD_GROUP = "nuclei_ssl_bench.methods"
DATASET_GROUP = "nuclei_ssl_bench.datasets"

#: name -> lazy target of every built-in method (kept in sync with pyproject.toml by a test).
BUILTIN_METHODS: dict[str, str] = {
    "watershed": "methods.watershed.method:WatershedMethod",
    "maskrcnn": "methods.maskrcnn.method:MaskRCNNMethod",
    "bass": "methods.bass.method:BassMethod",
    "bass-nmh": "methods.bass.method:BassNMHMethod",
    "bass-lrd": "methods.bass.method:BassLRDMethod",
    "bass-nmh-lrd": "methods.bass.method:BassNMHLRDMethod",
    "bass-code": "methods.bass.method:BassCodeMethod",
    "noisyboundary": "methods.noisyboundary.method:NoisyBoundaryMethod",
    "mmt-psm": "methods.mmt_psm.method:MMTPSMMethod",
    "pg-fanet": "methods.pg_fanet.method:PGFANetMethod",
    "pointwssis": "methods.pointwssis.method:PointWSSISMethod",
    "shapeprop": "methods.shapeprop.method:ShapePropMethod",
}

#: name -> lazy target of every built-in dataset (kept in sync with pyproject.toml by a test).
BUILTIN_DATASETS: dict[str, str] = {
    "synthetic": "benchmark.data.synthetic:SyntheticDataset",
    "monuseg": "benchmark.data.monuseg:MoNuSegDataset",
    "monuseg-test": "benchmark.data.monuseg:MoNuSegTestDataset",
    "cryonuseg": "benchmark.data.cryonuseg:CryoNuSegDataset",
    "digestpath": "benchmark.data.digestpath:DigestPathDataset",
}

#: the datasets of the paper, what ``--datasets all`` means.
PAPER_DATASETS = ("monuseg", "cryonuseg", "digestpath")

METHODS: Registry[type[Method]] = Registry("method", group=METHOD_GROUP, base_cls=Method)
DATASETS: Registry[type] = Registry("dataset", group=DATASET_GROUP)

for _name, _target in BUILTIN_METHODS.items():
    METHODS.register(_name, _target)
for _name, _target in BUILTIN_DATASETS.items():
    DATASETS.register(_name, _target)


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name`` (see :meth:`Registry.get`)."""
    return METHODS.get(name)


def get_dataset_class(name: str) -> type:
    """The dataset class registered as ``name``."""
    return DATASETS.get(name)
