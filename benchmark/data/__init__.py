"""Datasets, patching, stitching and split manifests.

Entry points used by the runner and the CLI:

- :func:`open_dataset` turns a dataset spec (a registered name such as ``"monuseg"``, or ``"folder:PATH"``)
  into a :class:`~benchmark.data.base.Dataset`.
- :func:`manifest_for` returns the split manifest of a dataset: the committed ``splits/<name>.json`` when
  it exists (verified against the files on disk), else one made deterministically from the sorted file
  names and the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.data.base import Dataset, DatasetError, DatasetNotFoundError, default_data_root

REPO_ROOT = Path(__file__).resolve().parents[2]
SPLITS_DIR = REPO_ROOT / "splits"

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "open_dataset",
    "manifest_for",
    "SPLITS_DIR",
]


def open_dataset(spec: str, data_root: str | Path | None = None) -> Dataset:
    """Build the dataset named by ``spec``.

    Args:
        spec: a registered dataset name (``benchmark list``), or ``"folder:PATH"`` for the generic
            ``images/`` + ``labels/`` layout.
        data_root: the folder holding one sub-folder per dataset (``--data-root``); ``None`` falls
            back to ``$NUCLEI_SSL_BENCH_DATA`` and then ``~/.cache/nuclei-ssl-bench/data``.
    """
    if spec.startswith("folder:"):
        from benchmark.data.folder import dataset_from_spec

        ds = dataset_from_spec(spec, data_root)
        ds.name = dataset_key(spec)  # one name in run, report, splits and manifests
        return ds
    from benchmark.catalog import get_dataset_class

    cls = get_dataset_class(spec)
    folder = getattr(cls, "data_dir", None) or spec
    parent = Path(data_root).expanduser() if data_root is not None else default_data_root()
    return cls(root=parent / folder)


def dataset_key(spec: str) -> str:
    """A path- and table-friendly name for a dataset spec (``folder:/a/b`` → ``folder-b``).

    A ``folder:`` dataset is named ``folder-<name>``: ``<name>`` is the ``name`` of its
    ``dataset.toml`` (the spec's TOML file, or one beside ``images/``) if it sets one, else the folder's
    name. The same name is used by ``run``, ``report``, ``splits`` and the manifest.
    """
    if spec.startswith("folder:"):
        from benchmark.data.folder import folder_dataset_name

        return "folder-" + folder_dataset_name(Path(spec[len("folder:") :]).expanduser().resolve())
    return spec


def manifest_path(spec: str, split_recipe: str = "paper") -> Path:
    """``splits/<name>.json`` (``paper`` recipe) or ``splits/<name>.<recipe>.json``."""
    suffix = "" if split_recipe == "paper" else f".{split_recipe}"
    return SPLITS_DIR / f"{dataset_key(spec)}{suffix}.json"


def manifest_for(dataset: Dataset, spec: str, *, seed: int = 0, verify: bool = True,
                 split_recipe: str = "paper") -> dict[str, Any]:
    """The committed manifest of ``spec`` and ``split_recipe`` if there is one (verified); else the
    committed ``paper`` manifest relabeled by the recipe; else a freshly made one."""
    from benchmark.data import splits

    if split_recipe not in splits.LABELED_RECIPES:
        raise splits.ManifestError(
            f"--split-recipe {split_recipe!r}: use one of {', '.join(splits.LABELED_RECIPES)}")
    for path in dict.fromkeys((manifest_path(spec, split_recipe), manifest_path(spec))):
        if path.exists():
            manifest = splits.load_manifest(path)
            if verify:
                splits.verify_manifest(manifest, dataset)
            if splits.labeled_recipe_of(manifest) != split_recipe:
                manifest = splits.relabel(manifest, split_recipe)
            return manifest
    return splits.make_manifest(dataset, seed=seed, labeled_recipe=split_recipe)
