"""The contract every dataset honours.

A dataset is a lazy, deterministic collection of whole images, each with an optional instance map.
The harness cuts patches, applies the committed split manifest and hands patches to methods; datasets
only read their files (or generate images, for ``synthetic``).

Register a dataset class in the ``nuclei_ssl_bench.datasets`` entry-point group; it is built as
``cls(root=PATH_OR_NONE, **options)``.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import ClassVar

import numpy as np

#: environment variable that points at the folder holding one sub-folder per dataset.
DATA_ROOT_ENV = "NUCLEI_SSL_BENCH_DATA"


class DatasetError(Exception):
    """Bad or missing data. The message names the file and the fix."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's files are not where we looked."""


class DataWarning(UserWarning):
    """Questionable input that was accepted (the message names the file and what was dropped)."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One whole image of a dataset.

    Attributes:
        name: unique, stable name inside the dataset (file stem for file-based datasets).
        image: ``uint8 (H, W, 3)`` RGB.
        label: ``int32 (H, W)`` instance map (0 = background) or ``None`` if the image is unannotated
            (it can then only go to the unlabeled pool).
        source: where it came from (file path(s)), used in error messages.
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None
    source: str = ""


def default_data_root() -> Path:
    """``$NUCLEI_SSL_BENCH_DATA`` if set, else ``~/.cache/nuclei-ssl-bench/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/nuclei-ssl-bench/data").expanduser()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Dataset(abc.ABC):
    """Base class of every dataset.

    Class attributes:
        name: registry name.
        description: one line for ``benchmark list``.
        homepage: where users download it (shown when it is missing).
        layout: a short description of the expected folder layout (shown when it is missing).
        image_size: nominal image size, e.g. ``"1000x1000"`` (informational).

    Args:
        root: folder holding the dataset; ``None`` means ``default_data_root() / name``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    homepage: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    image_size: ClassVar[str] = ""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_data_root() / self.name

    def is_present(self) -> bool:
        """Whether the data can be found (cheap, no parsing).

        Raises:
            DatasetError: the files are there but inconsistent (duplicate stems, orphan labels...);
                only an absent dataset (:class:`DatasetNotFoundError`) counts as "not present".
        """
        try:
            return len(self.image_names()) > 0
        except DatasetNotFoundError:
            return False

    @abc.abstractmethod
    def image_names(self) -> list[str]:
        """Sorted names of all images. Raises :class:`DatasetNotFoundError` if the data is absent."""

    @abc.abstractmethod
    def load(self, name: str) -> ImageRecord:
        """Read one image (and its instance map if annotated). Raises :class:`DatasetError` with the
        file name and the fix on bad input."""

    @abc.abstractmethod
    def fingerprint(self, name: str) -> str:
        """SHA-256 identifying the image's source bytes (checked against split manifests)."""

    def missing_message(self) -> str:
        """What to tell a user whose data is absent."""
        return (
            f"dataset {self.name!r} not found at {self.root}.\n"
            f"Expected layout:\n{self.layout}\n"
            f"Download it from {self.homepage or '(see README)'} and pass --data-root PARENT "
            f"(the folder that contains '{self.name}/'), or set ${DATA_ROOT_ENV}."
        )
