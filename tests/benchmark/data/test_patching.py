"""Patch positions, cutting/relabelling, and the on-disk patch cache."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.data.base import DatasetError
from benchmark.data.folder import InMemoryDataset
from benchmark.data.patching import (
    PatchCache,
    PatchParams,
    axis_starts,
    cache_key,
    cut_patches,
    default_cache_dir,
    parse_patch_id,
    patch_id,
    patch_positions,
)


def test_paper_grid_counts():
    assert axis_starts(1000, 256, 128) == [0, 128, 256, 384, 512, 640, 744]
    assert len(patch_positions((1000, 1000))) == 49
    assert axis_starts(512, 256, 128) == [0, 128, 256]
    assert len(patch_positions((512, 512))) == 9
    assert axis_starts(256, 256, 128) == [0]
    assert patch_positions((1200, 1500))[-1] == (1200 - 256, 1500 - 256)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 700), w=st.integers(1, 700), size=st.integers(8, 300), stride_frac=st.floats(0.1, 1.0)
)
def test_positions_cover_every_pixel(h, w, size, stride_frac):
    stride = max(1, int(size * stride_frac))
    params = PatchParams(size=size, stride=stride)
    pos = patch_positions((h, w), params)
    cover = np.zeros((max(h, size), max(w, size)), bool)
    for r, c in pos:
        assert 0 <= r and 0 <= c and r + size <= max(h, size) and c + size <= max(w, size)
        cover[r : r + size, c : c + size] = True
    assert cover.all()
    assert len(set(pos)) == len(pos)


def test_small_image_padding_or_refusal():
    img = np.full((100, 300, 3), 50, np.uint8)
    lab = np.zeros((100, 300), np.int32)
    lab[90:100, 0:10] = 1
    p = cut_patches(img, lab, PatchParams(), name="small")
    assert p.positions == [(0, 0), (0, 44)]
    assert p.images.shape == (2, 256, 256, 3)
    assert (p.images[0, 100:] == 0).all() and (p.labels[0, 100:] == 0).all()  # padded bottom
    assert p.shape == (100, 300)
    np.testing.assert_array_equal(p.whole_image(), img)  # padding removed
    with pytest.raises(DatasetError, match="smaller than the 256x256 patch"):
        patch_positions((100, 300), PatchParams(pad=False))


def test_cut_relabels_per_patch_and_ids():
    lab = np.zeros((512, 512), np.int32)
    lab[10:20, 10:20] = 7
    lab[300:310, 300:310] = 3
    lab[120:140, 120:140] = 9  # straddles patch borders
    img = np.zeros((512, 512, 3), np.uint8)
    p = cut_patches(img, lab, PatchParams(), name="im")
    assert p.ids[0] == "im@0_0" and p.ids[-1] == "im@256_256" and len(p.ids) == 9
    for k in range(9):
        ids = np.unique(p.labels[k])
        assert list(ids) == list(range(len(ids)))  # 0..N contiguous
    first = p.labels[0]
    assert first[15, 15] == 1 and first[130, 130] == 2  # source order 7 < 9 kept
    assert parse_patch_id("TCGA-x@744_128") == ("TCGA-x", (744, 128))
    assert patch_id("a@b", (1, 2)) == "a@b@1_2" and parse_patch_id("a@b@1_2") == ("a@b", (1, 2))
    with pytest.raises(ValueError):
        parse_patch_id("nope")


def _ds(label_value=1):
    img = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    lab = np.zeros((300, 300), np.int32)
    lab[100:120, 100:120] = label_value
    return InMemoryDataset({"a": (img, lab), "u": (img, None)}, name="mem")


def test_cache_roundtrip_and_corruption(tmp_path):
    ds = _ds()
    cache = PatchCache(tmp_path / "cache")
    first = cache.get(ds, "a")
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "cache").rglob(".tmp-*"))
    again = cache.get(ds, "a")
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    assert again.positions == first.positions
    # corrupt file: recomputed and rewritten, same content
    files[0].write_bytes(b"garbage")
    third = cache.get(ds, "a")
    assert np.array_equal(third.labels, first.labels)
    assert np.load(files[0])["images"].shape == first.images.shape
    # truncated file
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 3])
    assert np.array_equal(cache.get(ds, "a").images, first.images)
    # the whole image and its label come back exactly (for whole-image evaluation)
    np.testing.assert_array_equal(third.whole_image(), ds.load("a").image)
    np.testing.assert_array_equal(cache.get(ds, "a").full_label, ds.load("a").label)
    # unannotated image caches labels=None
    assert cache.get(ds, "u").labels is None and cache.get(ds, "u").labels is None


def test_cache_key_depends_on_content_and_params():
    k1 = cache_key(_ds(), "a", PatchParams())
    assert k1 == cache_key(_ds(), "a", PatchParams())
    assert k1 != cache_key(_ds(), "a", PatchParams(stride=64))
    other_label = InMemoryDataset(
        {"a": (_ds().load("a").image, np.pad(np.ones((10, 10), np.int32), ((0, 290), (0, 290))))}, name="mem"
    )
    assert k1 != cache_key(other_label, "a", PatchParams())


def test_cache_disabled_and_default_dir(tmp_path, monkeypatch):
    ds = _ds()
    off = PatchCache(tmp_path / "c", enabled=False)
    assert off.get(ds, "a").labels.shape == (4, 256, 256)
    assert not (tmp_path / "c").exists()
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env" / "patches"
    monkeypatch.delenv("NUCLEI_SSL_BENCH_CACHE")
    assert ".cache" in str(default_cache_dir())


def test_cache_unwritable_dir_still_works(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = PatchCache(blocker / "sub")  # cannot create a directory under a file
    assert cache.get(_ds(), "a").images.shape == (4, 256, 256, 3)


def test_params_validation():
    with pytest.raises(ValueError):
        PatchParams(size=0)
    with pytest.raises(ValueError):
        PatchParams(size=64, stride=128)
