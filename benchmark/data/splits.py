"""Split manifests: which images are train/val/test and which training patches are labeled.

Protocol (the paper's appendix, Table 5):

1. **Image-level split.** The *annotated* images are divided into train / val / test by a recipe:

   * ``"A:B:C"`` (default ``"6:2:2"``): proportions. ``n_val = round(n * B / (A+B+C))`` and
     ``n_test = round(n * C / (A+B+C))`` (round half up), ``n_train`` = the rest; a part with a non-zero
     proportion gets at least one image. 30 images -> 18/6/6.
   * ``"T/V/S"``: exact image counts (must add up to the number of annotated images).
   * ``"monuseg-paper"`` = ``"16/8/6"``: the split behind the paper's MoNuSeg row (784/392/294 patches of
     256 px on 30 images of 1000x1000); the MoNuSeg default.

   Unannotated images always go to train (they can only feed the unlabeled pool).
   The order is a deterministic function of the seed and the image *names* (each name is ranked by
   ``sha256(f"{seed}:image:{name}")``), so two users with the same files get the same split, and
   no library's random stream is involved.

2. **Patches.** Every image is cut into ``size``-px patches every ``stride`` px (see
   :mod:`benchmark.data.patching`); all patches of an image go to the image's part.

3. **Labeled subsets.** For each ratio r in ``1/8, 1/4, 1/2``, ``floor(n_train_patches * r)`` training
   patches are labeled (capped at the number of patches of annotated training images); the rest of the
   training patches are unlabeled. The labeled sets are prefixes of one seeded ranking of the eligible
   training patch ids (``sha256(f"{seed}:patch:{id}")``), hence nested: 1/8 ⊂ 1/4 ⊂ 1/2. Val and test
   never change across ratios.

   This is the ``paper`` *labeled recipe* (the default; it reproduces the paper's Table 5). Its labeled
   patches come from the same images as the unlabeled ones and overlap them by ``size - stride`` px:
   on MoNuSeg the labeled patches cover 34 / 59 / 85 % of the training-image area at 1/8 / 1/4 / 1/2
   (see :func:`overlap_stats`). The ``image`` labeled recipe has no such leakage: the labeled subset is
   whole training images, ``max(1, round(r * n))`` of the ``n`` annotated training images (round half
   up; seeded ranking ``sha256(f"{seed}:labeled-image:{name}")``, so nested too), and the unlabeled pool
   is every patch of the other training images. Val and test are the same under both recipes. An
   ``image`` manifest records ``"labeled_recipe": "image"``; a ``paper`` manifest records nothing, so
   its content and hash are those of manifests made before recipes existed.

A manifest is a JSON document (committed under ``splits/<dataset>.json``) holding the image names,
their SHA-256 (``Dataset.fingerprint``, the image bytes) and label fingerprints, the recipe, the seed,
the patch parameters and the patch ids of every part. :func:`verify_manifest` checks it against the
files on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.api import KNOWN_NEEDS, Patch, TrainData
from benchmark.data.base import Dataset, DatasetError, ImageRecord
from benchmark.data.patching import PatchCache, PatchParams, parse_patch_id, patch_id, patch_positions
from benchmark.data.points import instance_boxes, instance_points

MANIFEST_FORMAT = "nuclei-ssl-bench/split-manifest/1"
RATIOS = ("1/8", "1/4", "1/2")
PARTS = ("train", "val", "test")
DEFAULT_RECIPE = "6:2:2"
#: named recipes -> their definition.
NAMED_RECIPES = {"monuseg-paper": "16/8/6", "paper": "6:2:2"}
#: how the labeled subset of the training images is drawn (see the module docstring).
LABELED_RECIPES = ("paper", "image")


class ManifestError(DatasetError):
    """A split manifest is malformed or does not match the data on disk."""


# ---------------------------------------------------------------------------------------------- recipes
def image_counts(recipe: str, n: int) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)`` annotated images for ``recipe`` and ``n`` annotated images.

    Raises:
        ManifestError: malformed recipe, counts that do not add up to ``n``, or too few images.
    """
    spec = NAMED_RECIPES.get(recipe, recipe)
    try:
        if "/" in spec:
            counts = tuple(int(x) for x in spec.split("/"))
            if len(counts) != 3 or min(counts) < 0:
                raise ValueError
            if sum(counts) != n:
                raise ManifestError(
                    f"recipe {recipe!r} asks for {counts[0]}+{counts[1]}+{counts[2]} = {sum(counts)} annotated "
                    f"images but the dataset has {n}. Use a proportion recipe such as '6:2:2' for other "
                    f"data, or check that all files are present."
                )
            return counts  # type: ignore[return-value]
        props = [Fraction(x) for x in spec.split(":")]
        if len(props) != 3 or min(props) < 0 or sum(props) == 0:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise ManifestError(
            f"unknown split recipe {recipe!r}: use 'A:B:C' proportions (e.g. '6:2:2'), 'T/V/S' image counts "
            f"(e.g. '16/8/6') or one of {sorted(NAMED_RECIPES)}"
        ) from None
    total = sum(props)

    def half_up(x: Fraction) -> int:
        return int(x + Fraction(1, 2))

    def split(k: int) -> tuple[int, int, int]:
        n_val, n_test = half_up(k * props[1] / total), half_up(k * props[2] / total)
        n_val = max(n_val, 1) if props[1] > 0 else n_val
        n_test = max(n_test, 1) if props[2] > 0 else n_test
        return k - n_val - n_test, n_val, n_test

    n_train, n_val, n_test = split(n)
    if n_train < 1:
        need = next(k for k in range(1, 10_000) if split(k)[0] >= 1)
        t, v, s = split(need)
        raise ManifestError(
            f"recipe {recipe!r} needs at least {need} annotated images ({t} train, {v} val, {s} test) but "
            f"the dataset has only {n}. An image is annotated when it has a label file: add labels, or "
            f"add annotated images."
        )
    return n_train, n_val, n_test


def _dataset_counts(dataset: Dataset, recipe: str, n: int) -> tuple[int, int, int]:
    """:func:`image_counts`, with the dataset and its folder named in the error."""
    try:
        return image_counts(recipe, n)
    except ManifestError as exc:
        raise ManifestError(f"dataset {dataset.name!r} at {dataset.root}: {exc}") from None


def _rank(seed: int, kind: str, keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: (hashlib.sha256(f"{seed}:{kind}:{k}".encode()).hexdigest(), k))


def normalize_ratio(ratio: str | float | Fraction) -> str:
    """``"1/8"``, ``0.125`` or ``Fraction(1, 8)`` -> ``"1/8"``."""
    try:
        frac = Fraction(ratio).limit_denominator(1000) if not isinstance(ratio, str) else Fraction(ratio.strip())
    except (ValueError, ZeroDivisionError):
        raise ManifestError(f"invalid ratio {ratio!r}; use one of {', '.join(RATIOS)}") from None
    return f"{frac.numerator}/{frac.denominator}"


# ---------------------------------------------------------------------------------------------- make
def make_manifest(
    dataset: Dataset,
    recipe: str | None = None,
    seed: int = 0,
    *,
    patch: PatchParams = PatchParams(),
    ratios: Sequence[str] = RATIOS,
    labeled_recipe: str = "paper",
) -> dict[str, Any]:
    """Build the split manifest of ``dataset`` from the files present (see the module docstring).

    Args:
        dataset: the dataset (every image is read once, for its shape and annotation status).
        recipe: image-level recipe; ``None`` = the dataset's ``split_recipe`` attribute or ``"6:2:2"``.
        seed: split seed (image order and labeled-patch order derive from it).
        patch: patch parameters.
        ratios: labeled ratios to record.
        labeled_recipe: ``"paper"`` (default) or ``"image"`` (whole labeled images, no overlap).

    Returns:
        the manifest as a JSON-serialisable dict (write it with :func:`save_manifest`).
    """
    recipe = recipe or getattr(dataset, "split_recipe", None) or DEFAULT_RECIPE
    if labeled_recipe not in LABELED_RECIPES:
        raise ManifestError(f"unknown split recipe {labeled_recipe!r}; use one of {', '.join(LABELED_RECIPES)}")
    names = sorted(dataset.image_names())
    if not names:
        raise ManifestError(f"dataset {dataset.name!r} has no images")
    label_fp = getattr(dataset, "label_fingerprint", None)
    info: dict[str, dict[str, Any]] = {}
    for name in names:
        rec = dataset.load(name)
        info[name] = {
            "name": name,
            "sha256": dataset.fingerprint(name),
            "label_sha256": label_fp(name) if callable(label_fp) else None,
            "height": int(rec.image.shape[0]),
            "width": int(rec.image.shape[1]),
            "annotated": rec.label is not None,
        }
        if not callable(label_fp) and rec.label is not None:
            info[name]["label_sha256"] = hashlib.sha256(np.ascontiguousarray(rec.label, np.int32).tobytes()).hexdigest()
    annotated = [n for n in names if info[n]["annotated"]]
    n_train, n_val, n_test = _dataset_counts(dataset, recipe, len(annotated))
    ranked = _rank(seed, "image", annotated)
    part_of = {n: "train" for n in names}  # unannotated -> train
    for n in ranked[n_train : n_train + n_val]:
        part_of[n] = "val"
    for n in ranked[n_train + n_val :]:
        part_of[n] = "test"
    for n in names:
        info[n]["part"] = part_of[n]

    patches: dict[str, list[str]] = {p: [] for p in PARTS}
    eligible: list[str] = []
    for n in names:
        ids = [patch_id(n, pos) for pos in patch_positions((info[n]["height"], info[n]["width"]), patch)]
        patches[part_of[n]].extend(ids)
        if part_of[n] == "train" and info[n]["annotated"]:
            eligible.extend(ids)
    labeled = _labeled_paper(patches["train"], eligible, seed, ratios)
    manifest = {
        "format": MANIFEST_FORMAT,
        "dataset": dataset.name,
        "recipe": recipe,
        "image_counts": {"train": n_train + len(names) - len(annotated), "val": n_val, "test": n_test},
        "seed": int(seed),
        "patch": patch.to_dict(),
        "ratios": list(labeled),
        "images": [info[n] for n in names],
        "patches": patches,
        "labeled": labeled,
    }
    check_manifest(manifest)
    return relabel(manifest, labeled_recipe) if labeled_recipe != "paper" else manifest


def _labeled_paper(train: Sequence[str], eligible: Sequence[str], seed: int,
                   ratios: Sequence[str]) -> dict[str, list[str]]:
    """``floor(n_train_patches * r)`` patches of one seeded ranking of the eligible patch ids."""
    ranked_patches = _rank(seed, "patch", eligible)
    labeled: dict[str, list[str]] = {}
    for r in ratios:
        key = normalize_ratio(r)
        k = min(len(train) * Fraction(key).numerator // Fraction(key).denominator, len(eligible))
        chosen = set(ranked_patches[:k])
        labeled[key] = [pid for pid in train if pid in chosen]  # manifest (image, position) order
    return labeled


def _labeled_image(train: Sequence[str], images: Sequence[str], seed: int,
                   ratios: Sequence[str]) -> dict[str, list[str]]:
    """Whole images: ``max(1, round(r * n))`` of the ``n`` annotated training images (half up)."""
    ranked = _rank(seed, "labeled-image", images)
    labeled: dict[str, list[str]] = {}
    for r in ratios:
        key = normalize_ratio(r)
        k = min(len(ranked), max(1, int(len(ranked) * Fraction(key) + Fraction(1, 2))))
        chosen = set(ranked[:k])
        labeled[key] = [pid for pid in train if parse_patch_id(pid)[0] in chosen]
    return labeled


def labeled_recipe_of(manifest: Mapping[str, Any]) -> str:
    """``"paper"`` or ``"image"`` (manifests without the field are ``paper``)."""
    return str(manifest.get("labeled_recipe", "paper"))


def relabel(manifest: Mapping[str, Any], labeled_recipe: str) -> dict[str, Any]:
    """The same split (images, parts, val, test) with the labeled subsets drawn by ``labeled_recipe``.

    Pure: needs no data, only the manifest. ``relabel(m, "paper")`` of a ``paper`` manifest is ``m``.

    Raises:
        ManifestError: unknown recipe.
    """
    if labeled_recipe not in LABELED_RECIPES:
        raise ManifestError(f"unknown split recipe {labeled_recipe!r}; use one of {', '.join(LABELED_RECIPES)}")
    out = {k: v for k, v in manifest.items() if k != "labeled_recipe"}
    train = list(manifest["patches"]["train"])
    annotated = {im["name"] for im in manifest["images"] if im["part"] == "train" and im["annotated"]}
    ratios = list(manifest["labeled"])
    if labeled_recipe == "paper":
        eligible = [pid for pid in train if parse_patch_id(pid)[0] in annotated]
        out["labeled"] = _labeled_paper(train, eligible, int(manifest["seed"]), ratios)
    else:
        out["labeled"] = _labeled_image(train, sorted(annotated), int(manifest["seed"]), ratios)
        out["labeled_recipe"] = labeled_recipe
    check_manifest(out)
    return out


# ---------------------------------------------------------------------------------------------- io
def save_manifest(manifest: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``manifest`` as JSON (atomically) to ``path``; returns the path."""
    check_manifest(manifest)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a committed file should be world-readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read and structurally check a manifest file.

    Raises:
        ManifestError: unreadable JSON or an inconsistent manifest (names the file).
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: split manifest not found. Create it with `python -m benchmark splits make`.") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(
            f"{path}: not a readable JSON manifest ({exc}). Restore it from git or regenerate it with "
            f"`python -m benchmark splits make --force`."
        ) from exc
    try:
        check_manifest(manifest)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    return manifest


def check_manifest(manifest: Mapping[str, Any]) -> None:
    """Structural checks that need no data: parts disjoint, labeled ⊂ train, nested ratios, ids valid.

    Raises:
        ManifestError: the first problem found.
    """
    try:
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"unknown manifest format {manifest.get('format')!r} (expected {MANIFEST_FORMAT!r})")
        params = PatchParams(**manifest["patch"])
        images = {im["name"]: im for im in manifest["images"]}
        if len(images) != len(manifest["images"]):
            raise ManifestError("duplicate image names")
        parts = {p: list(manifest["patches"][p]) for p in PARTS}
        labeled = {r: list(v) for r, v in manifest["labeled"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"malformed manifest (missing or wrong field: {exc})") from None
    seen: dict[str, str] = {}
    for part, ids in parts.items():
        for pid in ids:
            if pid in seen:
                raise ManifestError(f"patch {pid!r} is in both {seen[pid]!r} and {part!r}")
            seen[pid] = part
    expected: dict[str, str] = {}
    for im in images.values():
        if im.get("part") not in PARTS:
            raise ManifestError(f"image {im['name']!r} has invalid part {im.get('part')!r}")
        if im["part"] in ("val", "test") and not im.get("annotated"):
            raise ManifestError(f"unannotated image {im['name']!r} cannot be in {im['part']!r}")
        for pos in patch_positions((im["height"], im["width"]), params):
            expected[patch_id(im["name"], pos)] = im["part"]
    if expected != seen:
        diff = sorted(set(expected.items()) ^ set(seen.items()))[:3]
        raise ManifestError(f"patch lists do not match the images' parts and sizes (e.g. {diff})")
    train = set(parts["train"])
    prev: set[str] = set()
    for r in sorted(labeled, key=Fraction):
        ids = set(labeled[r])
        if len(ids) != len(labeled[r]):
            raise ManifestError(f"ratio {r}: duplicate labeled patch ids")
        if not ids <= train:
            raise ManifestError(f"ratio {r}: labeled patches outside train, e.g. {sorted(ids - train)[:2]}")
        bad = [pid for pid in ids if not images[parse_patch_id(pid)[0]].get("annotated")]
        if bad:
            raise ManifestError(f"ratio {r}: labeled patches from unannotated images, e.g. {bad[:2]}")
        if not prev <= ids:
            raise ManifestError(f"ratio {r}: labeled sets are not nested (smaller ratio not included)")
        prev = ids
    _check_labeled_recipe(manifest, parts["train"], labeled)


def _check_labeled_recipe(manifest: Mapping[str, Any], train: Sequence[str], labeled: Mapping[str, list]) -> None:
    recipe = labeled_recipe_of(manifest)
    if recipe not in LABELED_RECIPES or "labeled_recipe" in manifest and recipe == "paper":
        raise ManifestError(f"labeled_recipe {manifest.get('labeled_recipe')!r}: only 'image' is recorded "
                            f"(a paper manifest has no labeled_recipe field)")
    if recipe != "image":
        return
    for r, ids in labeled.items():
        chosen = set(ids)
        whole = {parse_patch_id(pid)[0] for pid in chosen}
        if any(pid not in chosen for pid in train if parse_patch_id(pid)[0] in whole):
            raise ManifestError(f"ratio {r}: the image recipe labels whole images, but some images are "
                                f"labeled only in part")


# ---------------------------------------------------------------------------------------------- verify
def verify_manifest(manifest: Mapping[str, Any], dataset: Dataset, *, labels: str = "warn") -> None:
    """Check that the files on disk are the ones the manifest was made from.

    Args:
        manifest: a manifest (from :func:`load_manifest` or :func:`make_manifest`).
        dataset: the dataset instance whose files are checked.
        labels: what to do when an image's *annotation* differs from the manifest's record
            (e.g. official XML instead of the derived instance map): ``"warn"`` (default),
            ``"error"`` or ``"ignore"``. An image recorded as annotated that now has no annotation
            is always an error.

    Raises:
        ManifestError: wrong dataset, missing image(s) or image hash mismatch(es); the message names the
            files and the fix.
    """
    check_manifest(manifest)
    if manifest["dataset"] != dataset.name:
        raise ManifestError(
            f"manifest is for dataset {manifest['dataset']!r}, not {dataset.name!r}; use splits/{dataset.name}.json."
        )
    present = set(dataset.image_names())
    recorded = [im["name"] for im in manifest["images"]]
    missing = [n for n in recorded if n not in present]
    fix = (
        "Fix: re-download the dataset so its files match the published split (see the dataset's "
        "homepage), or, for your own data, regenerate the manifest with "
        f"`python -m benchmark splits make --dataset {dataset.name} --force` (results are then not "
        f"comparable with published ones)."
    )
    root = getattr(dataset, "root", "?")
    if missing:
        raise ManifestError(
            f"{len(missing)} image(s) of the split manifest for {dataset.name!r} are missing under {root}: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}.\n{fix}"
        )
    extra = sorted(present - set(recorded))
    if extra:
        warnings.warn(
            f"{len(extra)} image(s) under {root} are not in the {dataset.name!r} split manifest and are "
            f"ignored: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}",
            stacklevel=2,
        )
    files = getattr(dataset, "source_files", None)
    mismatched = []
    for im in manifest["images"]:
        if dataset.fingerprint(im["name"]) != im["sha256"]:
            where = files(im["name"])["image"] if callable(files) else im["name"]
            mismatched.append(f"{where} (expected sha256 {im['sha256'][:12]}...)")
    if mismatched:
        raise ManifestError(
            f"{len(mismatched)} image file(s) of {dataset.name!r} differ from the split manifest: "
            f"{'; '.join(mismatched[:10])}{' ...' if len(mismatched) > 10 else ''}.\n{fix}"
        )
    if labels == "ignore":
        return
    label_fp = getattr(dataset, "label_fingerprint", None)
    annotated = getattr(dataset, "is_annotated", None)
    lost, changed = [], []
    for im in manifest["images"]:
        now_annotated = annotated(im["name"]) if callable(annotated) else dataset.load(im["name"]).label is not None
        if im["annotated"] and not now_annotated:
            lost.append(im["name"])
        elif callable(label_fp) and im.get("label_sha256") and label_fp(im["name"]) != im["label_sha256"]:
            changed.append(files(im["name"]).get("label", im["name"]) if callable(files) else im["name"])
    if lost:
        raise ManifestError(
            f"{len(lost)} image(s) annotated in the split manifest have no annotation under {root}: "
            f"{', '.join(lost[:10])}. Add their annotation files (see the expected layout).\n{fix}"
        )
    if changed:
        msg = (
            f"{len(changed)} annotation(s) of {dataset.name!r} differ from those the split manifest was made "
            f"with (different files or rasterisation options): {', '.join(changed[:5])}"
            f"{' ...' if len(changed) > 5 else ''}. Scores are not exactly comparable with published ones."
        )
        if labels == "error":
            raise ManifestError(msg + f"\n{fix}")
        warnings.warn(msg, stacklevel=2)


# ---------------------------------------------------------------------------------------------- counts
def overlap_stats(manifest: Mapping[str, Any], ratio: str) -> dict[str, Any]:
    """How much of the training images one ratio's labeled patches reveal.

    Returns:
        ``labeled_area_pct``: % of the training-image area (all training images) covered by the
        union of labeled patches; ``unlabeled_overlapping``: unlabeled training patches sharing at
        least one pixel with a labeled patch; ``unlabeled_inside``: unlabeled patches lying
        entirely inside the union of labeled patches.
    """
    size = int(manifest["patch"]["size"])
    train_images = {im["name"]: im for im in manifest["images"] if im["part"] == "train"}
    labeled = set(manifest["labeled"][ratio])
    masks = {n: np.zeros((im["height"], im["width"]), bool) for n, im in train_images.items()}
    for pid in labeled:
        name, (r, c) = parse_patch_id(pid)
        masks[name][r : r + size, c : c + size] = True
    overlapping = inside = 0
    for pid in manifest["patches"]["train"]:
        if pid in labeled:
            continue
        name, (r, c) = parse_patch_id(pid)
        window = masks[name][r : r + size, c : c + size]
        overlapping += bool(window.any())
        inside += bool(window.all())
    total = sum(m.size for m in masks.values())
    covered = sum(int(m.sum()) for m in masks.values())
    return {"labeled_area_pct": 100.0 * covered / total if total else 0.0,
            "unlabeled_overlapping": overlapping, "unlabeled_inside": inside}


def split_counts(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table 5 rows: one dict per ratio with ``labeled``, ``unlabeled``, ``val``, ``test`` patch counts,
    ``images_train``/``images_val``/``images_test``, ``labeled_images`` (training images with at least
    one labeled patch), the recipe and the :func:`overlap_stats`."""
    n_train = len(manifest["patches"]["train"])
    imgs = {p: sum(1 for im in manifest["images"] if im["part"] == p) for p in PARTS}
    rows = []
    for r in sorted(manifest["labeled"], key=Fraction):
        n_lab = len(manifest["labeled"][r])
        rows.append(
            {
                "dataset": manifest["dataset"],
                "split_recipe": labeled_recipe_of(manifest),
                "ratio": r,
                "labeled": n_lab,
                "unlabeled": n_train - n_lab,
                "val": len(manifest["patches"]["val"]),
                "test": len(manifest["patches"]["test"]),
                "images_train": imgs["train"],
                "images_val": imgs["val"],
                "images_test": imgs["test"],
                "labeled_images": len({parse_patch_id(pid)[0] for pid in manifest["labeled"][r]}),
                **overlap_stats(manifest, r),
            }
        )
    return rows


def format_counts(manifest: Mapping[str, Any], fmt: str = "md") -> str:
    """Table 5 counts of ``manifest`` as a Markdown table (``fmt="md"``) or JSON (``fmt="json"``), with
    the labeled area and the unlabeled patches that overlap labeled ones."""
    if fmt not in ("md", "json"):
        raise ValueError(f"fmt must be 'md' or 'json', got {fmt!r}")
    rows = split_counts(manifest)
    if fmt == "json":
        return json.dumps(rows, indent=1)
    r0 = rows[0] if rows else {}
    head = (
        f"{manifest['dataset']}: split recipe {labeled_recipe_of(manifest)}, image recipe {manifest['recipe']}, "
        f"seed {manifest['seed']}, images train/val/test {r0.get('images_train')}/{r0.get('images_val')}/"
        f"{r0.get('images_test')}, patches {manifest['patch']['size']} px stride {manifest['patch']['stride']}\n\n"
    )
    lines = [
        ("| Dataset | Ratio | Labeled | Unlabeled | Validation | Testing | Labeled images | Labeled area % "
         "| Unlabeled overlapping labeled | Unlabeled inside labeled |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['ratio']} | {r['labeled']} | {r['unlabeled']} | {r['val']} | "
                     f"{r['test']} | {r['labeled_images']} | {r['labeled_area_pct']:.1f} | "
                     f"{r['unlabeled_overlapping']} | {r['unlabeled_inside']} |")
    return head + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- build
@dataclasses.dataclass(frozen=True)
class SplitData:
    """Everything one (dataset, ratio) cell needs.

    Attributes:
        dataset: dataset name.
        ratio: ``"1/8"``, ``"1/4"`` or ``"1/2"``.
        train: labeled patches (with labels), unlabeled patches (``label=None``; ``points``/``boxes``
            only if requested in ``needs`` and the image is annotated), val patches (with labels).
        test_patches: labeled test patches, in manifest order (image by image, row-major).
        test_images: the whole test images with their instance maps (for the whole-image protocol).
        test_positions: image name -> ``(row, col)`` of its test patches, in ``test_patches`` order.
        patch: the patch parameters.
    """

    dataset: str
    ratio: str
    train: TrainData
    test_patches: list[Patch]
    test_images: list[ImageRecord]
    test_positions: dict[str, list[tuple[int, int]]]
    patch: PatchParams

    def stitch_test_predictions(
        self, preds: Mapping[str, np.ndarray] | Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Stitch per-patch test predictions (by patch id, or aligned with ``test_patches``) into one
        ``int32`` instance map per test image (see :mod:`benchmark.data.stitching`)."""
        from benchmark.data.stitching import stitch

        if not isinstance(preds, Mapping):
            if len(preds) != len(self.test_patches):
                raise ValueError(f"{len(preds)} predictions for {len(self.test_patches)} test patches")
            preds = {p.id: m for p, m in zip(self.test_patches, preds)}
        out = {}
        for rec in self.test_images:
            positions = self.test_positions[rec.name]
            maps = [preds[patch_id(rec.name, pos)] for pos in positions]
            out[rec.name] = stitch(maps, positions, rec.image.shape)
        return out


def build_split(
    dataset: Dataset,
    manifest: Mapping[str, Any],
    ratio: str | float | Fraction,
    needs: Iterable[str] = frozenset(),
    *,
    cache: PatchCache | None = None,
    verify: bool = False,
) -> SplitData:
    """Materialise the patches of one labeled ratio of a manifest.

    Args:
        dataset: the dataset the manifest was made from.
        manifest: the split manifest.
        ratio: ``"1/8"``, ``"1/4"``, ``"1/2"`` (or the equivalent number).
        needs: extra supervision for the unlabeled patches (subset of ``{"points", "boxes"}``), derived
            from their hidden ground truth; without it unlabeled patches carry the image only.
        cache: patch cache (default: :class:`PatchCache` at its default location).
        verify: run :func:`verify_manifest` first.

    Raises:
        ManifestError: unknown ratio or needs; :class:`DatasetError` from reading files.
    """
    needs = frozenset(needs)
    if not needs <= KNOWN_NEEDS:
        raise ManifestError(f"unknown needs {sorted(needs - KNOWN_NEEDS)}; known: {sorted(KNOWN_NEEDS)}")
    key = normalize_ratio(ratio)
    if key not in manifest["labeled"]:
        raise ManifestError(f"ratio {key} not in the manifest (has {', '.join(manifest['labeled'])})")
    if verify:
        verify_manifest(manifest, dataset)
    params = PatchParams(**manifest["patch"])
    cache = cache if cache is not None else PatchCache()
    labeled_ids = set(manifest["labeled"][key])
    parts = _SplitParts()
    for im in manifest["images"]:
        ip = _cached_image(cache, dataset, im, params)
        parts.add(im["name"], im["part"], ip, labeled_ids, needs)
        if im["part"] == "test":
            # reassembled from the cached patches: no second read of the source files
            parts.test_images.append(
                ImageRecord(im["name"], ip.whole_image(), ip.full_label, f"{dataset.name}:{im['name']}"))
    if len(parts.labeled) != len(labeled_ids):
        raise ManifestError(
            f"ratio {key}: {len(labeled_ids) - len(parts.labeled)} labeled patch ids not found in the data")
    return SplitData(
        dataset=manifest["dataset"],
        ratio=key,
        train=TrainData(labeled=parts.labeled, unlabeled=parts.unlabeled, val=parts.val),
        test_patches=parts.test,
        test_images=parts.test_images,
        test_positions=parts.test_positions,
        patch=params,
    )


def _cached_image(cache: PatchCache, dataset: Dataset, im: Mapping[str, Any], params: PatchParams):
    """The cached patches of one manifest image, checked against the manifest's size and annotation."""
    name = im["name"]
    ip = cache.get(dataset, name, params)
    if ip.shape != (im["height"], im["width"]):
        raise ManifestError(
            f"image {name!r} is {ip.shape[0]}x{ip.shape[1]} but the manifest says "
            f"{im['height']}x{im['width']}; the file changed: re-download it or regenerate the manifest."
        )
    if im["annotated"] and ip.labels is None:
        raise ManifestError(f"image {name!r} is annotated in the manifest but has no annotation on disk.")
    return ip


@dataclasses.dataclass
class _SplitParts:
    """The patches of a split as :func:`build_split` collects them, image by image."""

    labeled: list[Patch] = dataclasses.field(default_factory=list)
    unlabeled: list[Patch] = dataclasses.field(default_factory=list)
    val: list[Patch] = dataclasses.field(default_factory=list)
    test: list[Patch] = dataclasses.field(default_factory=list)
    test_positions: dict[str, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)
    test_images: list[ImageRecord] = dataclasses.field(default_factory=list)

    def add(self, name: str, part: str, ip, labeled_ids: set[str], needs: frozenset[str]) -> None:
        """Sort every patch of image ``name`` (of manifest ``part``) into its pool."""
        for i, pos in enumerate(ip.positions):
            pid = patch_id(name, pos)
            image = ip.images[i]
            if part == "train" and pid in labeled_ids:
                self.labeled.append(Patch(pid, image, ip.labels[i]))
            elif part == "train":
                pts = boxes = None
                if ip.labels is not None and needs:
                    gt = ip.labels[i]
                    pts = instance_points(gt) if "points" in needs else None
                    boxes = instance_boxes(gt) if "boxes" in needs else None
                self.unlabeled.append(Patch(pid, image, None, pts, boxes))
            elif part == "val":
                self.val.append(Patch(pid, image, ip.labels[i]))
            else:
                self.test.append(Patch(pid, image, ip.labels[i]))
                self.test_positions.setdefault(name, []).append(pos)


def manifest_path(dataset_name: str, splits_dir: str | Path | None = None) -> Path:
    """``splits/<dataset_name>.json`` in the repository (or in ``splits_dir``)."""
    base = Path(splits_dir) if splits_dir is not None else Path(__file__).resolve().parents[2] / "splits"
    return base / f"{dataset_name}.json"
