"""MoNuSeg 2018 (Kumar et al.) in its official layout.

Dataset root = the folder that contains the training and test folders::

    <root>/
      MoNuSegTrainingData/            (or the official zip's "MoNuSeg 2018 Training Data/")
        Tissue Images/<stem>.tif      (or "Tissue_Images/")  1000x1000 RGB H&E
        Annotations/<stem>.xml        Aperio ImageScope XML, one <Region> per nucleus
        InstanceMaps/<stem>.tif       optional: int instance maps used where an image has no XML
      MoNuSegTestData/                (or "MoNuSeg 2018 Test Data/")
        <stem>.tif + <stem>.xml       side by side (sub-folders as in training are accepted too)

``root`` may also point straight at a training folder (one holding ``Tissue Images``).

Two datasets:
    ``monuseg``       the 30 training images: the paper's MoNuSeg protocol (split 16/8/6 images, recipe
                      ``"monuseg-paper"``).
    ``monuseg-test``  the 14 official test images (an extra held-out set; default recipe 6:2:2).

Labels:
    * XML polygons are rasterised with (row, col) = (Y - 1, X - 1): MoNuSeg vertices are 1-based (MATLAB
      ``poly2mask`` convention, as the organisers' conversion code and the ``InstanceMaps`` use), so the
      30 images share one pixel grid. Coordinates are clipped to the image; regions with fewer than 3
      vertices are skipped (2 of 11,648 in the release).
    * Overlapping polygons: ``overlap="later"`` (default) paints regions in file order, a later region
      wins the shared pixels; ``overlap="background"`` makes shared pixels background (MATLAB rule).
    * ``label_source="auto"`` (default) uses the XML when present, else ``InstanceMaps/<stem>.tif``;
      ``"xml"`` / ``"instance_map"`` use only that source (images without it become unannotated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from benchmark.data import io as dio
from benchmark.data.base import DatasetError, default_data_root
from benchmark.data.folder import FileDataset, FileRef, IndexEntry, LabelSource, list_by_stem

TRAIN_DIRS = ("MoNuSegTrainingData", "MoNuSeg 2018 Training Data", "MoNuSeg Training Data")
TEST_DIRS = ("MoNuSegTestData", "MoNuSeg 2018 Test Data", "MoNuSeg Test Data")
IMAGE_DIRS = ("Tissue Images", "Tissue_Images")
ANNOTATION_DIRS = ("Annotations",)
INSTANCE_MAP_DIR = "InstanceMaps"
LABEL_SOURCES = ("auto", "xml", "instance_map")

_LAYOUT = """  <root>/MoNuSegTrainingData/Tissue Images/<stem>.tif   (or Tissue_Images/; or "MoNuSeg 2018 Training Data/")
  <root>/MoNuSegTrainingData/Annotations/<stem>.xml     Aperio ImageScope XML
  <root>/MoNuSegTrainingData/InstanceMaps/<stem>.tif    optional int instance maps (used when no XML)
  <root>/MoNuSegTestData/<stem>.tif + <stem>.xml        (for monuseg-test)"""


class _MoNuSegBase(FileDataset):
    homepage: ClassVar[str] = "https://monuseg.grand-challenge.org/Data/"
    layout: ClassVar[str] = _LAYOUT
    image_size: ClassVar[str] = "1000x1000"
    #: sub-folder of the data root holding this dataset (shared by monuseg and monuseg-test).
    data_dir: ClassVar[str] = "monuseg"
    _part_dirs: ClassVar[tuple[str, ...]] = TRAIN_DIRS

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        overlap: str = "later",
        label_source: str = "auto",
    ) -> None:
        if root is None:
            root = default_data_root() / self.data_dir
        root = Path(root).expanduser()
        if not root.exists() and root.name == self.name and (root.parent / self.data_dir).is_dir():
            # "<data root>/monuseg-test" was asked for: both parts live in "<data root>/monuseg"
            root = root.parent / self.data_dir
        super().__init__(root)
        if overlap not in dio.OVERLAP_RULES:
            raise ValueError(f"overlap must be one of {dio.OVERLAP_RULES}, got {overlap!r}")
        if label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
        self.overlap = overlap
        self.label_source = label_source

    def label_options(self) -> dict[str, Any]:
        return {"overlap": self.overlap, "pixel_convention": "xml-1-based"}

    def config(self) -> dict[str, Any]:
        return {"root": str(self.root), "overlap": self.overlap, "label_source": self.label_source}

    def part_dir(self) -> Path:
        """The training (or test) folder inside :attr:`root`."""
        if any((self.root / d).is_dir() for d in IMAGE_DIRS) and self._part_dirs is TRAIN_DIRS:
            return self.root  # root points straight at the training folder
        for d in self._part_dirs:
            if (self.root / d).is_dir():
                return self.root / d
        raise self._not_found(
            f"none of {', '.join(repr(d) for d in self._part_dirs)} found in {self.root}."
        )

    def _build_index(self) -> dict[str, IndexEntry]:
        part = self.part_dir()
        image_dir = next((part / d for d in IMAGE_DIRS if (part / d).is_dir()), part)
        ann_dir = next((part / d for d in ANNOTATION_DIRS if (part / d).is_dir()), image_dir)
        images = list_by_stem(image_dir, (".tif", ".tiff"), "image")
        if not images:
            raise self._not_found(f"no .tif images in {image_dir}.")
        xmls = list_by_stem(ann_dir, (".xml", ".xml.gz"), "annotation") if ann_dir.is_dir() else {}
        maps_dir = part / INSTANCE_MAP_DIR
        maps = list_by_stem(maps_dir, dio.LABEL_SUFFIXES, "instance map") if maps_dir.is_dir() else {}
        orphans = sorted((set(xmls) | set(maps)) - set(images))
        if orphans:
            files = [(xmls.get(o) or maps[o]).name for o in orphans]
            raise DatasetError(
                f"{part}: annotation(s) without a matching image: {', '.join(files[:5])}"
                f"{' ...' if len(orphans) > 5 else ''}. Add the missing image(s) to {image_dir} "
                f"(or remove the stray annotation files)."
            )
        index: dict[str, IndexEntry] = {}
        for stem, img in images.items():
            label = None
            if stem in xmls and self.label_source in ("auto", "xml"):
                label = LabelSource("aperio_xml", FileRef(xmls[stem]))
            elif stem in maps and self.label_source in ("auto", "instance_map"):
                label = LabelSource("map", FileRef(maps[stem]))
            index[stem] = IndexEntry(FileRef(img), label)
        return index


class MoNuSegDataset(_MoNuSegBase):
    """The 30 MoNuSeg 2018 training images (the paper's MoNuSeg benchmark).

    Args:
        root: folder holding ``MoNuSegTrainingData/`` (default ``<data root>/monuseg``).
        overlap: ``"later"`` (default) or ``"background"``: rule for pixels shared by two polygons.
        label_source: ``"auto"`` (XML, else instance map), ``"xml"`` or ``"instance_map"``.
    """

    name: ClassVar[str] = "monuseg"
    description: ClassVar[str] = "MoNuSeg 2018 training set: 30 H&E images 1000x1000, 7 organs"
    split_recipe: ClassVar[str] = "monuseg-paper"
    _part_dirs = TRAIN_DIRS


class MoNuSegTestDataset(_MoNuSegBase):
    """The 14 official MoNuSeg 2018 test images (images and XML side by side).

    Same arguments as :class:`MoNuSegDataset`; the root is the same folder (``<data root>/monuseg``).
    """

    name: ClassVar[str] = "monuseg-test"
    description: ClassVar[str] = "MoNuSeg 2018 official test set: 14 H&E images 1000x1000"
    split_recipe: ClassVar[str] = "6:2:2"
    _part_dirs = TEST_DIRS
