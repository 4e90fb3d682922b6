"""CryoNuSeg loader: the real pilot ROI bundles and the official release layout (built in tmp_path)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import roifile
import tifffile

from benchmark.data import io as dio
from benchmark.data.base import DatasetError, DatasetNotFoundError
from benchmark.data.cryonuseg import CryoNuSegDataset


# ------------------------------------------------------------------------------------------ real pilot
def test_pilot_bundles(shared_datasets):
    ds = CryoNuSegDataset(shared_datasets / "cryonuseg_pilot")
    assert ds.image_names() == ["TCGA-DE-A4MA", "TCGA-S4-A8RO"]
    a = ds.load("TCGA-DE-A4MA")
    assert a.image.shape == (512, 512, 3) and a.image.dtype == np.uint8
    assert a.label.max() == 59  # 59 freehand ROIs (PROVENANCE.md)
    rows, cols = np.nonzero(a.label)
    # the annotation covers only rows 201-499, columns 1-310 (PROVENANCE.md, ImageJ coordinates)
    assert rows.min() >= 200 and rows.max() <= 499 and cols.min() >= 0 and cols.max() <= 310
    assert "TCGA-DE-A4MA.zip!" in a.source and "RoiSet.zip" in a.source
    b = ds.load("TCGA-S4-A8RO")
    # 117 ROIs, two of which ('0280-0058' and '0280-0058-1') are the same polygon: 116 nuclei
    raw = zipfile.ZipFile(shared_datasets / "cryonuseg_pilot" / "dataset" / "TCGA-S4-A8RO.zip").read("RoiSet.zip")
    polys, skipped = dio.read_imagej_roi_zip(raw)
    assert len(polys) == 117 and skipped == 0
    assert b.label.max() == 116
    # nuclei are darker than their surroundings (pixel grid sanity)
    gray = b.image.mean(-1)
    assert gray[b.label > 0].mean() < gray[b.label == 0].mean()
    # fingerprint = SHA-256 of the TIFF member's bytes, stable
    assert ds.fingerprint("TCGA-S4-A8RO") == CryoNuSegDataset(shared_datasets / "cryonuseg_pilot").fingerprint(
        "TCGA-S4-A8RO"
    )


def test_pilot_unzipped_folder(shared_datasets, tmp_path):
    with zipfile.ZipFile(shared_datasets / "cryonuseg_pilot" / "dataset" / "TCGA-DE-A4MA.zip") as zf:
        zf.extractall(tmp_path / "TCGA-DE-A4MA")
    ds = CryoNuSegDataset(tmp_path)
    assert ds.image_names() == ["TCGA-DE-A4MA"]
    assert ds.load("TCGA-DE-A4MA").label.max() == 59


# ------------------------------------------------------------------------------------------ official layout
def _write_roi_zip(path, polygons_xy):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for i, xy in enumerate(polygons_xy):
            roi = roifile.ImagejRoi.frompoints(np.asarray(xy, dtype=np.float32))
            roi.roitype = roifile.ROI_TYPE.POLYGON
            zf.writestr(f"{i:04d}.roi", roi.tobytes())


def _official(tmp_path):
    root = tmp_path / "cryonuseg"
    img = np.full((64, 64, 3), 180, np.uint8)
    (root / "tissue images").mkdir(parents=True)
    for stem in ("Human_A_01", "Human_B_01", "Human_C_01"):
        tifffile.imwrite(root / "tissue images" / f"{stem}.tif", img, photometric="rgb")
    b1 = root / "Annotator 1 (biologist)"
    lab = np.zeros((64, 64), np.uint8)
    lab[2:6, 2:6] = 5
    lab[10:20, 10:20] = 9
    (b1 / "label masks modify").mkdir(parents=True)
    tifffile.imwrite(b1 / "label masks modify" / "Human_A_01.tif", lab)
    _write_roi_zip(b1 / "Imagj_zips" / "Human_B_01.zip", [[(2, 3), (6, 3), (6, 7), (2, 7)]])
    # annotator b3 is nested twice, as in the release
    b3 = root / "Annotator 2 (bioinformatician)" / "Annotator 2 (bioinformatician)" / "label masks modify"
    b3.mkdir(parents=True)
    lab3 = np.zeros((64, 64), np.uint8)
    lab3[30:40, 30:40] = 1
    tifffile.imwrite(b3 / "Human_C_01.tif", lab3)
    return root


def test_official_layout_annotators(tmp_path):
    root = _official(tmp_path)
    ds = CryoNuSegDataset(root)
    assert ds.image_names() == ["Human_A_01", "Human_B_01", "Human_C_01"]
    a = ds.load("Human_A_01")
    assert a.label.max() == 2 and a.label[3, 3] == 1 and a.label[15, 15] == 2  # relabelled 5,9 -> 1,2
    b = ds.load("Human_B_01")
    assert b.label.max() == 1
    assert sorted(set(np.nonzero(b.label)[0].tolist())) == [3, 4, 5, 6]  # ImageJ pixel rule
    assert ds.load("Human_C_01").label is None  # not annotated by b1: unlabeled only
    b3 = CryoNuSegDataset(root, annotator="b3")
    assert b3.is_annotated("Human_C_01") and not b3.is_annotated("Human_A_01")
    with pytest.raises(ValueError, match="annotator"):
        CryoNuSegDataset(root, annotator="b9")


def test_official_layout_bad_label(tmp_path):
    root = _official(tmp_path)
    tifffile.imwrite(
        root / "Annotator 1 (biologist)" / "label masks modify" / "Human_A_01.tif", np.zeros((32, 64), np.uint8)
    )
    with pytest.raises(DatasetError, match=r"Human_A_01\.tif.*32x64.*64x64"):
        CryoNuSegDataset(root).load("Human_A_01")


def test_missing_and_empty(tmp_path):
    with pytest.raises(DatasetNotFoundError) as exc:
        CryoNuSegDataset(tmp_path / "none").image_names()
    assert "kaggle" in str(exc.value) and "tissue images" in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="tissue images"):
        CryoNuSegDataset(tmp_path / "empty").image_names()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.zip").write_bytes(b"PK garbage")
    with pytest.raises(DatasetError, match=r"x\.zip"):
        CryoNuSegDataset(tmp_path / "bad").image_names()
