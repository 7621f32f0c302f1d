"""Every bad file gives a specific per-file error; every odd mode gives sensible 8-bit RGB."""

from __future__ import annotations

import logging
import os
import pickle
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fakes import refuse_listing
from PIL import Image

from retrieval.images import (
    ALPHA_BACKGROUND,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    UnsupportedImageModeError,
    iter_image_files,
    list_image_files,
    load_rgb,
    load_rgb_array,
    to_rgb_image,
)

RNG_SEED = 1234


def noise_rgb(height: int = 32, width: int = 48) -> Image.Image:
    rng = np.random.default_rng(RNG_SEED)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def saved(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims a size but holds no pixel data: decoding it would fail."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b""))
    return path


def expect_load_error(path: Path, reason_start: str, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as caught:
        load_rgb(path, **kwargs)
    assert caught.value.path == path
    assert caught.value.reason.startswith(reason_start), caught.value.reason
    assert str(caught.value).startswith(f"{path}: {reason_start}")
    return caught.value


# --- the error type -------------------------------------------------------------------------


def test_error_carries_path_and_reason_and_survives_pickling(tmp_path):
    error = ImageLoadError(tmp_path / "a.jpg", "file not found")
    assert isinstance(error, ValueError)
    assert str(error) == f"{tmp_path / 'a.jpg'}: file not found"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.reason, str(clone)) == (error.path, error.reason, str(error))


# --- bad files ------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    expect_load_error(tmp_path / "nope.jpg", "file not found")


def test_symlink_loop_is_named_as_a_loop(tmp_path):
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    expect_load_error(loop, "symbolic link loop")


def test_broken_symlink_is_named_as_such(tmp_path):
    link = tmp_path / "link.png"
    os.symlink(tmp_path / "gone.png", link)
    expect_load_error(link, "broken symbolic link")


def test_directory(tmp_path):
    folder = tmp_path / "looks_like.jpg"
    folder.mkdir()
    expect_load_error(folder, "is a directory")


def test_fifo_is_refused_without_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes need POSIX")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    expect_load_error(fifo, "not a regular file")


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    expect_load_error(empty, "empty file (0 bytes)")


def test_text_file_named_jpg(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("these are not pixels\n" * 20)
    expect_load_error(text, "not an image (unrecognised format)")


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("BMP", ".bmp")])
def test_truncated_pixel_data(tmp_path, fmt, suffix):
    whole = saved(noise_rgb(), tmp_path / f"whole{suffix}", format=fmt)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    expect_load_error(cut, "truncated or corrupt image data")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's, on cut TIFF
@pytest.mark.parametrize("fmt, suffix, name", [("PNG", ".png", "PNG"), ("TIFF", ".tif", "TIFF")])
def test_truncated_header_is_named_not_called_non_image(tmp_path, fmt, suffix, name):
    whole = saved(noise_rgb(), tmp_path / f"whole{suffix}", format=fmt)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[:12])
    error = expect_load_error(cut, "truncated or corrupt image data")
    assert f"{name} header unreadable" in error.reason


def test_no_file_handles_leak_on_success_or_failure(tmp_path):
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd to count open files")
    good = saved(noise_rgb(), tmp_path / "good.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    big = png_header_only(tmp_path / "big.png", 5000, 5000)
    before = len(list(fd_dir.iterdir()))
    kept_alive = []  # results and tracebacks stay referenced, so a handle they held stays open
    for _ in range(20):
        kept_alive.append(load_rgb(good))
        for bad in (cut, big):
            with pytest.raises(ImageLoadError) as caught:
                load_rgb(bad, max_pixels=1_000_000)
            kept_alive.append(caught)
    assert len(list(fd_dir.iterdir())) == before


# --- decompression bombs --------------------------------------------------------------------


def test_bomb_refused_from_header_without_decoding(tmp_path, recwarn):
    # 100 Mpx is over Pillow's warning threshold but under its hard limit: our check decides.
    # Decoding this file would fail as truncated, so "too large" proves we never decoded.
    bomb = png_header_only(tmp_path / "bomb.png", 10_000, 10_000)
    limit_before = Image.MAX_IMAGE_PIXELS
    expect_load_error(bomb, "image too large: 10000x10000 pixels exceeds limit of 64000000")
    assert limit_before == Image.MAX_IMAGE_PIXELS
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_raised_limit_lets_header_pass_and_decoding_then_runs(tmp_path, recwarn):
    bomb = png_header_only(tmp_path / "bomb.png", 10_000, 10_000)
    expect_load_error(bomb, "truncated or corrupt image data", max_pixels=200_000_000)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_decoding_in_threads_leaves_the_warning_filters_as_they_were(tmp_path):
    # Each header read silences the bomb warning inside `catch_warnings`, which swaps a
    # process-wide list: unguarded, threads interleaving there left the filter installed for
    # good (in most runs of 400 reads here; this makes 2000).
    image = saved(noise_rgb(4, 4), tmp_path / "small.png")
    before = list(warnings.filters)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: load_rgb(image), range(2000)))
    assert warnings.filters == before


def test_absurd_dimensions_hit_pillow_guard_and_still_read_too_large(tmp_path):
    huge = png_header_only(tmp_path / "huge.png", 1_000_000, 1_000_000)
    expect_load_error(huge, "image too large", max_pixels=10**13)


def test_max_pixels_boundary_on_a_normal_image(tmp_path):
    image = saved(noise_rgb(10, 20), tmp_path / "small.png")
    assert load_rgb(image, max_pixels=200).size == (20, 10)
    expect_load_error(image, "image too large: 20x10 pixels exceeds limit of 199", max_pixels=199)


def test_max_pixels_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_pixels"):
        load_rgb(tmp_path / "x.png", max_pixels=0)


# --- modes ----------------------------------------------------------------------------------


def assert_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert image.mode == "RGB"
    assert image.size == size
    pixels = np.asarray(image)
    assert pixels.dtype == np.uint8 and pixels.shape == (size[1], size[0], 3)
    return pixels


def test_rgb_round_trip_is_exact(tmp_path):
    original = noise_rgb()
    pixels = assert_rgb(load_rgb(saved(original, tmp_path / "rgb.png")), original.size)
    np.testing.assert_array_equal(pixels, np.asarray(original))


def test_grayscale_repeats_the_gray_level(tmp_path):
    gray = Image.fromarray(np.array([[0, 90, 255]], dtype=np.uint8))
    pixels = assert_rgb(load_rgb(saved(gray, tmp_path / "gray.png")), (3, 1))
    np.testing.assert_array_equal(pixels[0], [[0, 0, 0], [90, 90, 90], [255, 255, 255]])


def test_one_bit_maps_to_black_and_white(tmp_path):
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    pixels = assert_rgb(load_rgb(saved(bits, tmp_path / "bits.png")), (2, 1))
    np.testing.assert_array_equal(pixels[0], [[0, 0, 0], [255, 255, 255]])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path, suffix):
    deep = Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16))
    loaded = load_rgb(saved(deep, tmp_path / f"deep{suffix}"))
    pixels = assert_rgb(loaded, (4, 1))
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 1, 128, 255])
    assert (pixels[0] == pixels[0, :, :1]).all()


def test_float_image_in_unit_range_scales_by_255(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    pixels = assert_rgb(load_rgb(saved(Image.fromarray(values), tmp_path / "f.tif")), (3, 1))
    np.testing.assert_array_equal(pixels[0, :, 1], [0, 128, 255])


def test_float_image_outside_known_ranges_is_stretched(tmp_path):
    values = np.array([[-10.0, 0.0, 10.0, np.nan]], dtype=np.float32)
    pixels = np.asarray(to_rgb_image(Image.fromarray(values)))
    np.testing.assert_array_equal(pixels[0, :, 2], [0, 128, 255, 128])


@pytest.mark.parametrize(
    "values, expected",
    [([0, 128, 255], [0, 128, 255]), ([0, 257, 65535], [0, 1, 255]), ([100, 100100], [0, 255])],
)
def test_32_bit_integer_range_is_read_from_data(values, expected):
    image = Image.fromarray(np.array([values], dtype=np.int32))
    assert image.mode == "I"
    pixels = np.asarray(to_rgb_image(image))
    np.testing.assert_array_equal(pixels[0, :, 0], expected)


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("TIFF", ".tif")])
def test_cmyk_pure_cyan_becomes_rgb_cyan(tmp_path, fmt, suffix):
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    pixels = assert_rgb(load_rgb(saved(cyan, tmp_path / f"cyan{suffix}", format=fmt)), (16, 16))
    np.testing.assert_allclose(pixels[8, 8], [0, 255, 255], atol=4)


def palette_image() -> Image.Image:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 200, 0, 10, 20, 30] + [0] * (256 - 3) * 3)
    image.putdata([0, 1, 2])
    return image


def test_palette_colours_round_trip(tmp_path):
    pixels = assert_rgb(load_rgb(saved(palette_image(), tmp_path / "pal.png")), (3, 1))
    np.testing.assert_array_equal(pixels[0], [[255, 0, 0], [0, 200, 0], [10, 20, 30]])


def test_palette_transparent_index_takes_the_background(tmp_path):
    path = saved(palette_image(), tmp_path / "pal_t.png", transparency=1)
    pixels = assert_rgb(load_rgb(path), (3, 1))
    np.testing.assert_array_equal(pixels[0], [[255, 0, 0], ALPHA_BACKGROUND, [10, 20, 30]])


def test_rgba_alpha_composites_onto_mid_gray(tmp_path):
    rgba = Image.fromarray(
        np.array([[[200, 10, 60, 255], [200, 10, 60, 0], [255, 255, 255, 128]]], dtype=np.uint8)
    )
    pixels = assert_rgb(load_rgb(saved(rgba, tmp_path / "rgba.png")), (3, 1))
    assert ALPHA_BACKGROUND == (128, 128, 128)
    np.testing.assert_array_equal(pixels[0, 0], [200, 10, 60])
    np.testing.assert_array_equal(pixels[0, 1], ALPHA_BACKGROUND)
    np.testing.assert_allclose(pixels[0, 2], [192, 192, 192], atol=1)


def test_gray_alpha_composites_onto_background(tmp_path):
    la = Image.fromarray(np.array([[[40, 255], [40, 0]]], dtype=np.uint8), mode="LA")
    pixels = assert_rgb(load_rgb(saved(la, tmp_path / "la.png")), (2, 1))
    np.testing.assert_array_equal(pixels[0], [[40, 40, 40], ALPHA_BACKGROUND])


def test_palette_alpha_mode_composites_onto_background():
    pa = palette_image().convert("PA")
    pa.putalpha(Image.frombytes("L", (3, 1), bytes([255, 0, 255])))
    pixels = assert_rgb(to_rgb_image(pa), (3, 1))
    np.testing.assert_array_equal(pixels[0], [[255, 0, 0], ALPHA_BACKGROUND, [10, 20, 30]])


def test_unconvertible_mode_is_named():
    premultiplied_gray_alpha = Image.new("La", (2, 2))
    with pytest.raises(UnsupportedImageModeError, match="'La'"):
        to_rgb_image(premultiplied_gray_alpha)


# --- EXIF orientation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, marked_corner",
    [(6, lambda w, h: (w - 1, 0)), (8, lambda w, h: (0, h - 1))],  # 90 deg CW / 90 deg CCW
)
def test_exif_orientation_is_applied(tmp_path, orientation, marked_corner):
    stored = np.full((20, 40, 3), 30, dtype=np.uint8)  # 40 wide, 20 high, as stored on disk
    stored[:8, :8] = (250, 20, 20)  # red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = saved(Image.fromarray(stored), tmp_path / "turned.jpg", exif=exif, quality=95)
    upright = load_rgb(path)
    assert upright.size == (20, 40)
    x, y = marked_corner(*upright.size)
    red, green, blue = upright.getpixel((x, y))
    assert red > 200 and green < 60 and blue < 60
    assert upright.getpixel((0, 0))[0] < 60  # the stored top-left corner moved away


# --- arrays ---------------------------------------------------------------------------------


def test_load_rgb_array_plain_and_resized(tmp_path):
    original = noise_rgb(32, 48)
    path = saved(original, tmp_path / "img.png")
    array = load_rgb_array(path)
    assert array.dtype == np.uint8 and array.shape == (32, 48, 3) and array.flags.writeable
    np.testing.assert_array_equal(array, np.asarray(original))
    resized = load_rgb_array(path, size=(5, 7))
    assert resized.shape == (5, 7, 3) and resized.dtype == np.uint8


def test_load_rgb_array_resize_of_flat_colour_keeps_colour(tmp_path):
    path = saved(Image.new("RGB", (30, 20), (12, 34, 56)), tmp_path / "flat.png")
    assert (load_rgb_array(path, size=(9, 4)) == (12, 34, 56)).all()


@pytest.mark.parametrize("size", [(0, 5), (5,), [5, 5], (5.0, 5), (True, 4)])
def test_load_rgb_array_rejects_bad_size(tmp_path, size):
    path = saved(noise_rgb(), tmp_path / "img.png")
    with pytest.raises(ValueError, match="height, width"):
        load_rgb_array(path, size=size)


def test_load_rgb_array_reports_bad_file(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_rgb_array(tmp_path / "gone.png")


def test_to_rgb_image_from_uint8_arrays():
    gray = np.array([[0, 77]], dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(to_rgb_image(gray))[0], [[0, 0, 0], [77, 77, 77]])
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(np.asarray(to_rgb_image(rgb)), rgb)
    rgba = np.array([[[9, 8, 7, 255], [9, 8, 7, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(to_rgb_image(rgba))[0], [[9, 8, 7], ALPHA_BACKGROUND])


def test_to_rgb_image_from_float_array_scales_and_rounds():
    values = np.array([[[0.0, 0.5, 1.0], [0.2, 0.2, 0.2]]], dtype=np.float64)
    np.testing.assert_array_equal(np.asarray(to_rgb_image(values))[0], [[0, 128, 255], [51] * 3])


def test_to_rgb_image_keeps_input_untouched():
    source = Image.new("RGB", (2, 2), (1, 2, 3))
    result = to_rgb_image(source)
    result.putpixel((0, 0), (9, 9, 9))
    assert source.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((4, 4, 2), dtype=np.uint8), ValueError, "shape"),
        (np.zeros((4, 4, 3, 1), dtype=np.uint8), ValueError, "shape"),
        (np.zeros((4,), dtype=np.uint8), ValueError, "shape"),
        (np.zeros((0, 4, 3), dtype=np.uint8), ValueError, "non-empty"),
        (np.zeros((4, 4), dtype=np.int64), TypeError, "dtype int64"),
        (np.zeros((4, 4), dtype=np.uint16), TypeError, "dtype uint16"),
        (np.full((4, 4), 1.5), ValueError, r"\[0, 1\]"),
        (np.full((4, 4), -0.1), ValueError, r"\[0, 1\]"),
        (np.full((4, 4), np.nan), ValueError, "finite"),
        ([[0, 1], [2, 3]], TypeError, "got list"),
    ],
)
def test_to_rgb_image_rejects_bad_input(bad, error, message):
    with pytest.raises(error, match=message):
        to_rgb_image(bad)


# --- folder walking -------------------------------------------------------------------------


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_iter_image_files_recurses_filters_and_sorts(tmp_path):
    root = tmp_path / "db"
    names = [
        "b.JPG", "a.png", "Z.TIFF", "c.webp", "note.txt", "noext", ".hidden.jpg", "d.jpeg.bak",
        "sub/y.bmp", "sub/x.Jpeg", "sub/deeper/w.tif", "a_dir/v.png",
        ".cache/u.jpg", "sub/.thumbs/t.png",
    ]  # fmt: skip
    for name in names:
        touch(root / name)
    found = [path.relative_to(root).as_posix() for path in iter_image_files(root)]
    assert found == [
        "Z.TIFF", "a.png", "b.JPG", "c.webp",
        "a_dir/v.png",
        "sub/x.Jpeg", "sub/y.bmp",
        "sub/deeper/w.tif",
    ]  # fmt: skip
    assert all(isinstance(path, Path) for path in iter_image_files(root))


def test_iter_image_files_covers_every_listed_extension(tmp_path):
    for index, extension in enumerate(IMAGE_EXTENSIONS):
        touch(tmp_path / f"{index}{extension.upper()}")
    assert len(list(iter_image_files(tmp_path))) == len(IMAGE_EXTENSIONS)


def test_every_format_the_decoder_recognises_is_picked_up_by_folder_walks(tmp_path):
    """One list for queries and builds: a GIF a query answers is also indexed from a folder."""
    saved(noise_rgb(), tmp_path / "anim.gif")
    assert [path.name for path in iter_image_files(tmp_path)] == ["anim.gif"]
    assert load_rgb(tmp_path / "anim.gif").size == (48, 32)
    signature_formats = {"JPEG", "PNG", "GIF", "TIFF", "BMP", "WEBP"}
    assert {Image.registered_extensions()[ext] for ext in IMAGE_EXTENSIONS} == signature_formats


def test_iter_image_files_accepts_a_hidden_root(tmp_path):
    touch(tmp_path / ".root" / "a.png")
    assert [p.name for p in iter_image_files(tmp_path / ".root")] == ["a.png"]


def test_iter_image_files_bad_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list(iter_image_files(tmp_path / "missing"))
    a_file = touch(tmp_path / "file.png")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        list(iter_image_files(a_file))


def test_iter_image_files_logs_and_goes_on_past_unlistable_folder(tmp_path, monkeypatch, caplog):
    touch(tmp_path / "a" / "1.png")
    touch(tmp_path / "b" / "2.png")
    locked = tmp_path / "a"
    refuse_listing(monkeypatch, locked)
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert found == ["b/2.png"]
    (record,) = caplog.records
    assert record.name == "retrieval.images" and record.levelno == logging.WARNING
    assert str(locked) in record.getMessage() and "cannot list folder" in record.getMessage()


def test_list_image_files_names_each_unlistable_folder_instead_of_logging(tmp_path, monkeypatch, caplog):
    touch(tmp_path / "a" / "1.png")
    touch(tmp_path / "b" / "2.png")
    refuse_listing(monkeypatch, tmp_path / "a")
    files, unlistable = list_image_files(tmp_path)
    assert files == [tmp_path / "b" / "2.png"]
    assert unlistable == [(str(tmp_path / "a"), f"{tmp_path / 'a'}: cannot list folder (Permission denied)")]
    assert caplog.records == []
