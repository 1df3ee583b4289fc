"""Reading one image: bit depths, floats, truncation and hostile bytes."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import broken_png
from octlens.data.images import UnreadableImageError, check_image, load_grayscale, to_uint8


def _speckle(seed: int = 0, shape=(96, 128)) -> np.ndarray:
    """An 8-bit OCT-like image: dark background, a bright band, noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=shape)
    image[30:60] += 150
    return image.astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_12_bit_data_in_16_bit_files_reads_like_its_8_bit_export(tmp_path, suffix):
    pixels = _speckle()
    path = tmp_path / f"scan{suffix}"
    Image.fromarray(((pixels.astype(np.uint32) * 4095 + 127) // 255).astype(np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I;16")
    loaded = np.asarray(load_grayscale(path), dtype=float)
    # Pillow's own convert("L") gets these wrong by far; scaled by 12 bits they match.
    naive = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert np.abs(naive - pixels).mean() > 30
    assert np.abs(loaded - pixels).max() <= 1
    assert loaded.mean() == pytest.approx(pixels.mean(), abs=0.5)


def test_full_16_bit_range_uses_16_bits(tmp_path):
    pixels = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    loaded = np.asarray(load_grayscale(tmp_path / "wide.png"))
    assert loaded.min() == 0 and loaded.max() == 255
    assert loaded[32, 32] == round(int(pixels[32, 32]) * 255 / 65535)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_tiffs_are_read_in_0_1_or_0_255(tmp_path, scale):
    pixels = _speckle()
    path = tmp_path / "float.tif"
    Image.fromarray(pixels.astype(np.float32) / 255 * scale).save(path)
    assert Image.open(path).mode == "F"
    loaded = np.asarray(load_grayscale(path), dtype=float)
    assert np.abs(loaded - pixels).max() <= 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([[-1.0, 0.5]], np.float32), r"floating-point pixels in \[-1, 0.5\]"),
        (np.array([[0.0, 1000.0]], np.float32), r"in \[0, 1000\]"),
        (np.array([[0.0, np.nan]], np.float32), "NaN or infinity"),
    ],
)
def test_floats_that_cannot_be_scaled_honestly_are_refused(tmp_path, values, message):
    path = tmp_path / "odd.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(UnreadableImageError, match=message):
        load_grayscale(path)


def test_to_uint8_by_hand():
    assert to_uint8(np.array([0, 1023], np.uint16), "x").tolist() == [0, 255]
    assert to_uint8(np.array([0, 4095, 2048], np.uint16), "x").tolist() == [0, 255, 128]
    assert to_uint8(np.array([0, 200], np.uint16), "x").tolist() == [0, 200]  # 8-bit data
    assert to_uint8(np.array([0.0, 0.5, 1.0]), "x").tolist() == [0, 128, 255]
    assert to_uint8(np.array([True, False]), "x").tolist() == [255, 0]
    with pytest.raises(UnreadableImageError, match="exceed 16 bits"):
        to_uint8(np.array([0, 70000], np.int32), "x")
    with pytest.raises(UnreadableImageError, match="negative"):
        to_uint8(np.array([-3, 7], np.int16), "x")


def _half_jpeg(tmp_path: Path, progressive: bool = False) -> Path:
    whole = tmp_path / "whole.jpeg"
    Image.fromarray(_speckle(shape=(120, 96))).save(whole, quality=95, progressive=progressive)
    data = whole.read_bytes()
    cut = tmp_path / "cut.jpeg"
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")  # cut in half, end marker appended
    return cut


def test_a_jpeg_cut_in_half_with_an_end_marker_is_found(tmp_path):
    cut = _half_jpeg(tmp_path)
    check_image(cut)  # the cheap scan-time check cannot see it...
    with pytest.raises(UnreadableImageError, match=r"truncated JPEG .*flat grey fill"):
        check_image(cut, decode=True)  # ...--strict decodes and can
    for size in (None, 32):  # every load finds it, at full or reduced DCT scale
        with pytest.raises(UnreadableImageError, match="truncated JPEG"):
            load_grayscale(cut, size)
    load_grayscale(tmp_path / "whole.jpeg", 32)


def test_a_flat_grey_jpeg_is_not_taken_for_a_truncated_one(tmp_path):
    path = tmp_path / "grey.jpeg"
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(path)
    assert np.asarray(load_grayscale(path)).mean() == 128


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 16)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_giant_headers_are_refused_before_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    _png_header_only(path, side, side)
    for read in (check_image, load_grayscale):
        with pytest.raises(UnreadableImageError, match=r"bomb\.png: .*(decompression bomb|limit)"):
            read(path)


def test_a_png_with_a_broken_deflate_stream_passes_the_crc_check_but_not_decoding(tmp_path):
    path = tmp_path / "broken.png"
    broken_png(path)
    check_image(path)  # CRCs are valid
    with pytest.raises(UnreadableImageError, match=r"broken\.png"):
        load_grayscale(path)
    with pytest.raises(UnreadableImageError, match=r"broken\.png"):
        check_image(path, decode=True)


_VALID = {}


def _valid_bytes(kind: str) -> bytes:
    if kind not in _VALID:
        from io import BytesIO

        buffer = BytesIO()
        Image.fromarray(_speckle(shape=(24, 24))).save(buffer, format=kind)
        _VALID[kind] = buffer.getvalue()
    return _VALID[kind]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["PNG", "JPEG", "TIFF", "BMP"]),
    cut=st.integers(min_value=0, max_value=4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=6),
)
def test_damaged_files_are_read_or_refused_by_name_never_crash(tmp_path, kind, cut, flips):
    data = bytearray(_valid_bytes(kind))
    for position, value in flips:
        if position < len(data):
            data[position] ^= value
    path = tmp_path / f"fuzz.{kind.lower()}"
    path.write_bytes(bytes(data[: max(1, len(data) - cut)]))
    for read in (lambda p: check_image(p, decode=True), load_grayscale):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                read(path)
            except UnreadableImageError as error:
                assert str(error).startswith(str(path))
                assert "\n" not in str(error)
        for warning in caught:  # what Pillow says of damage it can live with names the file
            assert str(warning.message).startswith(str(path))


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\n%%EOF\n"


def _frames(path: Path, image_format: str, count: int = 2) -> None:
    frames = [Image.fromarray(_speckle(seed, shape=(24, 24))) for seed in range(count)]
    frames[0].save(path, format=image_format, save_all=True, append_images=frames[1:])


def test_only_the_documented_formats_are_decoded_whatever_the_name(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    opened: list[str] = []  # Pillow's EPS decoder runs Ghostscript: it must never be reached
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append("eps"))
    eps = tmp_path / "scan.jpeg"
    eps.write_bytes(EPS)
    gif = tmp_path / "scan.png"
    Image.fromarray(_speckle()).save(gif, format="GIF")
    for path in (eps, gif):
        for read in (check_image, load_grayscale):
            with pytest.raises(UnreadableImageError) as caught:
                read(path)
            assert str(caught.value) == (
                f"{path}: not a readable image (octlens reads JPEG, PNG, TIFF, BMP)"
            )
    assert opened == []


@pytest.mark.parametrize(("image_format", "suffix"), [("TIFF", ".tif"), ("PNG", ".png")])
def test_a_multi_frame_file_is_refused_not_scored_on_its_first_frame(
    tmp_path, image_format, suffix
):
    path = tmp_path / f"volume{suffix}"
    _frames(path, image_format, count=3)
    assert Image.open(path).n_frames == 3
    for read in (check_image, load_grayscale):
        with pytest.raises(UnreadableImageError, match=r"volume\.\w+: 3 frames \(an OCT volume"):
            read(path)
    single = tmp_path / f"one{suffix}"
    _frames(single, image_format, count=1)
    check_image(single)
    assert load_grayscale(single).size == (24, 24)


def test_masks_count_every_non_zero_pixel_but_not_jpeg_noise(tmp_path):
    """A 16-bit mask of 1s, a palette mask by its label indices, a colour mask: lesion wherever
    non-zero. A JPEG mask is cut at half its range, or its compression noise would be lesion."""
    from octlens.data.images import load_mask

    lesion = np.zeros((40, 60), np.uint8)
    lesion[10:20, 20:35] = 1
    expected = lesion.astype(bool)
    Image.fromarray(lesion.astype(np.uint16)).save(tmp_path / "labels16.png")
    palette = Image.fromarray(lesion, mode="P")
    palette.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 drawn white: still 0
    palette.save(tmp_path / "palette.png")
    colour = np.zeros((40, 60, 3), np.uint8)
    colour[expected] = (200, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    for name in ("labels16.png", "palette.png", "colour.png"):
        np.testing.assert_array_equal(load_mask(tmp_path / name), expected, err_msg=name)
    noisy = tmp_path / "noisy.png"  # JPEG data under a .png name: decoded as what it is
    Image.fromarray(lesion * 255).save(noisy, format="JPEG", quality=50)
    assert (np.asarray(Image.open(noisy)) != 0).sum() > expected.sum()  # the noise is there
    assert (load_mask(noisy) != expected).sum() <= 4
