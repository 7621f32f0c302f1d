"""Safe image loading: any user file becomes an upright 8-bit RGB image or a clear per-file error.

Users point the engine at arbitrary folders. One bad file must not stop a batch, so every failure
is raised as `ImageLoadError` naming the file and the problem; callers report it and go on.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

LOG = logging.getLogger(__name__)

# The one list of formats folder walks pick up (index builds, queries of a folder): every format
# whose signature `_SIGNATURES` knows, so what a query answers a build also indexes.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")

DEFAULT_MAX_PIXELS = 64_000_000
_HEADER_LOCK = threading.Lock()

# Mid-gray rather than white or black: it sits near the ImageNet mean, so after the network's
# input normalisation transparent areas are close to zero, and it draws no strong false edge
# around either dark or bright objects.
ALPHA_BACKGROUND = (128, 128, 128)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_HIGH_DEPTH_MODES = (*_SIXTEEN_BIT_MODES, "I", "F")

# Magic numbers of the formats we list, to tell "damaged image" from "not an image at all".
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


class ImageLoadError(ValueError):
    """A file that cannot become an image; `path` and `reason` let callers report it per file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        # Both values go to args so the error survives pickling across worker processes.
        super().__init__(Path(path), reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class UnsupportedImageModeError(ValueError):
    """Pillow holds the image in a mode it cannot turn into RGB (e.g. premultiplied 'La')."""


def iter_image_files(folder: str | os.PathLike,
                     unlistable: Callable[[str, str], None] | None = None) -> Iterator[Path]:
    """Yield image files under `folder`, recursively, in a reproducible order.

    Order: the files of a folder by name (code-point order), then its sub-folders by name,
    depth first. Extensions match case-insensitively; hidden files and folders (leading '.')
    are skipped, symlinked folders are not followed (no cycles). A folder that cannot be listed
    is skipped, so one bad folder does not end the walk: `unlistable(folder, message)` is called
    for it, so a command can report it with its other skipped inputs; without one it is logged
    as a warning.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"{root}: folder not found")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    report = unlistable or _log_unlistable

    def refused(error: OSError) -> None:
        report(str(error.filename), f"{error.filename}: cannot list folder ({error.strerror})")

    for current, dirnames, filenames in os.walk(root, onerror=refused):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                yield Path(current) / name


def list_image_files(folder: str | os.PathLike) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files under `folder` (as `iter_image_files` orders them), and (folder, message)
    for each folder that could not be listed."""
    unlistable: list[tuple[str, str]] = []
    files = list(iter_image_files(folder, lambda path, message: unlistable.append((path, message))))
    return files, unlistable


def _log_unlistable(folder: str, message: str) -> None:
    LOG.warning("%s; skipped", message)


def load_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `path` fully into an upright 8-bit RGB image, or raise `ImageLoadError`.

    The pixel count is checked from the header before any pixel is decoded, so a decompression
    bomb costs nothing. Pillow's own bomb guard still refuses anything over twice
    `Image.MAX_IMAGE_PIXELS`; its warning below that is silenced because `max_pixels` decides.
    EXIF orientation is applied so the image matches what a viewer shows.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    file = Path(path)
    _require_nonempty_regular_file(file)
    with _open_lazily(file) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageLoadError(
                file, f"image too large: {width}x{height} pixels exceeds limit of {max_pixels}"
            )
        upright = _decode_upright(file, image)
    try:
        return _convert_mode(upright)
    except UnsupportedImageModeError as error:
        raise ImageLoadError(file, str(error)) from error


def load_rgb_array(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Load `path` as a writable uint8 array (H, W, 3), bilinearly resized to `size`=(H, W)."""
    if size is not None and not _is_height_width(size):
        raise ValueError(f"size must be (height, width) of positive integers, got {size!r}")
    image = load_rgb(path, max_pixels=max_pixels)
    if size is not None:
        height, width = size
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.uint8)


def to_rgb_image(obj: Image.Image | np.ndarray) -> Image.Image:
    """Turn an in-memory image into 8-bit RGB with the same rules as `load_rgb`.

    PIL images of any mode are accepted (EXIF orientation is a file matter and is not applied
    here). Arrays must be (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA, either uint8 or floating
    point with every value in [0, 1]; floats scale by 255 and round. Anything else raises
    TypeError (wrong type or dtype) or ValueError (wrong shape or values).
    """
    if isinstance(obj, Image.Image):
        return _convert_mode(obj)
    if isinstance(obj, np.ndarray):
        return _convert_mode(_array_to_image(obj))
    raise TypeError(f"expected a PIL image or a numpy array, got {type(obj).__name__}")


def stat_problem(file: Path, error: OSError) -> str:
    """Why `file` could not be stat'ed, in words; a symbolic link loop and a link to nothing are
    named as such rather than passing for a missing file."""
    if error.errno == errno.ELOOP:
        return "symbolic link loop (following the link leads back to it)"
    if error.errno == errno.ENOENT:
        return "broken symbolic link (its target does not exist)" if file.is_symlink() else "file not found"
    return f"cannot access file ({error.strerror})"


def _require_nonempty_regular_file(file: Path) -> None:
    try:
        info = file.stat()
    except OSError as error:
        raise ImageLoadError(file, stat_problem(file, error)) from error
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(file, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageLoadError(file, "not a regular file")
    if info.st_size == 0:
        raise ImageLoadError(file, "empty file (0 bytes)")


def _open_lazily(file: Path) -> Image.Image:
    """Read only the header; pixels stay on disk until `.load()`.

    The lock makes the warning filter safe when batches are decoded in threads:
    `catch_warnings` swaps a process-wide list, so two threads inside it at once could leave
    the filter behind for good. Only the header read is serialised, not the decoding.
    """
    try:
        with _HEADER_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(file)
    except Image.DecompressionBombError as error:
        raise ImageLoadError(file, f"image too large: {error}") from error
    except UnidentifiedImageError:
        format_name = _sniff_format(file)
        if format_name is None:
            raise ImageLoadError(file, "not an image (unrecognised format)") from None
        raise ImageLoadError(
            file, f"truncated or corrupt image data ({format_name} header unreadable)"
        ) from None
    except OSError as error:
        raise ImageLoadError(file, f"cannot read file ({error})") from error


def _sniff_format(file: Path) -> str | None:
    with open(file, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _decode_upright(file: Path, image: Image.Image) -> Image.Image:
    """Decode every pixel now, so truncation surfaces here and not deep inside a batch."""
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, EOFError, ValueError) as error:
        raise ImageLoadError(file, f"truncated or corrupt image data ({error})") from error


def _convert_mode(image: Image.Image) -> Image.Image:
    """The single mode-to-RGB rule shared by files and in-memory images; returns a new image."""
    if image.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_high_depth_to_uint8(image)).convert("RGB")
    if image.has_transparency_data:
        return _flatten_alpha(_convert(image, "RGBA"))
    return _convert(image, "RGB")


def _convert(image: Image.Image, mode: str) -> Image.Image:
    try:
        return image.convert(mode)
    except ValueError as error:
        raise UnsupportedImageModeError(
            f"unsupported image mode {image.mode!r} ({error})"
        ) from error


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    flat = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale 16-bit, 32-bit integer and float pixels onto 0..255 instead of clipping them.

    16-bit modes use their full range (65535 -> 255). 'I' and 'F' carry no nominal range, so it
    is read from the data: the smallest of [0, 1] (float only), [0, 255], [0, 65535] that holds
    every value, else the data's own min..max. Non-finite floats count as 0.
    """
    values = np.asarray(image).astype(np.float32)
    if image.mode in _SIXTEEN_BIT_MODES:
        low, high = 0.0, 65535.0
    else:
        values = np.where(np.isfinite(values), values, np.float32(0.0))
        low, high = _nominal_range(values, unit_interval=image.mode == "F")
    scaled = np.rint((values - low) * (255.0 / (high - low)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _nominal_range(values: np.ndarray, unit_interval: bool) -> tuple[float, float]:
    if values.size == 0:
        return 0.0, 255.0
    low, high = float(values.min()), float(values.max())
    if low >= 0.0:
        ceilings = (1.0, 255.0, 65535.0) if unit_interval else (255.0, 65535.0)
        for ceiling in ceilings:
            if high <= ceiling:
                return 0.0, ceiling
    return low, high if high > low else low + 1.0


def _array_to_image(array: np.ndarray) -> Image.Image:
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
    if not shape_ok:
        raise ValueError(
            f"expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"expected a non-empty image array, got shape {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError("float image arrays must hold finite values in [0, 1]")
        pixels = np.rint(array * 255.0).astype(np.uint8)
    else:
        raise TypeError(f"expected a uint8 or float image array, got dtype {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(pixels))


def _is_height_width(size: object) -> bool:
    return (
        isinstance(size, tuple)
        and len(size) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)
    )
