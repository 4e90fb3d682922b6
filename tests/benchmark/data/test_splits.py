"""Split manifests: recipes, Table 5 counts, determinism, verification, and the built split."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from benchmark.data.folder import FolderDataset, InMemoryDataset
from benchmark.data.patching import PatchCache, PatchParams, cut_patches, parse_patch_id
from benchmark.data.points import instance_boxes, instance_points
from benchmark.data.splits import (
    ManifestError,
    build_split,
    check_manifest,
    format_counts,
    image_counts,
    load_manifest,
    make_manifest,
    manifest_path,
    normalize_ratio,
    overlap_stats,
    relabel,
    save_manifest,
    split_counts,
    verify_manifest,
)

REPO = Path(__file__).resolve().parents[3]


def _label(h, w, rng, n=12):
    lab = np.zeros((h, w), np.int32)
    for k in range(1, n + 1):
        r, c = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 12))
        lab[r : r + 10, c : c + 10] = k
    return lab


def fake_dataset(n=30, size=512, unannotated=0, seed=0, name="fake", prefix="img"):
    """``n`` annotated images of ``size`` x ``size`` (+ ``unannotated`` without labels), in memory."""
    rng = np.random.default_rng(seed)
    items = {}
    for i in range(n + unannotated):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        items[f"{prefix}{i:02d}"] = (img, _label(size, size, rng) if i < n else None)
    return InMemoryDataset(items, name=name)


@pytest.fixture(scope="module")
def ds30():
    return fake_dataset()


@pytest.fixture(scope="module")
def m30(ds30):
    return make_manifest(ds30, seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return PatchCache(tmp_path_factory.mktemp("patch-cache"))


# ------------------------------------------------------------------------------------------ recipes
def test_image_counts_recipes():
    assert image_counts("6:2:2", 30) == (18, 6, 6)
    assert image_counts("monuseg-paper", 30) == (16, 8, 6)
    assert image_counts("16/8/6", 30) == (16, 8, 6)
    assert image_counts("6:2:2", 69) == (41, 14, 14)  # DigestPath size: 13.8 -> 14
    assert image_counts("6:2:2", 5) == (3, 1, 1)
    assert image_counts("8:1:1", 10) == (8, 1, 1)
    assert image_counts("6:2:2", 3) == (1, 1, 1)  # a non-zero part gets at least one image
    with pytest.raises(ManifestError, match="30 annotated images but the dataset has 29"):
        image_counts("monuseg-paper", 29)
    with pytest.raises(ManifestError, match="at least 3"):
        image_counts("6:2:2", 2)
    for bad in ("6-2-2", "a:b:c", "1:2", "0:0:0", "1/2/3/4"):
        with pytest.raises(ManifestError, match="recipe"):
            image_counts(bad, 30)


def test_normalize_ratio():
    assert normalize_ratio("1/8") == normalize_ratio(0.125) == "1/8"
    assert normalize_ratio(0.5) == "1/2"
    with pytest.raises(ManifestError):
        normalize_ratio("x")


# ------------------------------------------------------------------------------------------ Table 5
def test_table5_cryonuseg_row(m30):
    """30 images of 512x512 with 6:2:2: exactly the paper's CryoNuSeg row of Table 5."""
    rows = {r["ratio"]: (r["labeled"], r["unlabeled"], r["val"], r["test"]) for r in split_counts(m30)}
    assert rows == {"1/8": (20, 142, 54, 54), "1/4": (40, 122, 54, 54), "1/2": (81, 81, 54, 54)}
    assert m30["image_counts"] == {"train": 18, "val": 6, "test": 6}
    md = format_counts(m30, fmt="md")
    assert "| fake | 1/8 | 20 | 142 | 54 | 54 |" in md and "| fake | 1/2 | 81 | 81 | 54 | 54 |" in md
    js = json.loads(format_counts(m30, fmt="json"))
    assert [r["labeled"] for r in js] == [20, 40, 81]
    with pytest.raises(ValueError):
        format_counts(m30, fmt="csv")


def test_manifest_structure(m30, ds30):
    parts = {p: set(m30["patches"][p]) for p in ("train", "val", "test")}
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
    l8, l4, l2 = (set(m30["labeled"][r]) for r in ("1/8", "1/4", "1/2"))
    assert l8 < l4 < l2 <= parts["train"]
    # all patches of an image are in the image's part
    part_of = {im["name"]: im["part"] for im in m30["images"]}
    for p, ids in parts.items():
        assert all(part_of[parse_patch_id(i)[0]] == p for i in ids)
    assert [im["sha256"] for im in m30["images"]] == [ds30.fingerprint(n) for n in ds30.image_names()]
    assert m30["patch"] == {"size": 256, "stride": 128, "pad": True}
    check_manifest(m30)


def test_check_manifest_catches_tampering(m30):
    bad = json.loads(json.dumps(m30))
    bad["labeled"]["1/8"].append(bad["patches"]["test"][0])
    with pytest.raises(ManifestError, match="outside train"):
        check_manifest(bad)
    bad = json.loads(json.dumps(m30))
    bad["patches"]["val"].append(bad["patches"]["test"][0])
    with pytest.raises(ManifestError, match="both"):
        check_manifest(bad)
    bad = json.loads(json.dumps(m30))
    bad["labeled"]["1/4"] = bad["labeled"]["1/4"][:5]
    with pytest.raises(ManifestError, match="nested"):
        check_manifest(bad)
    bad = json.loads(json.dumps(m30))
    bad["images"][0]["part"] = "nowhere"
    with pytest.raises(ManifestError, match="invalid part"):
        check_manifest(bad)


# ------------------------------------------------------------------------------------------ determinism
def test_split_depends_only_on_names_and_seed(m30):
    other_pixels = fake_dataset(seed=99)  # same names, different content
    m = make_manifest(other_pixels, seed=0)
    assert m["patches"] == m30["patches"] and m["labeled"] == m30["labeled"]
    assert m["images"][0]["sha256"] != m30["images"][0]["sha256"]
    m1 = make_manifest(other_pixels, seed=1)
    assert set(m1["patches"]["test"]) != set(m30["patches"]["test"])
    renamed = fake_dataset(prefix="x")
    assert make_manifest(renamed, seed=0)["patches"]["test"] != m30["patches"]["test"]


def test_unannotated_images_go_to_train_unlabeled_only():
    ds = fake_dataset(n=10, size=256, unannotated=3)
    m = make_manifest(ds, seed=0)
    unann = {im["name"] for im in m["images"] if not im["annotated"]}
    assert len(unann) == 3
    assert all(im["part"] == "train" for im in m["images"] if not im["annotated"])
    assert m["image_counts"] == {"train": 6 + 3, "val": 2, "test": 2}
    n_train = len(m["patches"]["train"])
    assert n_train == 9
    for r, frac in (("1/8", 8), ("1/4", 4), ("1/2", 2)):
        assert len(m["labeled"][r]) == n_train // frac
        assert not any(parse_patch_id(i)[0] in unann for i in m["labeled"][r])


def test_labeled_capped_by_eligible():
    ds = fake_dataset(n=3, size=256, unannotated=20)
    m = make_manifest(ds, seed=0)
    assert len(m["patches"]["train"]) == 21
    assert len(m["labeled"]["1/2"]) == 1  # only one annotated train image (1 patch): capped


def test_save_load_roundtrip(m30, tmp_path):
    path = save_manifest(m30, tmp_path / "s" / "fake.json")
    assert load_manifest(path) == m30
    path.write_text("{not json")
    with pytest.raises(ManifestError, match=r"fake\.json.*not a readable JSON"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="splits make"):
        load_manifest(tmp_path / "missing.json")
    assert manifest_path("monuseg") == REPO / "splits" / "monuseg.json"


# ------------------------------------------------------------------------------------------ verify
def _folder(root, n=6, size=64):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        tifffile.imwrite(root / "images" / f"im{i}.tif", rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                         photometric="rgb")
        np.save(root / "labels" / f"im{i}.npy", _label(size, size, rng, n=3))
    return FolderDataset(root, name="tiny")


def test_verify_manifest_errors(tmp_path):
    ds = _folder(tmp_path / "tiny")
    params = PatchParams(size=32, stride=16)
    m = make_manifest(ds, seed=0, patch=params)
    verify_manifest(m, ds)  # fine
    # a changed image: error naming the file and the fix
    tifffile.imwrite(tmp_path / "tiny" / "images" / "im3.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    with pytest.raises(ManifestError, match=r"(?s)images/im3\.tif.*splits make"):
        verify_manifest(m, FolderDataset(tmp_path / "tiny", name="tiny"))
    # a missing image
    (tmp_path / "tiny" / "images" / "im3.tif").unlink()
    (tmp_path / "tiny" / "labels" / "im3.npy").unlink()
    with pytest.raises(ManifestError, match=r"missing.*im3"):
        verify_manifest(m, FolderDataset(tmp_path / "tiny", name="tiny"))
    # wrong dataset
    with pytest.raises(ManifestError, match="not 'other'"):
        verify_manifest(m, FolderDataset(tmp_path / "tiny", name="other"))


def test_verify_manifest_labels(tmp_path):
    ds = _folder(tmp_path / "tiny")
    m = make_manifest(ds, seed=0, patch=PatchParams(size=32, stride=16))
    np.save(tmp_path / "tiny" / "labels" / "im1.npy", np.ones((64, 64), np.int32))
    fresh = FolderDataset(tmp_path / "tiny", name="tiny")
    with pytest.warns(UserWarning, match=r"labels/im1\.npy"):
        verify_manifest(m, fresh)
    with pytest.raises(ManifestError, match="annotation"):
        verify_manifest(m, fresh, labels="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verify_manifest(m, fresh, labels="ignore")
    (tmp_path / "tiny" / "labels" / "im1.npy").unlink()
    with pytest.raises(ManifestError, match=r"no annotation.*im1"):
        verify_manifest(m, FolderDataset(tmp_path / "tiny", name="tiny"))


# ------------------------------------------------------------------------------------------ build_split
def test_build_split_hides_unlabeled_annotations(ds30, m30, cache):
    split = build_split(ds30, m30, "1/8", cache=cache)
    tr = split.train
    assert (len(tr.labeled), len(tr.unlabeled), len(tr.val), len(split.test_patches)) == (20, 142, 54, 54)
    assert [p.id for p in tr.labeled] == [i for i in m30["patches"]["train"] if i in set(m30["labeled"]["1/8"])]
    for p in tr.labeled + list(tr.val) + split.test_patches:
        assert p.label is not None and p.label.dtype == np.int32 and p.label.shape == (256, 256)
        assert p.image.dtype == np.uint8 and p.image.shape == (256, 256, 3)
    for p in tr.unlabeled:  # a method without needs sees images only
        assert p.label is None and p.points is None and p.boxes is None
    assert len(split.test_images) == 6 and all(r.label is not None for r in split.test_images)
    assert sum(len(v) for v in split.test_positions.values()) == 54
    assert split.ratio == "1/8" and split.patch == PatchParams()


def test_build_split_needs_points_boxes(ds30, m30, cache):
    split = build_split(ds30, m30, 0.25, needs={"points", "boxes"}, cache=cache)
    assert len(split.train.labeled) == 40 and len(split.train.unlabeled) == 122
    only_points = build_split(ds30, m30, "1/4", needs={"points"}, cache=cache)
    assert all(p.boxes is None and p.points is not None for p in only_points.train.unlabeled)
    # derived from the hidden GT of exactly that patch
    u = split.train.unlabeled[5]
    name, (r, c) = parse_patch_id(u.id)
    gt = ds30.load(name).label[r : r + 256, c : c + 256]
    np.testing.assert_allclose(u.points, instance_points(gt), atol=1e-4)
    np.testing.assert_array_equal(u.boxes, instance_boxes(gt))
    assert u.label is None
    with pytest.raises(ManifestError, match="unknown needs"):
        build_split(ds30, m30, "1/4", needs={"masks"}, cache=cache)
    with pytest.raises(ManifestError, match="ratio 1/3"):
        build_split(ds30, m30, "1/3", cache=cache)


def test_both_protocols_from_one_prediction(ds30, m30, cache):
    """Patch predictions made once feed the per-patch protocol and, stitched, the whole-image one."""
    split = build_split(ds30, m30, "1/2", cache=cache)
    preds = [p.label.copy() for p in split.test_patches]  # a perfect model
    whole = split.stitch_test_predictions(preds)
    assert set(whole) == {r.name for r in split.test_images}
    for rec in split.test_images:  # the whole test images are the source images
        np.testing.assert_array_equal(rec.image, ds30.load(rec.name).image)
        np.testing.assert_array_equal(rec.label, ds30.load(rec.name).label)
    for rec in split.test_images:
        out, gt = whole[rec.name], rec.label
        assert out.shape == gt.shape
        assert ((out > 0) == (gt > 0)).all()
        assert len(np.unique(out)) == len(np.unique(gt))
    by_id = split.stitch_test_predictions({p.id: m for p, m in zip(split.test_patches, preds)})
    assert all(np.array_equal(by_id[k], whole[k]) for k in whole)
    with pytest.raises(ValueError):
        split.stitch_test_predictions(preds[:-1])


def test_build_split_unannotated_images(tmp_path):
    ds = fake_dataset(n=5, size=256, unannotated=2)
    m = make_manifest(ds, seed=0)
    split = build_split(ds, m, "1/2", needs={"points"}, cache=PatchCache(enabled=False))
    unann = {im["name"] for im in m["images"] if not im["annotated"]}
    from_unann = [p for p in split.train.unlabeled if parse_patch_id(p.id)[0] in unann]
    assert len(from_unann) == 2 and all(p.points is None for p in from_unann)  # no GT to derive from


def test_patch_images_match_source(ds30, m30, cache):
    split = build_split(ds30, m30, "1/8", cache=cache)
    p = split.test_patches[4]
    name, (r, c) = parse_patch_id(p.id)
    np.testing.assert_array_equal(p.image, ds30.load(name).image[r : r + 256, c : c + 256])
    ref = cut_patches(ds30.load(name).image, ds30.load(name).label, name=name)
    np.testing.assert_array_equal(p.label, ref.labels[ref.positions.index((r, c))])


# ------------------------------------------------------------------------------------------ committed
def test_committed_monuseg_manifest(monuseg_root):
    """The committed splits/monuseg.json matches all 30 real files and reproduces Table 5's MoNuSeg row."""
    from benchmark.data.monuseg import MoNuSegDataset

    m = load_manifest(REPO / "splits" / "monuseg.json")
    assert m["recipe"] == "monuseg-paper" and len(m["images"]) == 30
    rows = {r["ratio"]: (r["labeled"], r["unlabeled"], r["val"], r["test"]) for r in split_counts(m)}
    assert rows == {"1/8": (98, 686, 392, 294), "1/4": (196, 588, 392, 294), "1/2": (392, 392, 392, 294)}
    assert m["image_counts"] == {"train": 16, "val": 8, "test": 6}
    ds = MoNuSegDataset(monuseg_root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # labels identical too
        verify_manifest(m, ds)
    assert sorted(im["name"] for im in m["images"]) == ds.image_names()


def test_committed_monuseg_manifest_is_reproducible_without_reading_labels(monuseg_root):
    """Regenerating from the names + seed gives the committed parts (no need to re-rasterise: the split
    is a function of names, sizes and annotation status only)."""
    from benchmark.data.monuseg import MoNuSegDataset

    m = load_manifest(REPO / "splits" / "monuseg.json")
    names = MoNuSegDataset(monuseg_root).image_names()
    items = {n: (np.zeros((1000, 1000, 3), np.uint8), np.zeros((1000, 1000), np.int32)) for n in names}
    again = make_manifest(InMemoryDataset(items, name="monuseg"), recipe="monuseg-paper", seed=m["seed"])
    assert again["patches"] == m["patches"] and again["labeled"] == m["labeled"]


def test_committed_synthetic_manifest():
    path = REPO / "splits" / "synthetic.json"
    if not path.exists():
        pytest.skip("splits/synthetic.json not committed")
    from benchmark.data.synthetic import SyntheticDataset

    m = load_manifest(path)
    rows = {r["ratio"]: (r["labeled"], r["unlabeled"], r["val"], r["test"]) for r in split_counts(m)}
    assert rows == {"1/8": (20, 142, 54, 54), "1/4": (40, 122, 54, 54), "1/2": (81, 81, 54, 54)}
    verify_manifest(m, SyntheticDataset())


def test_too_few_images_message_says_how_many_are_needed():
    """Issue 12 row 14: it said 'cannot split 0 ... (-2/1/1)'."""
    with pytest.raises(ManifestError) as info:
        image_counts("6:2:2", 0)
    msg = str(info.value)
    assert "needs at least 3 annotated images (1 train, 1 val, 1 test)" in msg and "has only 0" in msg
    assert "-2" not in msg
    with pytest.raises(ManifestError, match="needs at least 3 annotated images .* has only 2"):
        image_counts("8:1:1", 2)


# ------------------------------------------------------------------------------------------ recipes


def test_paper_recipe_overlap_counts_on_committed_monuseg():
    """The leakage of the paper recipe, measured on splits/monuseg.json (no data needed)."""
    m = load_manifest(REPO / "splits" / "monuseg.json")
    stats = {r: overlap_stats(m, r) for r in ("1/8", "1/4", "1/2")}
    assert [round(s["labeled_area_pct"]) for s in stats.values()] == [34, 59, 85]
    assert [s["unlabeled_overlapping"] for s in stats.values()] == [458, 533, 388]
    assert [s["unlabeled_inside"] for s in stats.values()] == [18, 89, 172]
    md = format_counts(m)
    assert "Labeled area %" in md and "| monuseg | 1/8 | 98 | 686 | 392 | 294 | 16 | 34.0 | 458 | 18 |" in md


def test_overlap_stats_hand_case():
    """One 512x256 image, 256 px patches every 128 px: 3 patches at columns 0, 128, 256."""
    m = make_manifest(InMemoryDataset({f"i{k}": (np.zeros((256, 512, 3), np.uint8), np.ones((256, 512), np.int32))
                                       for k in range(5)}, name="hand"), recipe="3/1/1", ratios=("1/2",))
    train = m["patches"]["train"]
    m = dict(m, labeled={"1/2": [p for p in train if p.endswith("@0_0")]})
    s = overlap_stats(m, "1/2")
    # 3 training images; one patch of 256x256 labeled on each: 3 * 256*256 / (3 * 256*512) = 50 %
    assert s["labeled_area_pct"] == pytest.approx(50.0)
    assert s["unlabeled_overlapping"] == 3 and s["unlabeled_inside"] == 0  # @0_128 overlaps, @0_256 not


def test_image_recipe_whole_images_no_overlap_ratio_by_images():
    m = load_manifest(REPO / "splits" / "monuseg.json")
    img = relabel(m, "image")
    assert img["labeled_recipe"] == "image" and img["patches"] == m["patches"]
    per_image = len(m["patches"]["train"]) // 16
    for r, n_images in (("1/8", 2), ("1/4", 4), ("1/2", 8)):
        names = {parse_patch_id(p)[0] for p in img["labeled"][r]}
        assert len(names) == n_images and len(img["labeled"][r]) == n_images * per_image
        assert overlap_stats(img, r)["unlabeled_overlapping"] == 0
    assert set(img["labeled"]["1/8"]) <= set(img["labeled"]["1/4"]) <= set(img["labeled"]["1/2"])
    # rounding half up, at least one image: 18 training images -> 2 / 5 / 9; 3 -> 1 / 1 / 2
    syn = relabel(load_manifest(REPO / "splits" / "synthetic.json"), "image")
    assert [r["labeled_images"] for r in split_counts(syn)] == [2, 5, 9]
    m5 = make_manifest(fake_dataset(n=5, size=256), recipe="3/1/1", labeled_recipe="image")
    assert [r["labeled_images"] for r in split_counts(m5)] == [1, 1, 2]


def test_image_recipe_hash_is_stable_and_paper_hash_unchanged():
    from benchmark.data import manifest_for
    from benchmark.data.synthetic import SyntheticDataset
    from benchmark.store import stable_hash

    m = load_manifest(REPO / "splits" / "monuseg.json")
    assert relabel(m, "paper") == m and "labeled_recipe" not in m, "paper manifests are untouched"
    assert stable_hash(relabel(m, "image"), 16) == stable_hash(relabel(m, "image"), 16)
    committed = load_manifest(REPO / "splits" / "monuseg.image.json")
    assert committed == relabel(m, "image"), "splits/monuseg.image.json is the relabeled paper split"
    assert stable_hash(committed, 16) != stable_hash(m, 16)
    syn = manifest_for(SyntheticDataset(), "synthetic", split_recipe="image")
    assert syn == load_manifest(REPO / "splits" / "synthetic.image.json")
    with pytest.raises(ManifestError, match="split recipe 'leaky'"):
        relabel(m, "leaky")


def test_check_manifest_refuses_partial_images_under_image_recipe():
    img = relabel(load_manifest(REPO / "splits" / "monuseg.json"), "image")
    only_half = [p for p in img["labeled"]["1/2"] if p not in set(img["labeled"]["1/4"])]
    bad = dict(img, labeled={**img["labeled"], "1/2": [p for p in img["labeled"]["1/2"] if p != only_half[0]]})
    with pytest.raises(ManifestError, match="whole images"):
        check_manifest(bad)


def test_table5_paper_recipe_still_reproduced():
    m = load_manifest(REPO / "splits" / "monuseg.json")
    rows = {r["ratio"]: (r["labeled"], r["unlabeled"], r["val"], r["test"]) for r in split_counts(m)}
    assert rows == {"1/8": (98, 686, 392, 294), "1/4": (196, 588, 392, 294), "1/2": (392, 392, 392, 294)}
    assert all(r["split_recipe"] == "paper" for r in split_counts(m))


def test_cli_splits_show_prints_both_recipes(capsys):
    from benchmark.cli import main

    assert main(["splits", "show", "--dataset", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "split recipe paper" in out and "split recipe image" in out and "Labeled area %" in out
    assert main(["splits", "show", "--dataset", "synthetic", "--split-recipe", "image", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["split_recipe"] for r in rows} == {"image"} and all(r["unlabeled_overlapping"] == 0 for r in rows)
