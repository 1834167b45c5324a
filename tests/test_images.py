"""Tests of anymask.images.load_image: every conversion rule and every error case."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anymask.errors import ImageError
from anymask.images import IMAGE_EXTENSIONS, load_image

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
GRABCUT = ROOT.parent / "shared" / "data" / "grabcut"

ASTRONAUT_SHA256 = "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"


def _check_rgb(result: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.uint8
    assert result.shape == shape + (3,)
    assert result.flags.c_contiguous


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(ASTRONAUT)


def _gradient_rgb(height: int = 24, width: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], axis=-1).astype(np.uint8)


# ------------------------------------------------------------------------------- the real photo


def test_astronaut_file_is_the_scikit_image_one():
    assert hashlib.sha256(ASTRONAUT.read_bytes()).hexdigest() == ASTRONAUT_SHA256


def test_astronaut_loads_with_known_statistics(astronaut):
    _check_rgb(astronaut, (512, 512))
    np.testing.assert_allclose(astronaut.reshape(-1, 3).mean(axis=0), [141.5625, 105.7594, 96.4751], atol=1e-3)
    assert astronaut[0, 0].tolist() == [154, 147, 151]
    assert astronaut[255, 255].tolist() == [18, 15, 8]
    assert astronaut[511, 511].tolist() == [0, 0, 0]
    # the orange suit: red dominates in the lower left quarter
    suit = astronaut[350:450, 50:150].reshape(-1, 3).mean(axis=0)
    assert suit[0] > suit[1] + 60 and suit[0] > suit[2] + 60


def test_astronaut_sources_agree(astronaut):
    with Image.open(ASTRONAUT) as im:
        from_pil = load_image(im)
        np.testing.assert_array_equal(from_pil, astronaut)
    np.testing.assert_array_equal(load_image(str(ASTRONAUT)), astronaut)
    np.testing.assert_array_equal(load_image(astronaut), astronaut)


def test_astronaut_in_other_modes(astronaut, tmp_path):
    gray = Image.fromarray(astronaut).convert("L")
    path = tmp_path / "gray.png"
    gray.save(path)
    result = load_image(path)
    _check_rgb(result, (512, 512))
    for c in range(3):
        np.testing.assert_array_equal(result[..., c], np.asarray(gray))

    rgba = np.dstack([astronaut, np.linspace(0, 255, 512 * 512).astype(np.uint8).reshape(512, 512)])
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    np.testing.assert_array_equal(load_image(path), astronaut)  # alpha dropped, colour unchanged


@pytest.mark.skipif(not (GRABCUT / "images").is_dir(), reason="../shared/data/grabcut not present")
def test_real_grabcut_jpegs_match_pil():
    paths = sorted(p for p in (GRABCUT / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:5]
    assert paths
    for path in paths:
        with Image.open(path) as im:
            expected = np.asarray(im.convert("RGB"))
        result = load_image(path)
        _check_rgb(result, expected.shape[:2])
        np.testing.assert_array_equal(result, expected)


# ---------------------------------------------------------------------------------------- arrays


def test_uint8_rgb_array_is_copied():
    arr = _gradient_rgb()
    result = load_image(arr)
    np.testing.assert_array_equal(result, arr)
    assert not np.shares_memory(result, arr)
    result[0, 0] = 7
    assert arr[0, 0, 0] == 0


def test_non_contiguous_array_gives_contiguous_result():
    arr = _gradient_rgb()[:, ::-1]
    result = load_image(arr)
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, arr)


def test_gray_arrays_replicated():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for arr in (gray, gray[:, :, None]):
        result = load_image(arr)
        _check_rgb(result, (3, 4))
        for c in range(3):
            np.testing.assert_array_equal(result[..., c], gray)
        assert not np.shares_memory(result, arr)


def test_rgba_array_drops_alpha():
    arr = np.dstack([_gradient_rgb(), np.full((24, 32), 3, np.uint8)])
    result = load_image(arr)
    np.testing.assert_array_equal(result, arr[..., :3])


def test_uint16_array_divided_by_257_and_rounded():
    values = np.array([[0, 128, 129, 257, 385, 386, 32896, 65535]], dtype=np.uint16)
    expected = [0, 0, 1, 1, 1, 2, 128, 255]
    assert load_image(values)[0, :, 0].tolist() == expected
    assert load_image(values.astype(">u2"))[0, :, 0].tolist() == expected
    rgb = np.stack([values, values // 2, 65535 - values], axis=-1)
    result = load_image(rgb)
    np.testing.assert_array_equal(result, np.rint(rgb / 257.0).astype(np.uint8))


def test_bool_array():
    arr = np.array([[True, False], [False, True]])
    result = load_image(arr)
    assert result[..., 0].tolist() == [[255, 0], [0, 255]]
    assert (result[..., 0] == result[..., 2]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_array_in_unit_range(dtype):
    arr = np.array([[0.0, 0.5, 1.0, 0.2, 1 / 255, 0.999]], dtype=dtype)
    assert load_image(arr)[0, :, 1].tolist() == [0, 128, 255, 51, 1, 255]


@pytest.mark.parametrize("bad", [1.5, -0.01, np.nan, np.inf, -np.inf])
def test_float_array_out_of_range_is_an_error(bad):
    arr = np.zeros((4, 4, 3), np.float32)
    arr[1, 2, 0] = bad
    with pytest.raises(ImageError):
        load_image(arr)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int16, np.int8, np.float16, np.uint32, np.complex64])
def test_unsupported_dtype(dtype):
    with pytest.raises(ImageError, match="dtype"):
        load_image(np.zeros((4, 4, 3), dtype=dtype))


def test_object_array_is_an_error():
    with pytest.raises(ImageError, match="dtype"):
        load_image(np.empty((2, 2, 3), dtype=object))


@pytest.mark.parametrize("shape", [(3, 16, 20), (4, 16, 20), (1, 16, 20)])
def test_channel_first_array_is_an_error(shape):
    with pytest.raises(ImageError, match="channels last expected"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(16, 20, 2), (16, 20, 5), (16,), (2, 16, 20, 3), ()])
def test_other_shapes_are_errors(shape):
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (0, 0), (0, 4)])
def test_empty_array_is_an_error(shape):
    with pytest.raises(ImageError, match="empty"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("source", [[[1, 2], [3, 4]], 42, None, b"\x89PNG"])
def test_unsupported_source_type(source):
    with pytest.raises(ImageError, match="unsupported image source"):
        load_image(source)


# --------------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="no such file") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="directory") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageError, match="not a recognised image") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError):
        load_image(path)


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_file(tmp_path, fmt, suffix):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buffer, fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot decode") as info:
        load_image(path)
    assert str(path) in str(info.value)
    # the whole file is fine
    path.write_bytes(data)
    _check_rgb(load_image(path), (96, 96))


def test_corrupt_png_data(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_gradient_rgb(64, 64)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 8
    data[start : start + 40] = b"\xff" * 40  # garbage in the compressed stream
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(path)


@pytest.mark.parametrize("limit, pixels", [(100, 144), (50, 144)])  # warning level, error level
def test_decompression_bomb(tmp_path, monkeypatch, limit, pixels):
    path = tmp_path / "big.png"
    Image.new("RGB", (12, 12)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10 * pixels)
    _check_rgb(load_image(path), (12, 12))


# ------------------------------------------------------------------------------- EXIF orientation


def test_exif_orientation_6(tmp_path):
    # stored 40 wide x 20 high: left half red, right half blue; orientation 6 = rotate 90 degrees clockwise
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, "JPEG", exif=exif, quality=95)

    result = load_image(path)
    _check_rgb(result, (40, 20))  # shape swapped
    # after a clockwise turn the stored left half (red) is on top, the right half (blue) at the bottom
    top, bottom = result[2:18].reshape(-1, 3).mean(0), result[22:38].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50
    # exactly np.rot90 clockwise of the decoded stored pixels
    with Image.open(path) as im:
        decoded = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(result, np.rot90(decoded, k=-1))
        # a PIL image gets the same treatment, and is left unchanged
        np.testing.assert_array_equal(load_image(im), result)
        assert im.size == (40, 20)


def test_exif_orientation_on_real_photo(astronaut, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down
    path = tmp_path / "astronaut_180.png"
    Image.fromarray(astronaut).save(path, exif=exif)
    np.testing.assert_array_equal(load_image(path), astronaut[::-1, ::-1])


# ---------------------------------------------------------------------------------------- modes


def test_16bit_png(tmp_path):
    values = np.array([[0, 128, 129, 385, 386], [1000, 30000, 65000, 65534, 65535]], dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # Pillow opens 16-bit gray PNGs as I;16 (or I)
    result = load_image(path)
    _check_rgb(result, (2, 5))
    expected = np.rint(values / 257.0).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(result[..., c], expected)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B"])
def test_16bit_pil_modes(mode):
    values = np.array([[0, 257, 386, 65535]], dtype=np.uint16)
    raw = values.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    im = Image.frombytes(mode, (4, 1), raw)
    assert im.mode == mode
    assert load_image(im)[0, :, 0].tolist() == [0, 1, 2, 255]


def test_mode_I(tmp_path):
    values = np.array([[0, 257, 386, 65535]], dtype=np.int32)
    path = tmp_path / "int32.tif"
    Image.fromarray(values, "I").save(path)
    with Image.open(path) as im:
        assert im.mode == "I"
    assert load_image(path)[0, :, 0].tolist() == [0, 1, 2, 255]
    for bad in (65536, -1):
        Image.fromarray(np.array([[0, bad]], dtype=np.int32), "I").save(path)
        with pytest.raises(ImageError, match="65535") as info:
            load_image(path)
        assert str(path) in str(info.value)


def test_mode_F(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, 0.2]], dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values, "F").save(path)
    with Image.open(path) as im:
        assert im.mode == "F"
    assert load_image(path)[0, :, 2].tolist() == [0, 128, 255, 51]
    for bad in (1.01, -0.5, np.nan):
        Image.fromarray(np.array([[0.0, bad]], dtype=np.float32), "F").save(path)
        with pytest.raises(ImageError):
            load_image(path)


def test_palette_png(tmp_path):
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 12)
    indices = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    im = Image.fromarray(indices, "P")
    im.putpalette(palette)
    path = tmp_path / "palette.png"
    im.save(path, transparency=0)  # index 0 transparent: dropped
    with Image.open(path) as reopened:
        assert reopened.mode == "P"
    result = load_image(path)
    assert result[0].tolist() == [[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 30]]


def test_palette_with_alpha_pil_image():
    im = Image.new("PA", (3, 2))
    im.putpalette([0, 0, 0, 9, 8, 7] + [0] * (254 * 3))
    im.putpixel((1, 1), (1, 200))
    result = load_image(im)
    assert result[1, 1].tolist() == [9, 8, 7] and result[0, 0].tolist() == [0, 0, 0]


def test_gray_bilevel_and_gray_alpha_png(tmp_path):
    gray = np.array([[0, 100, 200, 255]], dtype=np.uint8)
    path = tmp_path / "gray_alpha.png"
    Image.fromarray(np.dstack([gray, np.full_like(gray, 9)]), "LA").save(path)
    result = load_image(path)
    np.testing.assert_array_equal(result, np.repeat(gray[..., None], 3, axis=2))

    bits = Image.fromarray(np.array([[True, False, True]]))
    path = tmp_path / "bits.png"
    bits.save(path)
    with Image.open(path) as im:
        assert im.mode == "1"
    assert load_image(path)[0, :, 1].tolist() == [255, 0, 255]


def test_rgba_keeps_colour_under_transparent_pixels(tmp_path):
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[..., :3] = (200, 100, 50)
    arr[0, 0, 3] = 0  # fully transparent pixel: the colour is still kept
    arr[0, 1, 3] = 128
    arr[1, :, 3] = 255
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    assert (load_image(path) == (200, 100, 50)).all()


def test_premultiplied_rgba_like_pil_convert():
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[...] = (200, 100, 50, 128)
    im = Image.fromarray(arr, "RGBA").convert("RGBa")
    assert im.mode == "RGBa"
    np.testing.assert_array_equal(load_image(im), np.asarray(im.convert("RGB")))


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV", "RGBX"])
def test_colour_spaces_converted_by_pil(astronaut, mode):
    small = Image.fromarray(astronaut[::16, ::16])
    converted = small.convert(mode) if mode not in ("LAB", "HSV") else _to_space(small, mode)
    assert converted.mode == mode
    result = load_image(converted)
    _check_rgb(result, (32, 32))
    np.testing.assert_array_equal(result, np.asarray(converted.convert("RGB")))


def _to_space(image: Image.Image, mode: str) -> Image.Image:
    # Pillow has no RGB -> LAB/HSV conversion through convert() for every version; build the bands directly
    if mode == "HSV":
        return image.convert("HSV")
    return Image.frombytes("LAB", image.size, np.asarray(image).tobytes())


def test_cmyk_jpeg(tmp_path, astronaut):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(astronaut).convert("CMYK").save(path, quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    result = load_image(path)
    _check_rgb(result, (512, 512))
    assert np.abs(result.astype(int) - astronaut).mean() < 8


def test_unsupported_pil_mode():
    im = Image.new("La", (4, 4))
    with pytest.raises(ImageError, match="'La'"):
        load_image(im)


def test_multi_frame_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with Image.open(path) as im:
        assert getattr(im, "n_frames", 1) == 3
    result = load_image(path)
    _check_rgb(result, (6, 8))
    assert (result == (255, 0, 0)).all()


def test_multi_page_tiff_gives_first_page(tmp_path):
    pages = [Image.new("RGB", (5, 4), (10, 20, 30)), Image.new("L", (9, 9), 200)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    result = load_image(path)
    _check_rgb(result, (4, 5))
    assert (result == (10, 20, 30)).all()


def test_pil_image_not_modified_and_result_not_shared():
    im = Image.fromarray(_gradient_rgb())
    before = im.tobytes()
    result = load_image(im)
    result[...] = 0
    assert im.tobytes() == before and im.mode == "RGB"


def test_image_extensions():
    Image.init()
    registered = Image.registered_extensions()
    assert ".png" in IMAGE_EXTENSIONS and ".jpg" in IMAGE_EXTENSIONS and ".jpeg" in IMAGE_EXTENSIONS
    for suffix in IMAGE_EXTENSIONS:
        assert suffix == suffix.lower() and suffix.startswith(".")
        assert suffix in registered, suffix


@pytest.mark.parametrize("suffix", [".bmp", ".webp", ".tiff", ".ppm"])
def test_other_formats_round_trip(tmp_path, suffix):
    arr = _gradient_rgb()
    path = tmp_path / f"img{suffix}"
    Image.fromarray(arr).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    np.testing.assert_array_equal(load_image(path), arr)
