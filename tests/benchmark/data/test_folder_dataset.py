"""Generic folder datasets (folder:PATH, TOML), DigestPath, in-memory datasets and dataset specs."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from benchmark.data.base import DatasetError, DatasetNotFoundError
from benchmark.data.digestpath import DigestPathDataset
from benchmark.data.folder import FolderDataset, InMemoryDataset, dataset_from_spec


def _make(root, n=3, unlabeled=("c",), size=(40, 50)):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    names = "abcdefghij"[:n]
    for i, stem in enumerate(names):
        img = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        ext = (".png", ".tif", ".jpg")[i % 3]
        if ext == ".tif":
            tifffile.imwrite(root / "images" / f"{stem}{ext}", img, photometric="rgb")
        else:
            Image.fromarray(img).save(root / "images" / f"{stem}{ext}")
        if stem in unlabeled:
            continue
        lab = np.zeros(size, np.int32)
        lab[5:10, 5:10] = 3
        lab[20:30, 20:30] = 8
        lext = (".tif", ".png", ".npy")[i % 3]
        if lext == ".npy":
            np.save(root / "labels" / f"{stem}.npy", lab)
        elif lext == ".png":
            Image.fromarray(lab.astype(np.uint16)).save(root / "labels" / f"{stem}.png")
        else:
            tifffile.imwrite(root / "labels" / f"{stem}.tif", lab)
    return names


def test_folder_basic(tmp_path):
    root = tmp_path / "mydata"
    _make(root, n=3, unlabeled=("b",))
    ds = FolderDataset(root)
    assert ds.name == "mydata"
    assert ds.image_names() == ["a", "b", "c"]
    a = ds.load("a")
    assert a.image.shape == (40, 50, 3) and a.label.dtype == np.int32 and a.label.max() == 2  # gaps relabelled
    assert ds.load("b").label is None and not ds.is_annotated("b")
    c = ds.load("c")
    assert c.label.max() == 2  # from .png (uint16)
    assert len(ds.fingerprint("a")) == 64 and ds.fingerprint("a") != ds.fingerprint("c")
    assert ds.label_fingerprint("b") is None and ds.label_fingerprint("a") is not None


def test_folder_errors(tmp_path):
    root = tmp_path / "d"
    _make(root, n=2)
    # orphan label
    np.save(root / "labels" / "zzz.npy", np.zeros((2, 2), np.int32))
    with pytest.raises(DatasetError, match=r"zzz\.npy.*rename or remove"):
        FolderDataset(root).image_names()
    (root / "labels" / "zzz.npy").unlink()
    # duplicate stems
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / "a.jpg")
    with pytest.raises(DatasetError, match="share the name 'a'"):
        FolderDataset(root).image_names()
    (root / "images" / "a.jpg").unlink()
    # label size differs from the image
    np.save(root / "labels" / "b.npy", np.zeros((41, 50), np.int32))
    (root / "labels" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"b\.npy.*41x50.*40x50"):
        FolderDataset(root).load("b")
    # negative ids
    np.save(root / "labels" / "b.npy", np.full((40, 50), -1, np.int32))
    with pytest.raises(DatasetError, match="negative"):
        FolderDataset(root).load("b")


def test_folder_empty_and_missing(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"holds no images"):
        FolderDataset(tmp_path / "empty").image_names()
    with pytest.raises(DatasetNotFoundError, match=r"none does not exist(.|\n)*folder:PATH"):
        FolderDataset(tmp_path / "none").image_names()
    assert not FolderDataset(tmp_path / "none").is_present()


def test_folder_grayscale_and_rgba_images(tmp_path):
    root = tmp_path / "g"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(root / "images" / "gray.png")
    Image.fromarray(np.full((8, 8, 4), 9, np.uint8), "RGBA").save(root / "images" / "rgba.png")
    ds = FolderDataset(root)
    assert ds.load("gray").image.shape == (8, 8, 3)
    assert ds.load("rgba").image.shape == (8, 8, 3)


def test_corrupt_image_in_folder(tmp_path):
    root = tmp_path / "c"
    _make(root, n=2)
    (root / "images" / "b.tif").write_bytes(b"II*\x00" + b"\x00" * 10)
    with pytest.raises(DatasetError, match=r"b\.tif.*(corrupt|truncated)"):
        FolderDataset(root).load("b")


def test_toml_dataset(tmp_path):
    root = tmp_path / "t"
    _make(root, n=2)
    (root / "images").rename(root / "imgs")
    (root / "ds.toml").write_text('name = "My Nuclei"\nimages = "imgs"\nsplit_recipe = "8:1:1"\n')
    ds = FolderDataset(root / "ds.toml")
    assert ds.name == "my-nuclei" and ds.split_recipe == "8:1:1"
    assert ds.image_names() == ["a", "b"]
    (root / "bad.toml").write_text('name = "x"\nunknown = "y"\n')
    with pytest.raises(DatasetError, match="unknown key"):
        FolderDataset(root / "bad.toml")
    (root / "broken.toml").write_text('name = "x\n')
    with pytest.raises(DatasetError, match="invalid TOML"):
        FolderDataset(root / "broken.toml")


def test_dataset_from_spec(tmp_path, monkeypatch):
    root = tmp_path / "data" / "mine"
    _make(root, n=2)
    ds = dataset_from_spec(f"folder:{root}")
    assert isinstance(ds, FolderDataset) and ds.image_names() == ["a", "b"]
    # relative path: found under the data root
    assert dataset_from_spec("folder:mine", tmp_path / "data").root == root
    (root / "d.toml").write_text('name = "viatoml"\n')
    assert dataset_from_spec(str(root / "d.toml")).name == "viatoml"
    with pytest.raises(DatasetNotFoundError, match="not found"):
        dataset_from_spec("folder:does-not-exist", tmp_path)
    with pytest.raises(DatasetError, match="needs a path"):
        dataset_from_spec("folder:")
    # registered names go through the catalog with root = data_root / name
    monkeypatch.delenv("NUCLEI_SSL_BENCH_DATA", raising=False)
    syn = dataset_from_spec("synthetic", tmp_path)
    assert syn.name == "synthetic"


def test_digestpath_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEI_SSL_BENCH_DATA", str(tmp_path))
    ds = DigestPathDataset()
    assert ds.name == "digestpath" and ds.root == tmp_path / "digestpath"
    with pytest.raises(DatasetNotFoundError) as exc:
        ds.image_names()
    assert "labels/<stem>" in str(exc.value) and "digestpath" in str(exc.value)
    _make(tmp_path / "digestpath", n=2)
    ds = DigestPathDataset()
    assert ds.name == "digestpath" and ds.image_names() == ["a", "b"]


def test_in_memory_dataset():
    img = np.zeros((10, 10), np.uint8)  # grayscale -> RGB
    lab = np.zeros((10, 10), np.int64)
    lab[2:4, 2:4] = 4
    ds = InMemoryDataset({"x": (img, lab), "y": (img, None)}, name="mem")
    assert ds.image_names() == ["x", "y"]
    assert ds.load("x").image.shape == (10, 10, 3) and ds.load("x").label.max() == 1
    assert ds.fingerprint("x") == ds.fingerprint("y")  # same pixels
    assert ds.label_fingerprint("y") is None
    with pytest.raises(DatasetError, match="label"):
        InMemoryDataset({"x": (img, np.zeros((9, 10), np.int32))})


def test_folder_dataset_has_one_name_in_run_manifest_and_splits(tmp_path):
    """Issue 12 row 15: ``folder-<name>`` everywhere (it was ``<name>`` in ``splits show``)."""
    from benchmark.data import dataset_key, manifest_for, open_dataset

    root = tmp_path / "Mine"
    _make(root, n=4)
    spec = f"folder:{root}"
    ds = open_dataset(spec)
    assert dataset_key(spec) == ds.name == "folder-mine"
    assert manifest_for(ds, spec)["dataset"] == "folder-mine"


def test_dataset_toml_beside_the_folders_is_read(tmp_path):
    """Issue 12 row 11: ``folder:PATH`` with ``PATH/dataset.toml`` reads it (it was ignored)."""
    from benchmark.data import dataset_key, open_dataset

    root = tmp_path / "d"
    _make(root, n=3)
    (root / "images").rename(root / "imgs")
    (root / "dataset.toml").write_text('name = "Lab"\nimages = "imgs"\nsplit_recipe = "1:1:1"\n')
    ds = open_dataset(f"folder:{root}")
    assert ds.image_names() == ["a", "b", "c"] and ds.split_recipe == "1:1:1"
    assert ds.name == dataset_key(f"folder:{root}") == "folder-lab"
    (root / "dataset.toml").write_text("images = 3\n")
    with pytest.raises(DatasetError, match="dataset.toml"):
        open_dataset(f"folder:{root}")
