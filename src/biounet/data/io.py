"""Reading images and masks from disk into uint8 arrays, with errors that name the file.

Images: PNG, JPEG, TIFF (8/16-bit, float), grey or RGB(A) -> (H, W, C) uint8, C in {1, 3}.
8-bit data is kept as is. Float data within [0, 1] (skimage's convention, ``img_as_float``) is
taken as intensities: x 255. Other 16-bit and float data are scaled per image to 0..255 between
their 0.5th and 99.5th percentiles (their absolute range depends on the camera, not the content).
Masks: 0/255 or 0/1, 8-bit grey (or RGB with equal channels) -> (H, W) uint8 in {0, 1}.
PNG / JPEG / BMP files with an EXIF orientation tag (cameras and phones store a photograph as
taken and tag how to turn it) are read turned as every viewer and annotation tool shows them, so
masks drawn on the shown image line up and predicted masks overlay it (TIFFs: as stored).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from biounet.errors import BiounetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 200_000_000  # refuse decompression bombs, with a clear message
EXIF_ORIENTATION = 0x0112  # the EXIF tag: 1 = as stored, 2..8 = mirrored and / or turned to show


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of an image file (2..8: ``read_image`` turns its pixels as viewers
    show them); 1 where there is none, for TIFFs (read as stored) and for unreadable files."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff") or not path.is_file():
        return 1
    try:
        with Image.open(path) as im:
            return _orientation(im)
    except Exception:  # noqa: BLE001 - a broken file is reported when it is read
        return 1


def orientation_note(*paths: Path) -> str:
    """For a size-mismatch message: which of ``paths`` biounet read turned by their EXIF
    orientation tag (a mask drawn on the stored, unturned pixels then no longer fits), or ""."""
    turned = [f"{p} (EXIF orientation {o})" for p in paths if (o := exif_orientation(p)) != 1]
    if not turned:
        return ""
    return (
        "; biounet reads images turned as viewers show them, by their EXIF orientation tag: "
        + ", ".join(turned)
        + ". Draw the mask on the image as shown, or save the image without the tag"
    )


def note_turned_image(image: Path, masks: list[Path]) -> bool:
    """Warn (once per image folder) where ``image`` is read turned by its EXIF tag but a mask of
    the same size carries none: a mask drawn on the image as shown fits, one drawn on the stored
    pixels does not, and their sizes cannot tell them apart (a 180 degree turn, a mirror, or a
    square image). True when it warned or would have (already said for the folder)."""
    o = exif_orientation(image)
    if o == 1:  # the common case: no mask file is opened
        return False
    untagged = [m for m in masks if exif_orientation(m) == 1]
    if not untagged:
        return False
    folder = Path(image).parent
    if folder not in _TURNED_SAID:
        _TURNED_SAID.add(folder)
        log.warning(
            "%s: read turned by its EXIF orientation tag (%d), as viewers show it; its mask %s has "
            "no tag. A mask drawn on the image as shown fits; one drawn on the stored pixels does "
            "not, and the sizes cannot tell (said once for %s): check an overlay",
            image, o, untagged[0], folder,
        )  # fmt: skip
    return True


_TURNED_SAID: set[Path] = set()


def read_image(path: Path, page: int | None = None) -> np.ndarray:
    """(H, W, C) uint8 with C = 1 (grey) or 3 (RGB). Raises BiounetError naming the file.
    A TIFF stack (z-stack, time series) is refused unless ``page`` names one of its images
    (0 .. ``stack_size(path)`` - 1), which is then read as an image of its own."""
    path = Path(path)
    where = path if page is None else f"{path} [slice {page}]"
    return image_from_array(_read_array(path, page), where)


def stack_size(path: Path) -> int:
    """How many 2D images the file holds: a TIFF stack's slices (same-size pages), else 1 (and
    1 for a file that cannot be read: reading it says why)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return 1
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            return max(1, len(_stack_pages(tf)))
    except Exception:  # noqa: BLE001 - a corrupt file is reported when it is read
        return 1


def _stack_pages(tf: Any) -> list[Any]:
    """The pages of the same size as the first (reduced-size pages, thumbnails, are not images
    of the stack; pages written one by one are series of their own, so count pages, not series)."""
    first = tf.pages[0]
    return [p for p in tf.pages if getattr(p, "shape", None) == first.shape]


def image_from_array(arr: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Any (H, W) or (H, W, C) numeric array, C in 1..4 -> (H, W, C) uint8 with C = 1 or 3, exactly as
    ``read_image`` prepares a file holding it (alpha dropped, non-8-bit data percentile-scaled)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise BiounetError(
            f"{path}: unsupported image shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    if arr.shape[-1] == 2:  # grey + alpha
        arr = arr[..., :1]
    if arr.shape[-1] == 4:  # drop alpha
        arr = arr[..., :3]
    return to_uint8(arr, path)


def to_uint8(arr: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Any numeric array -> uint8; non-8-bit data is percentile-scaled (see module docstring)."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not np.issubdtype(arr.dtype, np.number):
        raise BiounetError(f"{path}: unsupported pixel type {arr.dtype}")
    a = arr.astype(np.float32)
    finite = np.isfinite(a)
    if not finite.any():
        raise BiounetError(f"{path}: image has no finite pixel values")
    values = a[finite]
    if np.issubdtype(arr.dtype, np.floating) and values.min() >= 0 and values.max() <= 1:
        # a float image in [0, 1]: the same picture as its uint8 (x 255), not a stretched one
        return np.clip(np.where(finite, a, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    a = np.where(finite, a, lo)
    return np.clip((a - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def read_mask(path: Path, invert: bool = False) -> np.ndarray:
    """(H, W) uint8 {0, 1}. Accepts 0/255 and 0/1 masks (16-bit: 0/65535 too); ``invert`` for masks
    where 0 marks the object. JPEG masks (lossy: a 0/255 mask comes back with grey values along
    its edges) are cut at 128, see ``_binarise_jpeg``."""
    path = Path(path)
    arr = _read_array(path)
    jpeg = path.suffix.lower() in JPEG_EXTENSIONS
    arr = grey_plane(arr, JPEG_CHANNEL_SPREAD if jpeg else 0)
    if arr is None:
        raise BiounetError(f"{path}: mask is a colour image; expected a grey 0/255 or 0/1 mask")
    if jpeg:
        arr = _binarise_jpeg(arr, path)
    values = np.unique(arr)
    vals = set(values.tolist())
    full = np.iinfo(arr.dtype).max if np.issubdtype(arr.dtype, np.integer) else 255
    if not (vals <= {0, 1} or vals <= {0, 255} or vals <= {0, full}):
        shown = values[:6].tolist()
        hint = (
            f"; {values.size} values look like a label map (one value per class): biounet "
            "wants one 0/255 mask per label, masks/<label>/<stem>.png, which `biounet "
            "import-dataset --format labelmap` writes from label maps"
            if values.size <= 16
            else ""
        )
        raise BiounetError(
            f"{path}: mask is not binary (values {shown}{'...' if values.size > 6 else ''}); "
            f"expected 0/255 or 0/1{hint}"
        )
    mask = (arr > 0).astype(np.uint8)
    return 1 - mask if invert else mask


JPEG_EXTENSIONS = (".jpg", ".jpeg")
JPEG_CHANNEL_SPREAD = 32  # a grey mask through JPEG's colour conversion: channels differ by a few
JPEG_MAX_MID_GREY = 0.05  # JPEG edge noise of a 0/255 mask: under 2 % of pixels even at quality 25


def grey_plane(arr: np.ndarray, spread: int = 0) -> np.ndarray | None:
    """(H, W) or (H, W, C) -> the (H, W) grey plane: grey (+ alpha) as is, RGB(A) whose channels
    agree within ``spread`` levels (exactly for 0, else their rounded mean); None for colour."""
    if arr.ndim == 2:
        return arr
    if arr.shape[-1] in (1, 2):  # grey, grey + alpha
        return arr[..., 0]
    if arr.shape[-1] not in (3, 4):
        return None
    a = arr[..., :3].astype(np.int32)
    if int(np.abs(a[..., 1:] - a[..., :1]).max(initial=0)) > spread:
        return None
    return arr[..., 0] if spread == 0 else a.mean(-1).round().astype(arr.dtype)


def _binarise_jpeg(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) uint8 of a JPEG 0/255 mask -> (H, W) uint8 {0, 255}, cut at 128. JPEG compression
    leaves grey values along a mask's edges; cut at 128 they give back the mask (a disc and a
    DRIVE vessel mask at quality 25-95: at most 0.02 % of pixels changed). Refused: a JPEG
    whose brightest value is under 128 (a 0/1 mask: JPEG does not keep values that faint) and one
    with more than 5 % of its pixels mid-grey (64-191: a soft or grey map, not a mask)."""
    top = int(arr.max(initial=0))
    if 0 < top < 128:
        raise BiounetError(
            f"{path}: JPEG mask with values only up to {top}: a 0/1 mask does not survive JPEG "
            "compression; save masks as PNG (or as 0/255)"
        )
    mid = float(((arr >= 64) & (arr < 192)).mean())
    if mid > JPEG_MAX_MID_GREY:
        raise BiounetError(
            f"{path}: mask is not binary ({mid:.0%} of its pixels are mid-grey, 64-191); JPEG "
            "masks are cut at 128 only where compression left grey edges on a 0/255 mask"
        )
    return np.where(arr >= 128, 255, 0).astype(np.uint8)


def _read_array(path: Path, page: int | None = None) -> np.ndarray:
    if not path.is_file():
        raise BiounetError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BiounetError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path, page)
    if page not in (None, 0):
        raise BiounetError(f"{path}: holds one image; no slice {page}")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # a damaged EXIF block costs only the orientation tag (read as stored): no warning
            warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
            with Image.open(path) as im:
                im.load()
                if _orientation(im) != 1:
                    im = ImageOps.exif_transpose(im)  # the pixels as viewers show them
                if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif im.mode == "1":
                    im = im.convert("L")
                return np.array(im)  # a writable copy
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BiounetError(f"{path}: image too large ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise BiounetError(f"{path}: cannot decode image ({e})") from e


def _orientation(im: Image.Image) -> int:
    """``im``'s EXIF orientation, 1..8; 1 where it has none, an undefined value or a damaged EXIF
    block (the pixels are then read as stored)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of corrupt EXIF data
            value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF data
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _read_tiff(path: Path, index: int | None = None) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            # checked on the header, before any pixel is decoded (a 400-byte file can claim 20000 x 20000)
            n = int(page.imagelength) * int(page.imagewidth) * max(1, int(page.imagedepth))
            if n > MAX_PIXELS:
                raise BiounetError(
                    f"{path}: image too large ({page.imagewidth} x {page.imagelength} pixels; "
                    f"the limit is {MAX_PIXELS:,})"
                )
            stack = _stack_pages(tf)
            if index is None and len(stack) > 1:
                # a z-stack or time series: refused rather than silently cut to page 0
                shape = tf.series[0].shape if len(tf.series[0].pages) > 1 else None
                what = (
                    f"a stack of {len(stack)} images {tuple(shape)}"
                    if shape
                    else (
                        f"{len(stack)} pages of {page.imagewidth} x {page.imagelength} pixels (a stack)"
                    )
                )
                raise BiounetError(
                    f"{path}: {what}; biounet trains and evaluates on one 2D image per file "
                    "(predict reads a stack slice by slice)"
                )
            if index is not None:
                if not 0 <= index < len(stack):
                    raise BiounetError(f"{path}: no slice {index} (the stack has {len(stack)})")
                page = stack[index]
            arr = np.asarray(page.asarray())
            if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
                arr = np.moveaxis(arr, 0, -1)  # stored channels-first
    except BiounetError:
        raise
    except Exception as e:  # tifffile raises many types for corrupt files
        raise BiounetError(f"{path}: cannot decode TIFF ({type(e).__name__}: {e})") from e
    return np.asarray(arr)


# zlib level of written PNGs: 3 writes a photograph-sized overlay 3.6 x faster than Pillow's
# default 6 for 11 % more bytes (a 1024 x 876 Drishti-GS1 photograph: 0.28 -> 0.08 s)
PNG_LEVEL = 3


def save_png(path: Path, arr: np.ndarray) -> None:
    """Write a (H, W) or (H, W, 3) uint8 array as PNG."""
    Image.fromarray(np.ascontiguousarray(arr)).save(path, compress_level=PNG_LEVEL)
