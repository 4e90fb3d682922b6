"""Readers and rasterisers of benchmark.data.io: canonical forms and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from benchmark.data import io as dio
from benchmark.data.base import DatasetError, DataWarning


def _rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------ images
def test_read_image_png_tif_jpg(tmp_path):
    img = _rgb()
    Image.fromarray(img).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", img, photometric="rgb", compression="zlib")
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    assert np.array_equal(dio.read_image(tmp_path / "a.png"), img)
    assert np.array_equal(dio.read_image(tmp_path / "a.tif"), img)
    jpg = dio.read_image(tmp_path / "a.jpg")
    assert jpg.shape == img.shape and jpg.dtype == np.uint8


def test_rgba_drops_alpha(tmp_path):
    img = _rgb()
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = dio.read_image(tmp_path / "a.png")
    assert out.shape == img.shape
    assert np.array_equal(out, img)


def test_grayscale_replicated(tmp_path):
    g = np.arange(600, dtype=np.uint8).reshape(20, 30)
    Image.fromarray(g).save(tmp_path / "g.png")
    out = dio.read_image(tmp_path / "g.png")
    assert out.shape == (20, 30, 3)
    assert all(np.array_equal(out[..., c], g) for c in range(3))


def test_channel_first_tiff(tmp_path):
    img = _rgb()
    tifffile.imwrite(tmp_path / "cf.tif", np.moveaxis(img, -1, 0), photometric="minisblack", planarconfig="separate")
    assert np.array_equal(dio.read_image(tmp_path / "cf.tif"), img)


def test_uint16_small_values_cast_large_refused(tmp_path):
    ok = _rgb().astype(np.uint16)
    tifffile.imwrite(tmp_path / "ok.tif", ok, photometric="rgb")
    assert np.array_equal(dio.read_image(tmp_path / "ok.tif"), ok.astype(np.uint8))
    big = ok * 200
    tifffile.imwrite(tmp_path / "big.tif", big, photometric="rgb")
    with pytest.raises(DatasetError, match=r"big\.tif.*uint16.*convert"):
        dio.read_image(tmp_path / "big.tif")


def test_float_image_refused(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((5, 5, 3), np.float32))
    with pytest.raises(DatasetError, match="dtype"):
        dio.to_rgb_uint8(np.load(tmp_path / "f.npy"), "f.npy")


def test_corrupt_and_truncated_tiff(tmp_path):
    img = _rgb(200, 200)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, img, photometric="rgb", compression="zlib")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a tiff at all" * 10)
    for path in (trunc, garbage):
        with pytest.raises(DatasetError, match=rf"{path.name}.*(corrupt|truncated)"):
            dio.read_image(path)


def test_truncated_uncompressed_tiff(tmp_path):
    # no compression: a short strip must still be reported, not silently zero-filled
    img = _rgb(300, 300)
    good = tmp_path / "raw.tif"
    tifffile.imwrite(good, img, photometric="rgb")
    trunc = tmp_path / "rawtrunc.tif"
    trunc.write_bytes(good.read_bytes()[:-50_000])
    with pytest.raises(DatasetError, match="rawtrunc.tif"):
        dio.read_image(trunc)


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        dio.read_image(tmp_path / "nope.png")
    (tmp_path / "x.bmpx").write_bytes(b"0")
    with pytest.raises(DatasetError, match="unsupported"):
        dio.read_image(tmp_path / "x.bmpx")


# ------------------------------------------------------------------------------------------ labels
def test_label_gaps_relabelled_in_order(tmp_path):
    lab = np.zeros((10, 10), np.uint16)
    lab[0:2, 0:2] = 7
    lab[5:7, 5:7] = 3
    lab[8:10, 0:2] = 250
    tifffile.imwrite(tmp_path / "l.tif", lab)
    out = dio.read_label(tmp_path / "l.tif")
    assert out.dtype == np.int32
    assert set(np.unique(out)) == {0, 1, 2, 3}
    assert out[5, 5] == 1 and out[0, 0] == 2 and out[9, 0] == 3  # order of the source ids kept


def test_label_negative_refused(tmp_path):
    lab = np.zeros((4, 4), np.int32)
    lab[0, 0] = -1
    np.save(tmp_path / "neg.npy", lab)
    with pytest.raises(DatasetError, match=r"neg\.npy.*negative"):
        dio.read_label(tmp_path / "neg.npy")


def test_label_shape_mismatch(tmp_path):
    np.save(tmp_path / "l.npy", np.zeros((10, 12), np.int32))
    with pytest.raises(DatasetError, match=r"l\.npy.*10x12.*20x30"):
        dio.read_label(tmp_path / "l.npy", expected_shape=(20, 30))


def test_label_float_and_rgb(tmp_path):
    np.save(tmp_path / "fi.npy", np.array([[0.0, 2.0], [2.0, 5.0]]))
    assert dio.read_label(tmp_path / "fi.npy").max() == 2
    np.save(tmp_path / "ff.npy", np.array([[0.0, 0.5]]))
    with pytest.raises(DatasetError, match="non-integer"):
        dio.read_label(tmp_path / "ff.npy")
    Image.fromarray(_rgb()).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match="single-channel"):
        dio.read_label(tmp_path / "rgb.png")


def test_relabel_sequential_identity_and_empty():
    z = np.zeros((3, 3), np.int32)
    assert dio.relabel_sequential(z).max() == 0
    a = np.array([[0, 1], [2, 2]], np.int64)
    out = dio.relabel_sequential(a)
    assert out.dtype == np.int32 and np.array_equal(out, a)


# ------------------------------------------------------------------------------------------ polygons
def test_rasterize_overlap_rules_and_clipping():
    sq1 = np.array([[0, 0], [0, 5], [5, 5], [5, 0]], float)  # rows/cols 0..5
    sq2 = sq1 + 3  # overlaps sq1 in rows/cols 3..5
    outside = sq1 + 100
    later = dio.rasterize_polygons([sq1, sq2, outside], (10, 10))
    assert later.max() == 2  # the polygon outside the image gets no id
    assert later[4, 4] == 2 and later[0, 0] == 1
    assert (later == 1).sum() == 36 - 9
    bg = dio.rasterize_polygons([sq1, sq2], (10, 10), overlap="background")
    assert bg[4, 4] == 0 and bg[0, 0] == 1 and bg[7, 7] == 2
    clipped = dio.rasterize_polygons([np.array([[-5, -5], [-5, 3], [3, 3], [3, -5]], float)], (10, 10))
    assert (clipped == 1).sum() == 16
    with pytest.raises(ValueError):
        dio.rasterize_polygons([sq1], (10, 10), overlap="first")


def test_rasterize_fully_covered_polygon_vanishes():
    small = np.array([[2, 2], [2, 3], [3, 3], [3, 2]], float)
    big = np.array([[0, 0], [0, 8], [8, 8], [8, 0]], float)
    out = dio.rasterize_polygons([small, big], (10, 10))
    assert out.max() == 1 and (out == 1).sum() == 81


def _xml(regions: list[list[tuple[float, float]]]) -> str:
    body = []
    for i, verts in enumerate(regions, 1):
        vs = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in verts)
        body.append(f'<Region Id="{i}"><Attributes/><Vertices>{vs}</Vertices></Region>')
    return (
        '<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>'
        '<RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region"/></RegionAttributeHeaders>'
        + "".join(body)
        + "</Regions></Annotation></Annotations>"
    )


def test_aperio_pixel_convention_matches_matlab_poly2mask(tmp_path):
    """A square with 1-based vertices X in [2.5, 5.5], Y in [1.5, 4.5]: MATLAB poly2mask fills 1-based
    columns 3..5 and rows 2..4, i.e. 0-based columns 2..4 and rows 1..3. The suite's (Y-1, X-1) rule must
    give exactly that (plain (Y, X) would be one pixel down-right)."""
    path = tmp_path / "a.xml"
    path.write_text(_xml([[(2.5, 1.5), (5.5, 1.5), (5.5, 4.5), (2.5, 4.5)]]))
    polys, degenerate = dio.read_aperio_xml(path)
    assert degenerate == 0 and len(polys) == 1
    lab = dio.rasterize_polygons(dio.aperio_to_pixel_polygons(polys), (8, 8))
    rows, cols = np.nonzero(lab)
    assert sorted(set(rows.tolist())) == [1, 2, 3]
    assert sorted(set(cols.tolist())) == [2, 3, 4]


def test_aperio_degenerate_regions_skipped(tmp_path):
    path = tmp_path / "d.xml"
    path.write_text(_xml([[(1, 1), (2, 2)], [(1, 1), (4, 1), (4, 4)], [(3, 3)]]))
    polys, degenerate = dio.read_aperio_xml(path)
    assert len(polys) == 1 and degenerate == 2


def test_aperio_malformed_and_entity_xml(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text(_xml([[(1, 1), (4, 1), (4, 4)]])[:-30])
    with pytest.raises(DatasetError, match=r"bad\.xml.*malformed"):
        dio.read_aperio_xml(bad)
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        "<Annotations><Annotation><Regions><Region><Vertices>"
        '<Vertex X="&lol2;" Y="1"/></Vertices></Region></Regions></Annotation></Annotations>'
    )
    with pytest.raises(DatasetError, match=r"bomb\.xml.*refused"):
        dio.read_aperio_xml(bomb)
    other = tmp_path / "other.xml"
    other.write_text("<svg></svg>")
    with pytest.raises(DatasetError, match="Annotations"):
        dio.read_aperio_xml(other)
    nonnum = tmp_path / "nonnum.xml"
    nonnum.write_text(_xml([[("a", 1), (4, 1), (4, 4)]]))
    with pytest.raises(DatasetError, match="numeric"):
        dio.read_aperio_xml(nonnum)


def test_aperio_gz(tmp_path):
    import gzip

    path = tmp_path / "a.xml.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(_xml([[(1, 1), (4, 1), (4, 4)], [(5, 5), (9, 5), (9, 9)]]))
    polys, _ = dio.read_aperio_xml(path)
    assert len(polys) == 2


# ------------------------------------------------------------------------------------------ ImageJ ROIs
def _roi_zip(path, polygons_xy):
    import zipfile

    import roifile

    with zipfile.ZipFile(path, "w") as zf:
        for i, xy in enumerate(polygons_xy):
            roi = roifile.ImagejRoi.frompoints(np.asarray(xy, dtype=np.float32))
            roi.roitype = roifile.ROI_TYPE.POLYGON
            roi.name = f"r{i:03d}"
            zf.writestr(f"r{i:03d}.roi", roi.tobytes())


def test_imagej_roi_pixel_rule(tmp_path):
    """ImageJ fills pixel (x, y) iff its centre (x+.5, y+.5) is inside: a polygon with corners x 2..6,
    y 3..7 covers columns 2..5 and rows 3..6."""
    _roi_zip(tmp_path / "RoiSet.zip", [[(2, 3), (6, 3), (6, 7), (2, 7)]])
    polys, skipped = dio.read_imagej_roi_zip(tmp_path / "RoiSet.zip")
    assert skipped == 0 and len(polys) == 1
    lab = dio.rasterize_polygons(polys, (10, 10))
    rows, cols = np.nonzero(lab)
    assert sorted(set(rows.tolist())) == [3, 4, 5, 6]
    assert sorted(set(cols.tolist())) == [2, 3, 4, 5]


def test_imagej_roi_bad_zip(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=r"x\.zip"):
        dio.read_imagej_roi_zip(tmp_path / "x.zip")
    import zipfile

    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(DatasetError, match="no .roi"):
        dio.read_imagej_roi_zip(tmp_path / "empty.zip")


def test_aperio_doctype_without_entities_is_refused(tmp_path):
    """Issue 12 row 9: the docs say DTDs are refused; a bare <!DOCTYPE> used to be accepted."""
    path = tmp_path / "dtd.xml"
    path.write_text('<?xml version="1.0"?><!DOCTYPE Annotations>' + _xml([[(1, 1), (4, 1), (4, 4)]]))
    with pytest.raises(DatasetError, match=r"dtd\.xml.*refused.*DTD"):
        dio.read_aperio_xml(path)


def test_aperio_corrupt_gzip_stream_is_a_named_error(tmp_path):
    """Issue 12 row 4: a broken deflate stream raised a bare zlib.error."""
    import gzip

    blob = bytearray(gzip.compress(_xml([[(1, 1), (4, 1), (4, 4)]] * 50).encode()))
    blob[15:40] = b"\xff" * 25
    path = tmp_path / "z.xml.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match=r"z\.xml\.gz.*corrupt"):
        dio.read_aperio_xml(path)


def test_aperio_nan_vertices_are_refused_with_the_region_id(tmp_path):
    path = tmp_path / "n.xml"
    path.write_text(_xml([[(1, 1), (4, 1), (4, 4)], [(1, 1), ("nan", 1), (4, 4)], [(1, 1), ("inf", 2), (3, 3)]]))
    with pytest.raises(DatasetError, match=r"n\.xml: Region Id=2 .*NaN"):
        dio.read_aperio_regions(path)


def test_polygons_mostly_outside_the_image_are_refused_degenerate_ones_warned():
    inside = ("1", np.array([[1.0, 1.0], [1.0, 5.0], [5.0, 5.0]]))
    corner = ("7", np.array([[-900.0, -900.0], [-900.0, -850.0], [-850.0, -850.0], [-850.0, -900.0]]))
    border = ("8", np.array([[-3.0, 2.0], [4.0, 2.0], [4.0, 6.0], [-3.0, 6.0]]))  # half outside: kept
    with pytest.raises(DatasetError, match=r"a\.xml: region\(s\) Id=7 lie mostly outside the 16x16 image"):
        dio.check_region_polygons([inside, corner], [], (16, 16), "a.xml")
    with pytest.warns(DataWarning, match=r"a\.xml: region\(s\) Id=3, 4 have fewer than 3 vertices"):
        dio.check_region_polygons([inside, border], ["3", "4"], (16, 16), "a.xml")
    with pytest.warns(DataWarning, match=r"a\.xml: all 2 region\(s\).*EMPTY"):
        dio.check_region_polygons([], ["3", "4"], (16, 16), "a.xml")
