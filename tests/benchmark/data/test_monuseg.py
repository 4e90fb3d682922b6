"""MoNuSeg loader: real files from ../shared/datasets/monuseg plus layout variants built in tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from benchmark.data import io as dio
from benchmark.data.base import DatasetError, DatasetNotFoundError
from benchmark.data.monuseg import MoNuSegDataset, MoNuSegTestDataset

TRAIN = "MoNuSegTrainingData"
XML_STEMS = [
    "TCGA-21-5784-01Z-00-DX1", "TCGA-21-5786-01Z-00-DX1", "TCGA-50-5931-01Z-00-DX1", "TCGA-A7-A13E-01Z-00-DX1",
    "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-AR-A1AS-01Z-00-DX1", "TCGA-B0-5698-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1",
    "TCGA-B0-5711-01Z-00-DX1", "TCGA-CH-5767-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1", "TCGA-G9-6362-01Z-00-DX1",
    "TCGA-NH-A8F7-01A-01-TS1",
]


# ------------------------------------------------------------------------------------------ real data
def test_real_layout_and_annotation_sources(monuseg_root):
    ds = MoNuSegDataset(monuseg_root)
    names = ds.image_names()
    assert len(names) == 30 and names == sorted(names)
    kinds = {n: ds.index()[n].label.kind for n in names}
    assert sorted(n for n, k in kinds.items() if k == "aperio_xml") == XML_STEMS
    assert sum(k == "map" for k in kinds.values()) == 17
    test = MoNuSegTestDataset(monuseg_root)
    assert len(test.image_names()) == 14
    assert all(test.is_annotated(n) for n in test.image_names())
    assert not set(names) & set(test.image_names())


def test_real_region_counts_match_provenance(monuseg_root):
    """PROVENANCE.md: 13 training XMLs give 4,951 regions, 2 of them degenerate (< 3 vertices), and they
    are in TCGA-50-5931 and TCGA-E2-A1B5; TCGA-21-5784 has 398."""
    total, degenerate_in = 0, {}
    for stem in XML_STEMS:
        polys, deg = dio.read_aperio_xml(monuseg_root / TRAIN / "Annotations" / f"{stem}.xml")
        total += len(polys) + deg
        if deg:
            degenerate_in[stem] = deg
        if stem == "TCGA-21-5784-01Z-00-DX1":
            assert len(polys) == 398 and deg == 0
    assert total == 4951
    assert degenerate_in == {"TCGA-50-5931-01Z-00-DX1": 1, "TCGA-E2-A1B5-01Z-00-DX1": 1}
    for stem, n in (("TCGA-2Z-A9J9-01A-01-TS1", 575), ("TCGA-44-2665-01B-06-BS6", 818)):
        polys, deg = dio.read_aperio_xml(monuseg_root / "MoNuSegTestData" / f"{stem}.xml")
        assert len(polys) + deg == n


def test_real_all_images_are_1000x1000_rgb(monuseg_root):
    # header only (no decoding): every training and test TIFF is one 1000x1000x3 uint8 page
    files = sorted((monuseg_root / TRAIN / "Tissue_Images").glob("*.tif"))
    files += sorted((monuseg_root / "MoNuSegTestData").glob("*.tif"))
    assert len(files) == 44
    for f in files:
        with tifffile.TiffFile(f) as tif:
            page = tif.pages[0]
            assert page.shape == (1000, 1000, 3) and page.dtype == np.uint8, f.name


def test_real_load_xml_image(monuseg_root):
    ds = MoNuSegDataset(monuseg_root)
    rec = ds.load("TCGA-21-5784-01Z-00-DX1")
    assert rec.image.shape == (1000, 1000, 3) and rec.image.dtype == np.uint8
    assert rec.label.dtype == np.int32 and rec.label.shape == (1000, 1000)
    assert rec.label.max() == 398 and len(np.unique(rec.label)) == 399  # every region kept, ids 1..398
    assert "Annotations" in rec.source and "Tissue_Images" in rec.source
    # nuclei are darker than the rest (labels sit on the nuclei: pixel grid sanity)
    gray = rec.image.mean(-1)
    assert gray[rec.label > 0].mean() < gray[rec.label == 0].mean() - 30
    bg = MoNuSegDataset(monuseg_root, overlap="background").load("TCGA-21-5784-01Z-00-DX1")
    assert (bg.label > 0).sum() < (rec.label > 0).sum()  # overlapping pixels became background
    assert ds.label_fingerprint("TCGA-21-5784-01Z-00-DX1") != MoNuSegDataset(
        monuseg_root, overlap="background"
    ).label_fingerprint("TCGA-21-5784-01Z-00-DX1")


def test_real_load_instance_map_image(monuseg_root):
    ds = MoNuSegDataset(monuseg_root)
    rec = ds.load("TCGA-18-5592-01Z-00-DX1")
    assert rec.label.max() == 480  # PROVENANCE_LABELS.md
    assert "InstanceMaps" in rec.source
    only_xml = MoNuSegDataset(monuseg_root, label_source="xml")
    assert not only_xml.is_annotated("TCGA-18-5592-01Z-00-DX1")
    assert only_xml.load("TCGA-18-5592-01Z-00-DX1").label is None
    only_maps = MoNuSegDataset(monuseg_root, label_source="instance_map")
    assert not only_maps.is_annotated("TCGA-21-5784-01Z-00-DX1")


def test_real_degenerate_region_skipped_in_label(monuseg_root):
    ds = MoNuSegDataset(monuseg_root)
    # 445 regions, 1 degenerate -> 444 instances
    assert ds.load("TCGA-50-5931-01Z-00-DX1").label.max() == 444


def test_real_test_set_load(monuseg_root):
    test = MoNuSegTestDataset(monuseg_root)
    rec = test.load("TCGA-2Z-A9J9-01A-01-TS1")
    assert rec.image.shape == (1000, 1000, 3)
    assert 560 <= rec.label.max() <= 575  # a few fully-overlapped regions may vanish


def test_monuseg_test_root_fallback(monuseg_root):
    # "<data root>/monuseg-test" (what a name-based root gives) resolves to the shared monuseg folder
    ds = MoNuSegTestDataset(monuseg_root.parent / "monuseg-test")
    assert ds.root == monuseg_root and len(ds.image_names()) == 14


# ------------------------------------------------------------------------------------------ layouts
def _link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def test_official_zip_names(monuseg_root, tmp_path):
    """Official folder names with spaces ("MoNuSeg 2018 Training Data/Tissue Images") are accepted."""
    stems = ["TCGA-21-5784-01Z-00-DX1", "TCGA-18-5592-01Z-00-DX1"]
    base = tmp_path / "MoNuSeg 2018 Training Data"
    for s in stems:
        _link(monuseg_root / TRAIN / "Tissue_Images" / f"{s}.tif", base / "Tissue Images" / f"{s}.tif")
    _link(monuseg_root / TRAIN / "Annotations" / f"{stems[0]}.xml", base / "Annotations" / f"{stems[0]}.xml")
    ds = MoNuSegDataset(tmp_path)
    assert ds.image_names() == sorted(stems)
    assert ds.is_annotated(stems[0]) and not ds.is_annotated(stems[1])  # unannotated: unlabeled only
    assert ds.load(stems[1]).label is None
    # the root may also be the training folder itself
    assert MoNuSegDataset(base).image_names() == sorted(stems)


def test_missing_dataset_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as exc:
        MoNuSegDataset(tmp_path / "nowhere").image_names()
    msg = str(exc.value)
    assert "nowhere" in msg and "monuseg.grand-challenge.org" in msg and "Tissue Images" in msg
    assert "NUCLEI_SSL_BENCH_DATA" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="MoNuSegTrainingData"):
        MoNuSegDataset(tmp_path / "empty").image_names()
    assert not MoNuSegDataset(tmp_path / "empty").is_present()


def test_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEI_SSL_BENCH_DATA", str(tmp_path))
    assert MoNuSegDataset().root == tmp_path / "monuseg"
    assert MoNuSegTestDataset().root == tmp_path / "monuseg"


def test_synthetic_layout_xml_and_errors(tmp_path):
    img = np.full((40, 50, 3), 200, np.uint8)
    train = tmp_path / TRAIN
    (train / "Tissue_Images").mkdir(parents=True)
    (train / "Annotations").mkdir()
    tifffile.imwrite(train / "Tissue_Images" / "a.tif", img, photometric="rgb")
    (train / "Annotations" / "a.xml").write_text(
        '<Annotations><Annotation><Regions><Region Id="1"><Vertices>'
        '<Vertex X="2.5" Y="1.5"/><Vertex X="5.5" Y="1.5"/><Vertex X="5.5" Y="4.5"/><Vertex X="2.5" Y="4.5"/>'
        "</Vertices></Region></Regions></Annotation></Annotations>"
    )
    ds = MoNuSegDataset(tmp_path)
    lab = ds.load("a").label
    assert lab.shape == (40, 50) and lab.max() == 1
    assert np.array_equal(np.argwhere(lab).min(0), [1, 2]) and np.array_equal(np.argwhere(lab).max(0), [3, 4])
    # an orphan annotation names the file and the fix
    (train / "Annotations" / "b.xml").write_text("<Annotations/>")
    with pytest.raises(DatasetError, match=r"without a matching image: b\.xml"):
        MoNuSegDataset(tmp_path).image_names()
    (train / "Annotations" / "b.xml").unlink()
    # a malformed XML fails at load with the file name
    (train / "Annotations" / "a.xml").write_text("<Annotations><Region>")
    with pytest.raises(DatasetError, match=r"a\.xml.*malformed"):
        MoNuSegDataset(tmp_path).load("a")
    # an instance map of the wrong size is refused
    (train / "Annotations" / "a.xml").unlink()
    (train / "InstanceMaps").mkdir()
    tifffile.imwrite(train / "InstanceMaps" / "a.tif", np.zeros((41, 50), np.int32))
    with pytest.raises(DatasetError, match=r"InstanceMaps/a\.tif.*41x50.*40x50"):
        MoNuSegDataset(tmp_path).load("a")
    with pytest.raises(DatasetError, match="no image named"):
        MoNuSegDataset(tmp_path).load("zzz")
