"""DigestPath nuclei (Da et al. 2022) through the generic folder format.

The BASS paper uses 69 digestive-system images of about 1500x1200 with nucleus instance maps. They are
not redistributed in a fixed layout, so the suite reads them as a generic folder::

    <root>/images/<stem>.{png,tif,tiff,jpg,jpeg}    RGB
    <root>/labels/<stem>.{tif,tiff,png,npy}         int instance maps, 0 = background

``root`` defaults to ``<data root>/digestpath``. Images without a label file are unannotated (unlabeled
pool only). Split: 6:2:2 by image, deterministic in the sorted file names and the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from benchmark.data.folder import FolderDataset


class DigestPathDataset(FolderDataset):
    """DigestPath images + instance maps in the generic folder layout.

    Args:
        root: the folder holding ``images/`` and ``labels/`` (default ``<data root>/digestpath``).
    """

    name: ClassVar[str] = "digestpath"
    description: ClassVar[str] = "DigestPath nuclei: 69 H&E images ~1500x1200 (images/ + labels/ folder)"
    homepage: ClassVar[str] = "https://digestpath2019.grand-challenge.org/"
    image_size: ClassVar[str] = "~1500x1200"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)
