"""CryoNuSeg (Mahbod et al. 2021): 30 cryosectioned H&E tiles of 512x512 from 10 organs.

Accepted layouts (``root`` = ``<data root>/cryonuseg`` by default):

1. The official release (Kaggle ``ipateam/segmentation-of-nuclei-in-cryosectioned-he-images``)::

       <root>/tissue images/Human_<Organ>_0N.tif
       <root>/<annotator folder>/.../label masks modify/Human_<Organ>_0N.tif   int instance maps
       <root>/<annotator folder>/.../Imagj_zips/Human_<Organ>_0N.zip            ImageJ ROI sets

   The annotator is chosen with ``annotator="b1"`` (default, ``Annotator 1 (biologist)``), ``"b2"``
   (``Annotator 1 (biologist second round of manual marks up)``) or ``"b3"``
   (``Annotator 2 (bioinformatician)``); the annotator folder is searched recursively (the release
   nests some of them twice). For each image the instance map (``label masks modify``, else
   ``label masks``) is used; failing that the per-image ROI zip (``Imagj_zips``). Folders
   ``label masks modify`` / ``Imagj_zips`` directly under ``root`` are used when no annotator folder
   exists.

2. Per-image bundles, as in the authors' early releases (``root/*.zip`` or ``root/dataset/*.zip``, or the
   same unzipped into ``root/<name>/``): each bundle holds one ``.tif`` tile and a ``RoiSet.zip``
   (one ImageJ polygon per nucleus). The image is named after the bundle.

ImageJ ROIs are rasterised with ImageJ's own pixel rule (a pixel belongs to a polygon when its centre
is inside; see :func:`benchmark.data.io.read_imagej_roi_zip`); overlaps: later ROI wins (``overlap``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, ClassVar

from benchmark.data import io as dio
from benchmark.data.base import DatasetError
from benchmark.data.folder import FileDataset, FileRef, IndexEntry, LabelSource, list_by_stem

ANNOTATORS = {
    "b1": "Annotator 1 (biologist)",
    "b2": "Annotator 1 (biologist second round of manual marks up)",
    "b3": "Annotator 2 (bioinformatician)",
}
IMAGE_DIRS = ("tissue images", "tissue_images", "Tissue Images", "Tissue_Images")
MAP_DIRS = ("label masks modify", "label masks")
ROI_DIRS = ("Imagj_zips", "ImageJ_zips", "imagej_zips", "imagej zips")


class CryoNuSegDataset(FileDataset):
    """CryoNuSeg tiles with instance maps or ImageJ ROI annotations (see module docstring).

    Args:
        root: dataset folder (default ``<data root>/cryonuseg``).
        annotator: ``"b1"`` (default), ``"b2"`` or ``"b3"``: whose annotation to use (official layout).
        overlap: ``"later"`` (default) or ``"background"`` for overlapping ROIs.
    """

    name: ClassVar[str] = "cryonuseg"
    description: ClassVar[str] = "CryoNuSeg: 30 cryosection H&E tiles 512x512, 10 organs"
    homepage: ClassVar[str] = (
        "https://www.kaggle.com/datasets/ipateam/segmentation-of-nuclei-in-cryosectioned-he-images"
    )
    layout: ClassVar[str] = (
        "  <root>/tissue images/<stem>.tif\n"
        "  <root>/Annotator 1 (biologist)/.../label masks modify/<stem>.tif   (or .../Imagj_zips/<stem>.zip)\n"
        "  or per-image bundles <root>/<stem>.zip holding <tile>.tif + RoiSet.zip"
    )
    image_size: ClassVar[str] = "512x512"

    def __init__(
        self, root: str | Path | None = None, *, annotator: str = "b1", overlap: str = "later"
    ) -> None:
        super().__init__(root)
        if annotator not in ANNOTATORS:
            raise ValueError(f"annotator must be one of {sorted(ANNOTATORS)}, got {annotator!r}")
        if overlap not in dio.OVERLAP_RULES:
            raise ValueError(f"overlap must be one of {dio.OVERLAP_RULES}, got {overlap!r}")
        self.annotator = annotator
        self.overlap = overlap

    def label_options(self) -> dict[str, Any]:
        return {"overlap": self.overlap, "roi_pixel_rule": "imagej-centre"}

    def config(self) -> dict[str, Any]:
        return {"root": str(self.root), "annotator": self.annotator, "overlap": self.overlap}

    # ------------------------------------------------------------------ layout discovery
    def _build_index(self) -> dict[str, IndexEntry]:
        image_dir = next((self.root / d for d in IMAGE_DIRS if (self.root / d).is_dir()), None)
        if image_dir is not None:
            return self._official_index(image_dir)
        index = self._bundle_index()
        if not index:
            raise self._not_found(
                f"neither a 'tissue images' folder nor per-image bundles (<name>.zip or <name>/ with a "
                f".tif and RoiSet.zip) found in {self.root}."
            )
        return index

    def _find_dir(self, base: Path, names: tuple[str, ...]) -> Path | None:
        for n in names:
            hits = sorted(p for p in base.rglob(n) if p.is_dir()) if base.is_dir() else []
            if hits:
                return hits[0]
        return None

    def _official_index(self, image_dir: Path) -> dict[str, IndexEntry]:
        images = list_by_stem(image_dir, (".tif", ".tiff", ".png"), "image")
        if not images:
            raise self._not_found(f"no images in {image_dir}.")
        ann_base = self.root / ANNOTATORS[self.annotator]
        if not ann_base.is_dir():
            ann_base = self.root
            map_dir = next((self.root / d for d in MAP_DIRS if (self.root / d).is_dir()), None)
            roi_dir = next((self.root / d for d in ROI_DIRS if (self.root / d).is_dir()), None)
        else:
            map_dir = self._find_dir(ann_base, MAP_DIRS)
            roi_dir = self._find_dir(ann_base, ROI_DIRS)
        maps = list_by_stem(map_dir, dio.LABEL_SUFFIXES, "label map") if map_dir else {}
        rois = list_by_stem(roi_dir, (".zip",), "ROI zip") if roi_dir else {}
        index = {}
        for stem, img in images.items():
            if stem in maps:
                label = LabelSource("map", FileRef(maps[stem]))
            elif stem in rois:
                label = LabelSource("roi_zip", FileRef(rois[stem]))
            else:
                label = None
            index[stem] = IndexEntry(FileRef(img), label)
        return index

    def _bundle_index(self) -> dict[str, IndexEntry]:
        index: dict[str, IndexEntry] = {}
        for base in (self.root, self.root / "dataset"):
            if not base.is_dir():
                continue
            for p in sorted(base.iterdir()):
                entry = None
                if p.is_file() and p.suffix.lower() == ".zip":
                    entry = self._zip_bundle(p)
                elif p.is_dir() and p.name != "dataset":
                    entry = self._dir_bundle(p)
                if entry is None:
                    continue
                stem = p.stem if p.is_file() else p.name
                if stem in index:
                    raise DatasetError(
                        f"{p}: a second bundle named {stem!r} (also {index[stem].image}); keep one."
                    )
                index[stem] = entry
        return index

    @staticmethod
    def _zip_bundle(path: Path) -> IndexEntry | None:
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (OSError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"{path}: not a readable zip ({exc}); re-download it.") from exc
        tifs = [n for n in names if n.lower().endswith((".tif", ".tiff"))]
        roisets = [n for n in names if Path(n).name.lower() == "roiset.zip"]
        if not tifs:
            return None  # a per-image ROI zip or something else: not a bundle
        if len(tifs) > 1:
            raise DatasetError(f"{path}: bundle holds {len(tifs)} TIFFs ({tifs}); expected one tile.")
        label = LabelSource("roi_zip", FileRef(path, roisets[0])) if roisets else None
        return IndexEntry(FileRef(path, tifs[0]), label)

    @staticmethod
    def _dir_bundle(folder: Path) -> IndexEntry | None:
        tifs = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if len(tifs) != 1:
            return None
        roiset = next((p for p in folder.iterdir() if p.name.lower() == "roiset.zip"), None)
        return IndexEntry(FileRef(tifs[0]), LabelSource("roi_zip", FileRef(roiset)) if roiset else None)
