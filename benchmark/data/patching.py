"""Cutting whole images into overlapping patches, with an on-disk cache.

Rule (the paper's preprocessing, after Graham et al. 2019): square patches of ``size`` (256) every
``stride`` (128) pixels; the last row/column of patches is aligned to the image border so that every
pixel is covered (1000x1000 -> 7x7 = 49 patches with starts 0,128,...,640,744; 512x512 -> 3x3 = 9).

Images smaller than ``size`` along an axis are padded at the bottom/right (``pad=True``, default) with
black image pixels and background label; the patch then has positions ``(0, ...)`` on that axis and
stitching crops the padding away. With ``pad=False`` such images are refused.

Instance maps are cropped and relabelled to ``1..N`` per patch (in increasing order of the source id).
An instance cut by the patch border keeps one id even if the crop splits it into several pieces.

Patch id: ``"<image name>@<row>_<col>"`` where ``row``/``col`` are the pixel offsets of the patch's
top-left corner in the (padded) image.

Cache: the patches of one image are stored as one ``.npz`` file under ``cache_dir`` (default
``$NUCLEI_SSL_BENCH_CACHE/patches`` or ``~/.cache/nuclei-ssl-bench/patches``; never next to the data),
keyed by the dataset name, image name, image fingerprint, label fingerprint (incl. rasterisation
options) and the patch parameters. Files are written atomically (temp file + rename); an unreadable or
inconsistent cache file is deleted and recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.data.base import Dataset, DatasetError
from benchmark.data.io import relabel_sequential

#: environment variable for the cache root (patches go to ``$NUCLEI_SSL_BENCH_CACHE/patches``).
CACHE_ENV = "NUCLEI_SSL_BENCH_CACHE"
#: bump when the cutting rule changes (invalidates caches).
PATCHING_VERSION = 2


@dataclasses.dataclass(frozen=True)
class PatchParams:
    """How images are cut.

    Attributes:
        size: patch side in pixels (paper: 256).
        stride: step between patch starts (paper: 128, i.e. 128 px overlap).
        pad: pad images smaller than ``size`` (True) or refuse them (False).
    """

    size: int = 256
    stride: int = 128
    pad: bool = True

    def __post_init__(self) -> None:
        if self.size < 1 or self.stride < 1:
            raise ValueError(f"patch size and stride must be >= 1, got {self.size}/{self.stride}")
        if self.stride > self.size:
            raise ValueError(f"stride {self.stride} > size {self.size} would leave pixels uncovered")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def axis_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets along one axis: ``0, stride, 2*stride, ...`` plus ``length - size`` if needed.

    ``length < size`` gives ``[0]`` (the caller pads).
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def patch_positions(shape: Sequence[int], params: PatchParams = PatchParams()) -> list[tuple[int, int]]:
    """Top-left ``(row, col)`` of every patch of an image of ``shape`` (row-major order).

    Raises:
        DatasetError: the image is smaller than a patch and ``params.pad`` is False.
    """
    h, w = int(shape[0]), int(shape[1])
    if (h < params.size or w < params.size) and not params.pad:
        raise DatasetError(
            f"image of {h}x{w} is smaller than the {params.size}x{params.size} patch; "
            f"use PatchParams(pad=True) or a smaller patch size."
        )
    return [(r, c) for r in axis_starts(h, params.size, params.stride) for c in axis_starts(w, params.size, params.stride)]


def patch_id(image_name: str, pos: tuple[int, int]) -> str:
    """``"<image name>@<row>_<col>"``."""
    return f"{image_name}@{pos[0]}_{pos[1]}"


def parse_patch_id(pid: str) -> tuple[str, tuple[int, int]]:
    """Inverse of :func:`patch_id`: ``(image name, (row, col))``."""
    name, sep, rc = pid.rpartition("@")
    r, sep2, c = rc.partition("_")
    if not sep or not sep2 or not r.isdigit() or not c.isdigit():
        raise ValueError(f"not a patch id: {pid!r} (expected '<image>@<row>_<col>')")
    return name, (int(r), int(c))


def pad_to(arr: np.ndarray, size: int) -> np.ndarray:
    """Pad ``arr`` (H, W[, C]) with zeros at the bottom/right to at least ``size`` x ``size``."""
    h, w = arr.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return arr
    widths = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, widths, mode="constant")


@dataclasses.dataclass(frozen=True)
class ImagePatches:
    """All patches of one image.

    Attributes:
        name: image name.
        shape: ``(H, W)`` of the original (unpadded) image.
        positions: ``(row, col)`` per patch.
        images: ``uint8 (N, size, size, 3)``.
        labels: ``int32 (N, size, size)`` relabelled per patch, or ``None`` for an unannotated image.
        full_label: the whole image's ``int32 (H, W)`` instance map (or ``None``), so that whole-image
            evaluation needs no second read of the source files.
    """

    name: str
    shape: tuple[int, int]
    positions: list[tuple[int, int]]
    images: np.ndarray
    labels: np.ndarray | None
    full_label: np.ndarray | None = None

    @property
    def ids(self) -> list[str]:
        return [patch_id(self.name, p) for p in self.positions]

    def whole_image(self) -> np.ndarray:
        """The original ``uint8 (H, W, 3)`` image, reassembled from the patches (exact)."""
        size = self.images.shape[1]
        canvas = np.zeros((max(self.shape[0], size), max(self.shape[1], size), 3), np.uint8)
        for (r, c), patch in zip(self.positions, self.images):
            canvas[r : r + size, c : c + size] = patch
        return canvas[: self.shape[0], : self.shape[1]].copy()


def cut_patches(
    image: np.ndarray, label: np.ndarray | None, params: PatchParams = PatchParams(), name: str = ""
) -> ImagePatches:
    """Cut one image (and its instance map) into patches following the module rules."""
    positions = patch_positions(image.shape, params)
    s = params.size
    img = pad_to(image, s)
    lab = pad_to(label, s) if label is not None else None
    images = np.stack([img[r : r + s, c : c + s] for r, c in positions]).astype(np.uint8, copy=False)
    labels = None
    if lab is not None:
        labels = np.stack([relabel_sequential(lab[r : r + s, c : c + s]) for r, c in positions]).astype(np.int32)
    full = np.asarray(label, dtype=np.int32) if label is not None else None
    return ImagePatches(name, (int(image.shape[0]), int(image.shape[1])), positions, images, labels, full)


# ---------------------------------------------------------------------------------------------- cache
def cache_root() -> Path:
    """``$NUCLEI_SSL_BENCH_CACHE`` if set, else ``~/.cache/nuclei-ssl-bench`` (never beside the data)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/nuclei-ssl-bench").expanduser()


def default_cache_dir() -> Path:
    """``$NUCLEI_SSL_BENCH_CACHE/patches`` if set, else ``~/.cache/nuclei-ssl-bench/patches``."""
    return cache_root() / "patches"


def cache_key(dataset: Dataset, name: str, params: PatchParams) -> str:
    """Hex key identifying one image's patches (source bytes, label source/options, patch params)."""
    label_fp = getattr(dataset, "label_fingerprint", None)
    parts = [
        f"v{PATCHING_VERSION}",
        dataset.name,
        name,
        dataset.fingerprint(name),
        str(label_fp(name) if callable(label_fp) else "-"),
        f"{params.size}/{params.stride}/{int(params.pad)}",
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class PatchCache:
    """Per-image ``.npz`` cache of cut patches.

    Args:
        cache_dir: cache folder (default :func:`default_cache_dir`); ``False``-y ``enabled`` turns it off.
        enabled: when False nothing is read or written (patches are cut every time).
    """

    def __init__(self, cache_dir: str | Path | None = None, *, enabled: bool = True) -> None:
        self.dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.enabled = enabled

    def path(self, dataset: Dataset, key: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset.name) or "dataset"
        return self.dir / safe / f"{key[:32]}.npz"

    def get(self, dataset: Dataset, name: str, params: PatchParams = PatchParams()) -> ImagePatches:
        """The patches of image ``name``: from the cache if valid, else cut (and stored)."""
        if not self.enabled:
            rec = dataset.load(name)
            return cut_patches(rec.image, rec.label, params, name)
        key = cache_key(dataset, name, params)
        path = self.path(dataset, key)
        hit = self._read(path, key, name, params)
        if hit is not None:
            return hit
        rec = dataset.load(name)
        patches = cut_patches(rec.image, rec.label, params, name)
        self._write(path, key, patches)
        return patches

    @staticmethod
    def _read(path: Path, key: str, name: str, params: PatchParams) -> ImagePatches | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    raise ValueError("key mismatch")
                shape = tuple(int(v) for v in z["shape"])
                positions = [tuple(int(v) for v in p) for p in z["positions"]]
                images = z["images"]
                labels = z["labels"] if bool(z["has_labels"]) else None
                full = z["full_label"] if labels is not None else None
            n = len(positions)
            if (
                positions != patch_positions(shape, params)
                or images.shape != (n, params.size, params.size, 3)
                or images.dtype != np.uint8
                or (labels is not None and (labels.shape != images.shape[:3] or labels.dtype != np.int32))
                or (full is not None and (full.shape != shape or full.dtype != np.int32))
            ):
                raise ValueError("inconsistent content")
            return ImagePatches(name, shape, positions, images, labels, full)  # type: ignore[arg-type]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            try:
                path.unlink()  # corrupt: recompute
            except OSError:
                pass
            return None

    @staticmethod
    def _write(path: Path, key: str, p: ImagePatches) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez_compressed(
                        fh,
                        key=np.array(key),
                        shape=np.array(p.shape, dtype=np.int64),
                        positions=np.array(p.positions, dtype=np.int64).reshape(-1, 2),
                        images=p.images,
                        labels=p.labels if p.labels is not None else np.zeros((0,), np.int32),
                        has_labels=np.array(p.labels is not None),
                        full_label=p.full_label if p.full_label is not None else np.zeros((0,), np.int32),
                    )
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a read-only or full cache dir must not break a run: just don't cache
