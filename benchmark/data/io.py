"""Low-level readers for images, instance maps and polygon annotations.

Every function here either returns data in the suite's canonical form or raises
:class:`benchmark.data.base.DatasetError` with a message that names the file and says how to fix it;
no numpy/tifffile traceback reaches the user.

Canonical forms and the conversions applied (documented in docs/data-and-splits.md, "Input rules"):

* **Images** -> ``uint8 (H, W, 3)`` RGB.
  - RGBA: the alpha channel is dropped.
  - Grayscale ``(H, W)`` or ``(H, W, 1)``: replicated to 3 channels.
  - Channel-first ``(3|4, H, W)`` TIFF pages: transposed to channel-last.
  - ``uint16`` (or any other integer type) whose values all lie in 0..255: cast losslessly.
    Integer images with larger values (true 12/16-bit data) are **refused**: rescaling them would
    silently change the stain contrast every method sees, so the user converts them explicitly.
  - Floating-point, boolean, 2-channel or > 4-channel images are refused.
* **Instance maps** -> ``int32 (H, W)``, 0 = background, ids ``1..N`` contiguous.
  - Gaps in the ids (e.g. ``{0, 3, 7}``) are relabelled sequentially, keeping the id order.
  - Negative ids are **refused** (ambiguous: some tools use -1 for "ignore", others for background).
  - Boolean / float maps with integral values are accepted; non-integral floats and multi-channel
    (colour-coded) maps are refused.
  - A map whose shape differs from its image is refused (``check_label_shape``).
* **Polygons** (Aperio XML, ImageJ ROIs) are rasterised with :func:`rasterize_polygons`: each polygon
  is one instance; with ``overlap="later"`` (default) polygons are painted in file order so a later
  polygon wins the pixels it shares with an earlier one; ``overlap="background"`` sets every pixel
  covered by two or more polygons to background (the challenge's MATLAB binary-mask rule).
"""

from __future__ import annotations

import gzip
import io
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.data.base import DatasetError, DataWarning

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
OVERLAP_RULES = ("later", "background")

_INT32_MAX = np.iinfo(np.int32).max


# ---------------------------------------------------------------------------------------------- arrays
def _read_raw(path: Path | str, what: str, data: bytes | None = None) -> np.ndarray:
    """Read the first image of a TIFF/PNG/JPEG/NPY file as a numpy array, wrapping every failure.

    ``data``: the file's bytes when it is not a plain file (a zip member); ``path`` then only names it
    (its suffix selects the decoder).
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise DatasetError(f"{path}: {what} file not found. Check the path or re-download the dataset.")
    src = io.BytesIO(data) if data is not None else path
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(src) as tif:
                if not tif.series:
                    raise ValueError("the TIFF holds no image")
                arr = tif.series[0].asarray()
        elif suffix == ".npy":
            arr = np.load(src, allow_pickle=False)
        elif suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(src) as im:
                im.load()
                if im.mode in ("P", "PA"):
                    im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
                arr = np.asarray(im)
        else:
            raise DatasetError(
                f"{path}: unsupported {what} format {suffix!r}. "
                f"Use one of {', '.join(IMAGE_SUFFIXES if what == 'image' else LABEL_SUFFIXES)}."
            )
    except DatasetError:
        raise
    except Exception as exc:  # every reader error becomes a DatasetError
        raise DatasetError(
            f"{path}: cannot read {what} ({type(exc).__name__}: {exc}). The file is corrupt, truncated "
            f"or not a {suffix.lstrip('.').upper()} file: re-download or re-export it."
        ) from exc
    return np.asarray(arr)


def to_rgb_uint8(arr: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Convert a decoded image array to ``uint8 (H, W, 3)`` following the module rules, or raise."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channel-first TIFF page
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DatasetError(
            f"{source}: image has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4). "
            f"Multi-page or volumetric files are not supported: save one 2-D RGB image per file."
        )
    channels = arr.shape[-1]
    if channels not in (1, 3, 4):
        raise DatasetError(
            f"{source}: image has {channels} channels; expected 1 (grayscale), 3 (RGB) or 4 (RGBA). "
            f"Save it as an RGB image."
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(
            f"{source}: image dtype is {arr.dtype}; expected 8-bit integers. "
            f"Convert it to 8-bit RGB (e.g. PNG or TIFF, uint8) first."
        )
    if arr.dtype != np.uint8:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DatasetError(
                f"{source}: image is {arr.dtype} with values {lo}..{hi}; only 8-bit RGB is supported. "
                f"Higher bit depths are refused rather than silently rescaled: convert the image to "
                f"uint8 with the intensity mapping you want (e.g. skimage.exposure.rescale_intensity)."
            )
        arr = arr.astype(np.uint8)
    if channels == 4:
        arr = arr[..., :3]  # drop alpha
    elif channels == 1:
        arr = np.repeat(arr, 3, axis=-1)  # grayscale -> RGB
    return np.ascontiguousarray(arr)


def read_image(path: str | Path, data: bytes | None = None, name: str | None = None) -> np.ndarray:
    """Read an image file (``.tif/.tiff/.png/.jpg/.jpeg``) as ``uint8 (H, W, 3)`` RGB.

    Args:
        path: the file (its suffix selects the decoder).
        data: the file's bytes if it is not a plain file (e.g. a zip member).
        name: how to call it in error messages (default: ``path``).

    Raises:
        DatasetError: unreadable/corrupt file or an unsupported layout/dtype (see module docstring).
    """
    return to_rgb_uint8(_read_raw(path, "image", data), name or str(path))


def relabel_sequential(label: np.ndarray) -> np.ndarray:
    """Map the non-zero ids of ``label`` to ``1..N`` keeping their order; returns ``int32``."""
    label = np.asarray(label)
    ids = np.unique(label)
    ids = ids[ids != 0]
    if ids.size and ids[0] == 1 and ids[-1] == ids.size and label.dtype == np.int32:
        return label
    if ids.size and ids[0] == 1 and ids[-1] == ids.size:
        return label.astype(np.int32)
    lut_ids = np.concatenate([[0], ids])
    out = np.searchsorted(lut_ids, label).astype(np.int32)
    return out


def to_instance_map(arr: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Validate and convert a decoded label array to ``int32 (H, W)`` with ids ``1..N``, or raise."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DatasetError(
            f"{source}: label map has shape {arr.shape}; expected a single-channel (H, W) integer "
            f"instance map (0 = background, 1..N = nuclei). Colour-coded or multi-page label images are "
            f"not supported: convert them to one integer id per nucleus."
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DatasetError(
                f"{source}: label map is {arr.dtype} with non-integer values; expected integer instance "
                f"ids. Save it as an integer TIFF/PNG/NPY."
            )
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"{source}: label map dtype {arr.dtype} is not an integer type.")
    if arr.size and int(arr.min()) < 0:
        raise DatasetError(
            f"{source}: label map has negative ids (min {int(arr.min())}). Negative ids are refused because "
            f"their meaning (ignore? background?) is ambiguous: set background to 0 and give every nucleus "
            f"a positive id."
        )
    if arr.size and int(arr.max()) > _INT32_MAX:
        raise DatasetError(f"{source}: label ids exceed the int32 range; relabel the map to 1..N.")
    return relabel_sequential(arr)


def read_label(
    path: str | Path,
    expected_shape: tuple[int, int] | None = None,
    data: bytes | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Read an instance map file (``.tif/.tiff/.png/.npy``) as ``int32 (H, W)`` with ids ``1..N``.

    Args:
        path: the label file.
        expected_shape: ``(H, W)`` of the matching image; a different shape raises.
        data, name: as in :func:`read_image`.

    Raises:
        DatasetError: unreadable file, invalid values (see module docstring) or a shape mismatch.
    """
    source = name or str(path)
    label = to_instance_map(_read_raw(path, "label", data), source)
    if expected_shape is not None:
        check_label_shape(label.shape, expected_shape, source)
    return label


def check_label_shape(label_shape: Sequence[int], image_shape: Sequence[int], source: str) -> None:
    """Raise :class:`DatasetError` if a label map's ``(H, W)`` differs from its image's."""
    if tuple(label_shape[:2]) != tuple(image_shape[:2]):
        raise DatasetError(
            f"{source}: label map is {label_shape[0]}x{label_shape[1]} (HxW) but its image is "
            f"{image_shape[0]}x{image_shape[1]}. The label must have exactly the image's size: check that "
            f"it belongs to this image and was not resized or cropped."
        )


# ---------------------------------------------------------------------------------------------- polygons
def rasterize_polygons(
    polygons: Sequence[np.ndarray],
    shape: tuple[int, int],
    *,
    overlap: str = "later",
) -> np.ndarray:
    """Paint polygons into an ``int32`` instance map.

    Args:
        polygons: one ``(N, 2)`` array of ``(row, col)`` vertices per instance, in *pixel-centre*
            coordinates: pixel ``(r, c)`` belongs to a polygon iff the point ``(r, c)`` lies inside it
            (``skimage.draw.polygon``). Vertices outside the image are fine (the result is clipped).
        shape: ``(H, W)`` of the output.
        overlap: ``"later"`` (paint in order, later polygons win shared pixels) or ``"background"``
            (pixels covered by two or more polygons become background).

    Returns:
        ``int32 (H, W)`` map with ids ``1..N`` contiguous in polygon order; polygons that end up with no
        pixel (outside the image, too thin, or fully covered by later ones) get no id.
    """
    from skimage.draw import polygon as draw_polygon

    if overlap not in OVERLAP_RULES:
        raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {overlap!r}")
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=np.int32)
    cover = np.zeros((h, w), dtype=np.uint16) if overlap == "background" else None
    for k, poly in enumerate(polygons, start=1):
        poly = np.asarray(poly, dtype=np.float64)
        if poly.ndim != 2 or poly.shape[0] < 3:
            continue
        rr, cc = draw_polygon(poly[:, 0], poly[:, 1], shape=(h, w))
        if rr.size == 0:
            continue
        out[rr, cc] = k
        if cover is not None:
            cover[rr, cc] += 1
    if cover is not None:
        out[cover > 1] = 0
    return relabel_sequential(out)


def _parse_xml_bytes(data: bytes, source: str):
    import defusedxml
    import defusedxml.ElementTree as DET
    from xml.etree.ElementTree import ParseError

    try:
        return DET.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise DatasetError(
            f"{source}: XML refused for safety ({type(exc).__name__}: {exc}). Annotation files must not "
            f"declare entities or DTDs; use the original file from the dataset's release."
        ) from exc
    except (ParseError, ValueError) as exc:
        raise DatasetError(
            f"{source}: malformed XML ({exc}). The file is truncated or corrupt: re-download it."
        ) from exc


def read_aperio_xml(path: str | Path) -> tuple[list[np.ndarray], int]:
    """Read the nucleus polygons of an Aperio ImageScope ``.xml`` (or ``.xml.gz``) annotation.

    Each ``<Region>`` is one nucleus; its ``<Vertex X=.. Y=..>`` children are float pixel coordinates
    (X = column, Y = row) as written in the file, i.e. **1-based** in the MoNuSeg convention (see
    :func:`aperio_to_pixel_polygons`).

    Returns:
        ``(polygons, n_degenerate)``: one float ``(N, 2)`` array of ``(X, Y)`` per region with at least
        3 vertices, in file order, and the number of regions skipped for having fewer than 3.

    Raises:
        DatasetError: see :func:`read_aperio_regions`.
    """
    regions, degenerate = read_aperio_regions(path)
    return [verts for _, verts in regions], len(degenerate)


def _read_xml_file(path: Path) -> bytes:
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read annotation ({type(exc).__name__}: {exc}); the file is "
                           f"corrupt or truncated: re-download it.") from exc


def read_aperio_regions(path: str | Path) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Like :func:`read_aperio_xml`, with region ids: ``([(id, (N, 2) X/Y vertices)], degenerate_ids)``.

    Raises:
        DatasetError: missing, unreadable, malformed or DTD/entity-declaring XML, non-numeric or
            non-finite (NaN/inf) coordinates, or a root element other than ``<Annotations>``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found.")
    root = _parse_xml_bytes(_read_xml_file(path), str(path))
    if root.tag != "Annotations":
        raise DatasetError(
            f"{path}: root element is <{root.tag}>, expected <Annotations> (Aperio ImageScope format as "
            f"released by MoNuSeg). Use the original annotation file."
        )
    regions: list[tuple[str, np.ndarray]] = []
    degenerate: list[str] = []
    for region in root.iter("Region"):
        rid = region.attrib.get("Id", "?")
        verts = []
        for v in region.iter("Vertex"):
            try:
                verts.append((float(v.attrib["X"]), float(v.attrib["Y"])))
            except (KeyError, ValueError) as exc:
                raise DatasetError(
                    f"{path}: Region Id={rid} has a vertex without numeric X/Y "
                    f"({exc}). The file is corrupt: re-download it."
                ) from exc
        arr = np.asarray(verts, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(arr).all():
            raise DatasetError(f"{path}: Region Id={rid} has NaN or infinite vertex coordinates; the region "
                               f"cannot be drawn. Fix or delete that region.")
        if len(verts) < 3:
            degenerate.append(rid)
            continue
        regions.append((rid, arr))
    return regions, degenerate


def check_region_polygons(
    regions: Sequence[tuple[str, np.ndarray]], degenerate: Sequence[str], shape: tuple[int, int], source: str
) -> None:
    """Refuse regions mostly outside the image; warn about dropped (degenerate) regions.

    ``regions`` hold pixel-centre ``(row, col)`` polygons. A polygon with more than half its vertices
    outside the ``shape`` image cannot be meant (clipping would paint a fake nucleus at the border).
    """
    h, w = shape
    outside = []
    for rid, poly in regions:
        out = (poly[:, 0] < -0.5) | (poly[:, 0] > h - 0.5) | (poly[:, 1] < -0.5) | (poly[:, 1] > w - 0.5)
        if out.mean() > 0.5:
            outside.append(rid)
    if outside:
        raise DatasetError(
            f"{source}: region(s) Id={', '.join(outside[:10])} lie mostly outside the {h}x{w} image "
            f"(more than half their vertices); they cannot belong to it. Fix or delete them."
        )
    if degenerate and not regions:
        warnings.warn(f"{source}: all {len(degenerate)} region(s) have fewer than 3 vertices; the image's "
                      f"ground truth is EMPTY (no nucleus).", DataWarning, stacklevel=2)
    elif degenerate:
        warnings.warn(f"{source}: region(s) Id={', '.join(degenerate[:10])} have fewer than 3 vertices and "
                      f"were dropped.", DataWarning, stacklevel=2)


def aperio_to_pixel_polygons(polygons: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Convert Aperio ``(X, Y)`` vertices to pixel-centre ``(row, col)`` = ``(Y - 1, X - 1)``.

    MoNuSeg's vertices are 1-based (MATLAB ``poly2mask`` convention, as the organisers' own conversion
    code and the ``InstanceMaps`` use), so subtracting 1 puts all 30 training images on one pixel grid.
    """
    return [np.stack([p[:, 1] - 1.0, p[:, 0] - 1.0], axis=1) for p in polygons]


# ---------------------------------------------------------------------------------------------- ImageJ ROIs
def read_imagej_roi_zip(source: str | Path | bytes, name: str | None = None) -> tuple[list[np.ndarray], int]:
    """Read an ImageJ ROI set (``RoiSet.zip``: one ``.roi`` per nucleus) as pixel-centre polygons.

    ImageJ polygon/freehand/traced vertices sit on pixel *corners* and ImageJ fills pixels whose
    centre ``(x + 0.5, y + 0.5)`` is inside; so the returned ``(row, col)`` polygons are
    ``(y - 0.5, x - 0.5)`` (for :func:`rasterize_polygons`, which tests pixel centres at integer
    coordinates). Rectangles and ovals are converted to polygons; line and point ROIs are skipped.

    Args:
        source: path of the zip, or its bytes (for a zip nested in another zip).
        name: how to call the source in error messages (defaults to the path).

    Returns:
        ``(polygons, n_skipped)`` in zip member order (ImageJ ROI Manager order).
    """
    import roifile

    label = name or (str(source) if not isinstance(source, bytes) else "<RoiSet.zip>")
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{label}: not a readable ImageJ ROI zip ({exc}); re-export the ROI set.") from exc
    polygons: list[np.ndarray] = []
    skipped = 0
    with zf:
        members = [m for m in zf.namelist() if m.lower().endswith(".roi")]
        if not members:
            raise DatasetError(f"{label}: the zip holds no .roi files; expected an ImageJ ROI set.")
        for member in members:
            try:
                roi = roifile.ImagejRoi.frombytes(zf.read(member))
            except Exception as exc:
                raise DatasetError(
                    f"{label}: ROI {member!r} cannot be parsed ({type(exc).__name__}: {exc}); "
                    f"re-export the ROI set from ImageJ."
                ) from exc
            poly = _roi_polygon(roi, roifile)
            if poly is None:
                skipped += 1
                continue
            polygons.append(poly)
    return polygons, skipped


def _roi_polygon(roi, roifile) -> np.ndarray | None:
    rt = roifile.ROI_TYPE
    if roi.roitype == rt.RECT:
        t, l, b, r = roi.top, roi.left, roi.bottom, roi.right
        xy = np.array([[l, t], [r, t], [r, b], [l, b]], dtype=np.float64)
    elif roi.roitype == rt.OVAL:
        t, l, b, r = roi.top, roi.left, roi.bottom, roi.right
        ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        cx, cy, rx, ry = (l + r) / 2, (t + b) / 2, (r - l) / 2, (b - t) / 2
        xy = np.stack([cx + rx * np.cos(ang), cy + ry * np.sin(ang)], axis=1)
    elif roi.roitype in (rt.POLYGON, rt.FREEHAND, rt.TRACED):
        xy = np.asarray(roi.coordinates(), dtype=np.float64)
        if xy.ndim != 2 or xy.shape[0] < 3:
            return None
    else:
        return None
    return np.stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5], axis=1)
