"""The embedded ``synthetic`` dataset: determinism, exact labels, appearance, difficulty."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from benchmark.data.base import DatasetError
from benchmark.data.synthetic import MIN_AREA, SyntheticDataset, generate_tile, tile_fingerprint

#: fingerprint of ``SyntheticDataset(seed=0).load("synth-000")``. If you changed the generator on
#: purpose, regenerate the committed split manifests of ``synthetic`` and update this constant; if you
#: did not, something (numpy's random streams, float rounding) changed the images.
GOLDEN_SYNTH_000 = "8d77416a74c42d52f91d509d6f1608d4ad5d40d36652c26618475eb826978f42"


@pytest.fixture(scope="module")
def ds() -> SyntheticDataset:
    return SyntheticDataset()


@pytest.fixture(scope="module")
def records(ds):
    return [ds.load(n) for n in ds.image_names()[:8]]


def test_names_presence_and_defaults(tmp_path):
    ds = SyntheticDataset()
    assert ds.is_present()
    assert ds.image_names() == [f"synth-{i:03d}" for i in range(30)]
    # root is accepted and ignored: nothing is read, an empty folder is fine
    assert SyntheticDataset(root=tmp_path / "nowhere", n_images=3).image_names() == [
        "synth-000",
        "synth-001",
        "synth-002",
    ]
    assert SyntheticDataset(n_images=1001).image_names()[-1] == "synth-1000"


def test_bad_names_and_options_raise_clear_errors():
    ds = SyntheticDataset(n_images=5)
    for bad in ("synth-005", "synth-5", "synth-0000", "img-000", ""):
        with pytest.raises(DatasetError, match="synth-000 .. synth-004"):
            ds.load(bad)
    with pytest.raises(ValueError, match="n_images"):
        SyntheticDataset(n_images=0)
    with pytest.raises(ValueError, match="size"):
        SyntheticDataset(size=8)
    with pytest.raises(ValueError, match="min_nuclei"):
        SyntheticDataset(min_nuclei=50, max_nuclei=10)


def test_same_seed_same_bytes_different_seed_different():
    a = SyntheticDataset(seed=0).load("synth-003")
    b = SyntheticDataset(seed=0).load("synth-003")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    c = SyntheticDataset(seed=1).load("synth-003")
    d = SyntheticDataset(seed=0).load("synth-004")
    for other in (c, d):
        assert not np.array_equal(a.image, other.image)
        assert not np.array_equal(a.label, other.label)


def test_fingerprint_is_sha256_of_generated_bytes(ds, records):
    rec = records[0]
    fp = ds.fingerprint(rec.name)
    assert fp == tile_fingerprint(rec.image, rec.label)
    expected = hashlib.sha256()
    for arr in (rec.image, rec.label):
        expected.update(f"{arr.dtype.str}{arr.shape}".encode())
        expected.update(arr.tobytes())
    assert fp == expected.hexdigest()
    assert fp != ds.fingerprint(records[1].name)
    assert SyntheticDataset(seed=7).fingerprint(rec.name) != fp


def test_fingerprint_is_stable_across_machines(ds):
    assert ds.fingerprint("synth-000") == GOLDEN_SYNTH_000, (
        "synthetic image synth-000 (seed 0) changed: if the generator was changed on purpose, "
        "regenerate the synthetic split manifests and update GOLDEN_SYNTH_000"
    )


def test_image_dtype_and_shape(records):
    for rec in records:
        assert rec.image.dtype == np.uint8 and rec.image.shape == (512, 512, 3)
        assert rec.label.dtype == np.int32 and rec.label.shape == (512, 512)
        assert rec.image.std() > 10  # not a flat image


def test_labels_exact_contiguous_single_component(records):
    for rec in records:
        lab = rec.label
        n = int(lab.max())
        assert lab.min() == 0
        assert np.array_equal(np.unique(lab), np.arange(n + 1)), f"{rec.name}: ids not 1..{n}"
        areas = np.bincount(lab.ravel())[1:]
        assert areas.min() >= MIN_AREA
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            _, pieces = ndimage.label(lab[sl] == i)  # 4-connectivity
            assert pieces == 1, f"{rec.name}: instance {i} has {pieces} pieces"


def test_nuclei_are_darker_and_more_hematoxylin_than_background(records):
    from skimage.color import rgb2hed

    for rec in records:
        fg = rec.label > 0
        gray = rec.image.astype(np.float64).mean(axis=-1)
        assert gray[fg].mean() < gray[~fg].mean() - 20, rec.name
        h = rgb2hed(rec.image)[..., 0]
        assert h[fg].mean() > h[~fg].mean(), rec.name


def test_counts_sizes_density_and_clusters():
    ds = SyntheticDataset()
    counts, radii, quadrant_ratios, touching = [], [], [], []
    for name in ds.image_names()[:15]:
        lab = ds.load(name).label
        n = int(lab.max())
        counts.append(n)
        radii.extend(np.sqrt(np.bincount(lab.ravel())[1:] / np.pi).tolist())
        q = [len(np.unique(lab[r : r + 256, c : c + 256])) - 1 for r in (0, 256) for c in (0, 256)]
        quadrant_ratios.append((max(q) + 1) / (min(q) + 1))
        # instances that share a 4-neighbour edge with a different instance
        a, b = lab[:, :-1], lab[:, 1:]
        pairs = (a > 0) & (b > 0) & (a != b)
        touching.append(len(np.unique(a[pairs])))
    assert 35 <= min(counts) and max(counts) <= 90, counts
    assert np.std(counts) > 5  # the count varies between images
    assert 3.0 < np.percentile(radii, 5) and np.percentile(radii, 95) < 15.0
    assert np.percentile(radii, 95) - np.percentile(radii, 5) > 4  # varied sizes
    assert max(quadrant_ratios) > 2.5  # dense and sparse regions
    assert sum(t > 0 for t in touching) >= 12  # touching clusters in most images


def test_other_sizes_scale_the_number_of_nuclei():
    img, lab = generate_tile(0, 0, size=128)
    assert img.shape == (128, 128, 3) and lab.shape == (128, 128)
    assert 1 <= lab.max() <= 90 / 16 + 2


def test_thresholding_baseline_does_not_solve_it():
    """A fitted threshold + watershed must not score a near-perfect AJI (the data would be too easy)."""
    from benchmark.api import Patch, TrainData
    from benchmark.metrics import aji
    from methods.watershed.method import WatershedMethod

    ds = SyntheticDataset()

    def crops(name):
        r = ds.load(name)
        return [
            Patch(f"{name}@{y}_{x}", r.image[y : y + 256, x : x + 256], r.label[y : y + 256, x : x + 256])
            for y in (0, 256)
            for x in (0, 256)
        ]

    train = [p for n in ds.image_names()[:8] for p in crops(n)]
    test = [p for n in ds.image_names()[24:] for p in crops(n)]
    m = WatershedMethod()
    m.fit(TrainData(labeled=train), profile=None, seed=0, device="cpu", workdir=None)
    score = float(np.mean([aji(p.label, q) for p, q in zip(test, m.predict([p.image for p in test]))]))
    assert 0.3 < score < 0.8, score


def test_manifest_hooks(ds, records):
    rec = records[2]
    assert ds.is_annotated(rec.name) is True
    assert ds.label_fingerprint(rec.name) == hashlib.sha256(rec.label.tobytes()).hexdigest()
    with pytest.raises(DatasetError):
        ds.is_annotated("synth-999")


def test_tile_cache_on_disk_equals_the_generator_and_survives_damage(tmp_path, monkeypatch):
    from benchmark.data import synthetic

    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path))
    synthetic._memo_tile.cache_clear()
    want = generate_tile(3, 1, size=96)
    img, lab = synthetic.cached_tile(3, 1, 96, (40, 90))
    assert np.array_equal(img, want[0]) and np.array_equal(lab, want[1])
    (path,) = (tmp_path / "synthetic").glob("*-3-1-96-40-90.npz")
    img[:] = 0  # callers get copies: the memo is not changed through them
    assert np.array_equal(synthetic.cached_tile(3, 1, 96, (40, 90))[0], want[0])
    # a damaged file on disk is regenerated in a fresh process (here: a cleared memo), not trusted
    path.write_bytes(b"not an npz")
    synthetic._memo_tile.cache_clear()
    assert np.array_equal(synthetic.cached_tile(3, 1, 96, (40, 90))[1], want[1])
    assert np.load(path)["label"].shape == (96, 96)
    # the key names the generator's source and numpy's version, so a changed generator cannot hit it
    assert path.name.startswith(synthetic._generator_digest())


def test_tile_cache_in_an_unwritable_folder_still_generates(tmp_path, monkeypatch):
    from benchmark.data import synthetic

    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(blocker))
    synthetic._memo_tile.cache_clear()
    img, lab = synthetic.cached_tile(4, 0, 80, (40, 90))
    assert np.array_equal(lab, generate_tile(4, 0, size=80)[1])
