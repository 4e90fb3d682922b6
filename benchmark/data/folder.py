"""File-backed datasets: the generic image/label folder, its TOML form, and the shared machinery.

Generic folder layout (``folder:PATH`` on the command line)::

    PATH/
      images/<stem>.{png,tif,tiff,jpg,jpeg}     RGB (see benchmark.data.io for accepted variants)
      labels/<stem>.{tif,tiff,png,npy}          int instance map, 0 = background (optional per image)

An image without a label file is *unannotated*: it can only feed the unlabeled pool. A label without an
image, two images (or two labels) sharing a stem, or an ``images/`` folder without images is an error.

TOML form (``folder:PATH/dataset.toml``, ``PATH/dataset.toml``, or ``folder:PATH`` with a
``dataset.toml`` inside PATH, which is then always read)::

    name = "my-nuclei"          # optional; default: the folder's name
    images = "images"           # optional; relative to the TOML file
    labels = "labels"           # optional; relative to the TOML file
    description = "..."         # optional
    split_recipe = "6:2:2"      # optional; default split recipe (see benchmark.data.splits)

The classes here also serve MoNuSeg, CryoNuSeg and DigestPath: :class:`FileDataset` holds an index
``name -> (image file, label source)`` and implements loading, fingerprints and error reporting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from benchmark.data import io as dio
from benchmark.data.base import (
    Dataset,
    DatasetError,
    DatasetNotFoundError,
    ImageRecord,
    default_data_root,
    sha256_file,
)

#: a folder dataset's description file, read when it sits beside ``images/`` (``folder:PATH``).
DATASET_TOML = "dataset.toml"

#: label-source kinds understood by :class:`FileDataset`.
LABEL_KINDS = ("map", "aperio_xml", "roi_zip")


@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file on disk, or a member of a zip archive (``member`` set; nested zips are not needed)."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @property
    def suffix_path(self) -> Path:
        """A path whose suffix is the real file's (selects the decoder)."""
        return Path(self.member) if self.member else self.path

    def read_bytes(self) -> bytes | None:
        """The member's bytes, or ``None`` for a plain file (readers open it themselves)."""
        if self.member is None:
            return None
        try:
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(self.member)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"{self}: cannot read zip member ({exc}); re-download {self.path}.") from exc

    def data(self) -> bytes:
        """The file's bytes (plain file or zip member)."""
        raw = self.read_bytes()
        if raw is not None:
            return raw
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{self}: cannot read file ({exc}).") from exc

    def stat_key(self) -> tuple:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise DatasetError(f"{self}: file vanished ({exc}).") from exc
        return (str(self.path), self.member, st.st_size, st.st_mtime_ns)


@dataclasses.dataclass(frozen=True)
class LabelSource:
    """Where an image's annotation comes from.

    Attributes:
        kind: ``"map"`` (integer instance map file), ``"aperio_xml"`` (MoNuSeg polygons) or
            ``"roi_zip"`` (ImageJ ROI set).
        ref: the file.
    """

    kind: str
    ref: FileRef


@dataclasses.dataclass(frozen=True)
class IndexEntry:
    image: FileRef
    label: LabelSource | None


_HASH_CACHE: dict[tuple, str] = {}


def sha256_ref(ref: FileRef) -> str:
    """SHA-256 of a file's (or zip member's) bytes, memoised on path/size/mtime."""
    key = ref.stat_key()
    hit = _HASH_CACHE.get(key)
    if hit is None:
        if ref.member is None:
            try:
                hit = sha256_file(ref.path)
            except OSError as exc:
                raise DatasetError(f"{ref}: cannot read file ({exc}).") from exc
        else:
            hit = hashlib.sha256(ref.data()).hexdigest()
        _HASH_CACHE[key] = hit
    return hit


class FileDataset(Dataset):
    """A dataset backed by files, described by an index ``name -> IndexEntry``.

    Subclasses implement :meth:`_build_index` (raise :class:`DatasetNotFoundError` via
    :meth:`_not_found` when the layout is absent) and may override :meth:`label_options` (options that
    change how labels are rasterised; they enter :meth:`label_fingerprint`).

    Fingerprints:
        :meth:`fingerprint` is the SHA-256 of the image file's bytes (what split manifests pin).
        :meth:`label_fingerprint` is a SHA-256 over the annotation file's bytes, its kind and the
        rasterisation options (``None`` for unannotated images); manifests record it too and the
        patch cache keys on it.
    """

    #: default split recipe for :func:`benchmark.data.splits.make_manifest`.
    split_recipe: ClassVar[str] = "6:2:2"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)
        self._index_cache: dict[str, IndexEntry] | None = None

    # ------------------------------------------------------------------ subclass hooks
    def _build_index(self) -> dict[str, IndexEntry]:  # pragma: no cover - abstract in spirit
        raise NotImplementedError

    def label_options(self) -> dict[str, Any]:
        """Options that change the rasterised labels (enter :meth:`label_fingerprint`)."""
        return {}

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description of this dataset instance (recorded in manifests)."""
        return {"root": str(self.root), **self.label_options()}

    # ------------------------------------------------------------------ index
    def _not_found(self, detail: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(f"{detail}\n{self.missing_message()}")

    def index(self) -> dict[str, IndexEntry]:
        """The (cached) name -> files index."""
        if self._index_cache is None:
            if not self.root.exists():
                raise self._not_found(f"folder {self.root} does not exist.")
            self._index_cache = dict(sorted(self._build_index().items()))
            if not self._index_cache:
                raise self._not_found(f"no images found under {self.root}.")
        return self._index_cache

    def _entry(self, name: str) -> IndexEntry:
        try:
            return self.index()[name]
        except KeyError:
            raise DatasetError(
                f"dataset {self.name!r} at {self.root} has no image named {name!r} "
                f"(it has {len(self.index())} images, e.g. {next(iter(self.index()))!r}). "
                f"Check the file is present, or regenerate the split manifest for the files you have."
            ) from None

    # ------------------------------------------------------------------ Dataset API
    def image_names(self) -> list[str]:
        return list(self.index())

    def is_annotated(self, name: str) -> bool:
        """Whether ``name`` has an annotation file (cheap, no parsing)."""
        return self._entry(name).label is not None

    def source_files(self, name: str) -> dict[str, str]:
        """``{"image": path, "label": path}`` (label omitted if unannotated), for messages/manifests."""
        e = self._entry(name)
        out = {"image": str(e.image)}
        if e.label is not None:
            out["label"] = str(e.label.ref)
        return out

    def fingerprint(self, name: str) -> str:
        return sha256_ref(self._entry(name).image)

    def label_fingerprint(self, name: str) -> str | None:
        e = self._entry(name)
        if e.label is None:
            return None
        opts = ";".join(f"{k}={v}" for k, v in sorted(self.label_options().items()))
        text = f"{e.label.kind}|{sha256_ref(e.label.ref)}|{opts}"
        return hashlib.sha256(text.encode()).hexdigest()

    def load(self, name: str) -> ImageRecord:
        e = self._entry(name)
        image = dio.read_image(e.image.suffix_path, data=e.image.read_bytes(), name=str(e.image))
        label = None
        sources = [str(e.image)]
        if e.label is not None:
            label = self._read_label(e.label, image.shape[:2])
            sources.append(str(e.label.ref))
        return ImageRecord(name=name, image=image, label=label, source=" + ".join(sources))

    def _read_label(self, src: LabelSource, shape: tuple[int, int]) -> np.ndarray:
        ref = src.ref
        if src.kind == "map":
            return dio.read_label(ref.suffix_path, expected_shape=shape, data=ref.read_bytes(), name=str(ref))
        if src.kind == "aperio_xml":
            regions, degenerate = dio.read_aperio_regions(ref.path)
            polys = dio.aperio_to_pixel_polygons([verts for _, verts in regions])
            dio.check_region_polygons(list(zip([r for r, _ in regions], polys)), degenerate, shape, str(ref))
            return dio.rasterize_polygons(polys, shape, overlap=self.label_options().get("overlap", "later"))
        if src.kind == "roi_zip":
            raw = ref.read_bytes()
            polys, _ = dio.read_imagej_roi_zip(raw if raw is not None else ref.path, name=str(ref))
            return dio.rasterize_polygons(polys, shape, overlap=self.label_options().get("overlap", "later"))
        raise DatasetError(f"{ref}: unknown label kind {src.kind!r}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------- helpers
def list_by_stem(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """``stem -> file`` for the files of ``folder`` with one of ``suffixes`` (case-insensitive).

    Raises:
        DatasetError: two files share a stem (e.g. ``a.png`` and ``a.tif``).
    """
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            p.name.encode("utf-8")
        except UnicodeEncodeError:
            raw = p.name.encode("utf-8", "surrogateescape")
            raise DatasetError(
                f"{folder}: file name {raw!r} is not valid UTF-8; the suite records file names in its "
                f"manifests and results, so rename the file (e.g. to ASCII)."
            ) from None
        name_l = p.name.lower()
        suffix = next((s for s in suffixes if name_l.endswith(s)), None)
        if suffix is None:
            continue
        stem = p.name[: -len(suffix)]
        if stem in out:
            raise DatasetError(
                f"{folder}: two {what} files share the name {stem!r} ({out[stem].name} and {p.name}). "
                f"Keep exactly one file per {what}."
            )
        out[stem] = p
    return out


# ---------------------------------------------------------------------------------------------- folder
class FolderDataset(FileDataset):
    """Generic ``images/`` + ``labels/`` folder (see the module docstring for the layout).

    Args:
        root: the folder holding ``images/`` and ``labels/``, or a ``dataset.toml`` file.
        name: dataset name (default: the TOML's ``name`` or the folder's name); it names the split
            manifest ``splits/<name>.json``.
        images: sub-folder of images (default ``"images"``).
        labels: sub-folder of labels (default ``"labels"``).
    """

    name: ClassVar[str] = "folder"
    description: ClassVar[str] = "generic folder: images/<stem>.png|tif|jpg + labels/<stem>.tif|png|npy"
    homepage: ClassVar[str] = ""
    layout: ClassVar[str] = (
        "  <root>/images/<stem>.{png,tif,tiff,jpg,jpeg}   RGB images\n"
        "  <root>/labels/<stem>.{tif,tiff,png,npy}        int instance maps (0 = background), optional per image"
    )
    image_size: ClassVar[str] = "any"

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        name: str | None = None,
        images: str = "images",
        labels: str = "labels",
        description: str | None = None,
        split_recipe: str | None = None,
    ) -> None:
        toml_conf: dict[str, Any] = {}
        if root is not None and Path(root).expanduser().suffix.lower() == ".toml":
            toml_path = Path(root).expanduser()
            toml_conf = _read_toml(toml_path)
            root = toml_path.parent
        super().__init__(root)
        self.images_dir = self.root / toml_conf.get("images", images)
        self.labels_dir = self.root / toml_conf.get("labels", labels)
        chosen = name or toml_conf.get("name") or (self.root.name if root is not None else type(self).name)
        if type(self) is FolderDataset:
            self.name = _sanitize_name(str(chosen))
        if description or toml_conf.get("description"):
            self.description = str(description or toml_conf.get("description"))
        if split_recipe or toml_conf.get("split_recipe"):
            self.split_recipe = str(split_recipe or toml_conf.get("split_recipe"))

    def config(self) -> dict[str, Any]:
        return {"root": str(self.root), "images": str(self.images_dir), "labels": str(self.labels_dir)}

    def missing_message(self) -> str:
        if self.homepage:  # a named dataset (e.g. digestpath) stored in the folder layout
            return super().missing_message()
        return (
            f"dataset folder {self.root} is missing or incomplete.\nExpected layout:\n{self.layout}\n"
            f"Pass folder:PATH with PATH the folder holding images/ (and labels/)."
        )

    def _build_index(self) -> dict[str, IndexEntry]:
        if not self.images_dir.is_dir():
            raise self._not_found(f"image folder {self.images_dir} does not exist.")
        images = list_by_stem(self.images_dir, dio.IMAGE_SUFFIXES, "image")
        if not images:
            raise DatasetNotFoundError(
                f"{self.images_dir}: the folder holds no images (*{', *'.join(dio.IMAGE_SUFFIXES)}). "
                f"Put the RGB images there.\n{self.missing_message()}"
            )
        labels = list_by_stem(self.labels_dir, dio.LABEL_SUFFIXES, "label") if self.labels_dir.is_dir() else {}
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise DatasetError(
                f"{self.labels_dir}: label file(s) without a matching image in {self.images_dir}: "
                f"{', '.join(labels[o].name for o in orphans[:5])}{' ...' if len(orphans) > 5 else ''}. "
                f"Labels must have the same stem as their image; rename or remove them."
            )
        return {
            stem: IndexEntry(FileRef(p), LabelSource("map", FileRef(labels[stem])) if stem in labels else None)
            for stem, p in images.items()
        }


def folder_dataset_name(path: Path) -> str:
    """The name of the folder dataset at ``path`` (a folder or a ``.toml``), without parsing errors:
    the TOML's ``name`` if readable, else the folder's name (sanitised)."""
    import tomllib

    toml_path = path if path.suffix.lower() == ".toml" else path / DATASET_TOML
    name = path.parent.name if path.suffix.lower() == ".toml" else path.name
    try:
        conf = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        name = str(conf.get("name") or name)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        pass  # opening the dataset reports a broken TOML with its file name
    return _sanitize_name(name)


def _sanitize_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower() or "folder"


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: dataset TOML file not found.")
    try:
        conf = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: invalid TOML ({exc}). Fix the syntax.") from exc
    allowed = {"name", "images", "labels", "description", "split_recipe"}
    unknown = sorted(set(conf) - allowed)
    if unknown:
        raise DatasetError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(allowed)}.")
    for key, value in conf.items():
        if not isinstance(value, str):
            raise DatasetError(f"{path}: key {key!r} must be a string, got {type(value).__name__}.")
    return conf


# ---------------------------------------------------------------------------------------------- in-memory
class InMemoryDataset(Dataset):
    """A dataset built from arrays in memory (programmatic use and tests).

    Args:
        items: ``name -> (image, label_or_None)``; images are validated/converted like files
            (``uint8 (H, W, 3)``), labels to ``int32`` ids ``1..N``.
        name: dataset name (default ``"memory"``).
    """

    name: ClassVar[str] = "memory"
    description: ClassVar[str] = "arrays held in memory"

    def __init__(
        self,
        items: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
        *,
        name: str = "memory",
        split_recipe: str = "6:2:2",
    ) -> None:
        super().__init__(root=Path("."))
        self.name = name
        self.split_recipe = split_recipe
        self._items: dict[str, ImageRecord] = {}
        for key in sorted(items):
            image, label = items[key]
            image = dio.to_rgb_uint8(image, f"{name}:{key}")
            if label is not None:
                label = dio.to_instance_map(label, f"{name}:{key} label")
                dio.check_label_shape(label.shape, image.shape, f"{name}:{key} label")
            self._items[key] = ImageRecord(name=key, image=image, label=label, source=f"memory:{key}")

    def image_names(self) -> list[str]:
        return list(self._items)

    def load(self, name: str) -> ImageRecord:
        try:
            return self._items[name]
        except KeyError:
            raise DatasetError(f"in-memory dataset {self.name!r} has no image {name!r}") from None

    def is_annotated(self, name: str) -> bool:
        return self.load(name).label is not None

    def fingerprint(self, name: str) -> str:
        rec = self.load(name)
        h = hashlib.sha256(repr(rec.image.shape).encode())
        h.update(rec.image.tobytes())
        return h.hexdigest()

    def label_fingerprint(self, name: str) -> str | None:
        rec = self.load(name)
        if rec.label is None:
            return None
        return hashlib.sha256(rec.label.astype(np.int32).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- specs
def dataset_from_spec(spec: str, data_root: str | Path | None = None, **options: Any) -> Dataset:
    """Build a dataset from a command-line spec.

    Args:
        spec: ``"folder:PATH"`` (a folder with ``images/`` + ``labels/``, or a ``.toml`` dataset file),
            a path ending in ``.toml``, or a registered dataset name (``"monuseg"``, ``"synthetic"``...).
        data_root: the folder holding one sub-folder per dataset (CLI ``--data-root``); ``None`` means
            ``$NUCLEI_SSL_BENCH_DATA`` or the per-user default. Registered datasets are built with
            ``root=data_root / name``. A relative ``folder:`` path is resolved against the current
            directory first, then against ``data_root``.
        options: keyword options for the dataset class.

    Raises:
        DatasetNotFoundError: a ``folder:`` path that exists nowhere.
        benchmark.registry.UnknownNameError: an unknown dataset name.
    """
    spec = spec.strip()
    if spec.startswith("folder:") or spec.lower().endswith(".toml"):
        raw = spec[len("folder:") :] if spec.startswith("folder:") else spec
        if not raw:
            raise DatasetError("'folder:' needs a path, e.g. folder:/data/my-nuclei")
        path = Path(raw).expanduser()
        candidates = [path]
        if not path.is_absolute():
            candidates.append((Path(data_root).expanduser() if data_root else default_data_root()) / path)
        for cand in candidates:
            if cand.is_dir() and (cand / DATASET_TOML).is_file():
                return FolderDataset(cand / DATASET_TOML, **options)  # never ignored silently
            if cand.exists():
                return FolderDataset(cand, **options)
        raise DatasetNotFoundError(
            f"dataset folder {raw!r} not found (looked in: {', '.join(str(c) for c in candidates)}).\n"
            f"Expected layout:\n{FolderDataset.layout}"
        )
    from benchmark.catalog import get_dataset_class

    cls = get_dataset_class(spec)
    root = Path(data_root).expanduser() / spec if data_root is not None else None
    return cls(root=root, **options)
