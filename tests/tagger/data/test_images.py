"""Tests for tagger/data/images.py: every awkward input kind, orientation, draft scale, bombs."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from tagger.data import images
from tagger.data.images import (
    ERROR_CODES,
    ImageError,
    draft_scale,
    hash_file,
    load_reduced,
    load_rgb,
    load_rgb_square,
    probe_image,
    resize_square,
    to_rgb,
)
from tests.tagger.image_corpus import (
    QUADRANT_COLOURS,
    gradient_image,
    pattern_image,
    reads_are_blocked,
    write_corpus,
    write_oriented_jpeg,
    write_png_claiming_size,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_corpus(folder)


def quadrant_colours(image: Image.Image) -> dict[str, tuple[int, ...]]:
    """The colour at the centre of each displayed quadrant."""
    w, h = image.size
    points = {
        "top_left": (w // 4, h // 4),
        "top_right": (3 * w // 4, h // 4),
        "bottom_left": (w // 4, 3 * h // 4),
        "bottom_right": (3 * w // 4, 3 * h // 4),
    }
    return {name: tuple(image.getpixel(xy)) for name, xy in points.items()}  # type: ignore[arg-type]


def assert_colours_close(
    got: Mapping[str, tuple[int, ...]], want: Mapping[str, tuple[int, ...]]
) -> None:
    for name, colour in want.items():
        assert np.abs(np.subtract(got[name], colour)).max() <= 12, (name, got[name], colour)


# --- every input kind -------------------------------------------------------------------------


def test_corpus_outcomes(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, expected = corpus
    assert {"bomb.png", "truncated.jpg", "cmyk.jpg", "panorama.jpg"} <= set(expected)
    for name, code in expected.items():
        if code is None:
            image = load_rgb(folder / name, 48)
            assert image.mode == "RGB", name
            assert min(image.size) == 48, (name, image.size)
        else:
            with pytest.raises(ImageError) as caught:
                load_rgb(folder / name, 48)
            assert caught.value.code == code, (name, caught.value)
            assert caught.value.path == str(folder / name)


def test_probe_agrees_with_load(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, expected = corpus
    for name, code in expected.items():
        if code is not None:
            continue
        info = probe_image(folder / name)
        full = load_rgb(folder / name, None)
        assert (info.width, info.height) == full.size, name


def test_codes_without_header_decoding(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, expected = corpus
    for name in ("empty.jpg", "text.jpg", "missing.jpg", "bomb.png", "bomb.gif", "image.ppm"):
        with pytest.raises(ImageError) as caught:
            probe_image(folder / name)
        assert caught.value.code == expected[name], name


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.jpg"
    gradient_image(16, 16).save(path, "JPEG")
    path.chmod(0)
    if not reads_are_blocked(path):
        pytest.skip("running as a user that chmod 000 does not stop (root)")
    with pytest.raises(ImageError) as caught:
        load_rgb(path, 8)
    assert caught.value.code == "unreadable"


def test_permission_denied_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.jpg"
    gradient_image(16, 16).save(path, "JPEG")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images, "open", denied, raising=False)  # works as root too
    for call in (lambda: load_rgb(path, 8), lambda: hash_file(path)):
        with pytest.raises(ImageError) as caught:
            call()
        assert caught.value.code == "unreadable"
        assert "Permission denied" in caught.value.message


def test_directory_and_fifo_are_unreadable_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    for path in (tmp_path / "folder.jpg", fifo):
        with pytest.raises(ImageError) as caught:
            load_rgb(path, 8)
        assert caught.value.code == "unreadable"


def test_damaged_header_is_decode_failed_not_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "damaged.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    with pytest.raises(ImageError) as caught:
        load_rgb(path, 8)
    assert caught.value.code == "decode_failed"


def test_heic_without_pillow_heif_is_unsupported(
    corpus: tuple[Path, dict[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, expected = corpus
    if "image.heic" not in expected:
        pytest.skip("pillow-heif not installed: no HEIC written")
    monkeypatch.setattr(images, "_register_heif", lambda: False)
    with pytest.raises(ImageError) as caught:
        load_rgb(folder / "image.heic", 8)
    assert caught.value.code == "unsupported"


def test_image_error_validates_code_and_pickles() -> None:
    with pytest.raises(ValueError, match="allowed"):
        ImageError("bad_code", "x", "a.jpg")  # type: ignore[arg-type]
    err = pickle.loads(pickle.dumps(ImageError("truncated", "cut short", "a.jpg")))
    assert (err.code, err.message, err.path) == ("truncated", "cut short", "a.jpg")
    assert "truncated" in ERROR_CODES and str(err) == "a.jpg: truncated: cut short"


# --- orientation ------------------------------------------------------------------------------


def test_orientation_6_by_hand(tmp_path: Path) -> None:
    # Stored 64 wide x 32 high, left half red, right half blue; orientation 6 = turn 90 degrees
    # clockwise to view: the stored left edge becomes the top. Displayed: 32 x 64, red on top.
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot6.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    shown = load_rgb(path, None)
    assert shown.size == (32, 64)
    assert_colours_close(
        {"top": shown.getpixel((16, 10)), "bottom": shown.getpixel((16, 54))},  # type: ignore[dict-item]
        {"top": (255, 0, 0), "bottom": (0, 0, 255)},
    )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_shows_the_pattern_upright_at_reduced_scale(
    tmp_path: Path, orientation: int
) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    write_oriented_jpeg(path, pattern_image(800, 400), orientation)
    reduced = load_reduced(path, 50)
    assert reduced.size == (100, 50)  # 1/8 scale, then turned upright
    assert_colours_close(quadrant_colours(reduced), QUADRANT_COLOURS)
    # Same as Pillow's own exif_transpose on a full decode.
    with Image.open(path) as im:
        oracle = ImageOps.exif_transpose(im.convert("RGB")).resize(reduced.size)
    assert_colours_close(quadrant_colours(reduced), quadrant_colours(oracle))
    info = probe_image(path)
    assert (info.width, info.height, info.orientation) == (800, 400, orientation)
    resized = load_rgb(path, 50)
    assert ImageOps.exif_transpose(resized).size == resized.size == (100, 50)  # not turned twice


# --- draft scale ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "min_side", "scale"),
    [
        (4000, 3000, 256, 8),  # 3000 / 8 = 375 >= 256
        (4000, 3000, 375, 8),
        (4000, 3000, 376, 4),  # 3000 / 8 = 375 < 376
        (3000, 4000, 376, 4),  # the shorter side decides, whichever way round
        (512, 512, 256, 2),
        (511, 4000, 256, 1),
        (20000, 300, 256, 1),
        (20000, 300, 64, 4),
        (1, 1, 224, 1),
    ],
)
def test_draft_scale(width: int, height: int, min_side: int, scale: int) -> None:
    assert draft_scale(width, height, min_side) == scale


@pytest.mark.parametrize(("min_side", "decoded"), [(180, (250, 188)), (200, (500, 375))])
def test_decoded_size_before_resize(
    tmp_path: Path, min_side: int, decoded: tuple[int, int]
) -> None:
    path = tmp_path / "big.jpg"
    gradient_image(2000, 1500).save(path, "JPEG")
    assert load_reduced(path, min_side).size == decoded  # ceil(2000 / s) x ceil(1500 / s)
    rotated = tmp_path / "big_rot8.jpg"
    write_oriented_jpeg(rotated, gradient_image(2000, 1500), 8)  # stored 1500 x 2000
    assert load_reduced(rotated, min_side).size == decoded
    resized = load_rgb(path, min_side)
    assert min(resized.size) == min_side and resized.width > resized.height


@pytest.mark.parametrize("variant", ["progressive", "CMYK", "L"])
def test_jpeg_variants_also_decode_reduced(tmp_path: Path, variant: str) -> None:
    path = tmp_path / f"{variant}.jpg"
    image = gradient_image(1600, 1200)
    if variant == "progressive":
        image.save(path, "JPEG", progressive=True)
    else:
        image.convert(variant).save(path, "JPEG")
    reduced = load_reduced(path, 100)
    assert (reduced.size, reduced.mode) == ((200, 150), "RGB")


def test_non_jpeg_decodes_in_full(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    gradient_image(400, 300).save(path, "PNG")
    assert load_reduced(path, 30).size == (400, 300)
    assert load_rgb(path, 30).size == (40, 30)


def test_panorama_uses_reduced_decode(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = corpus
    assert load_reduced(folder / "panorama.jpg", 64).size == (5000, 75)  # 20000 x 300 at 1/4
    assert load_rgb_square(folder / "panorama.jpg", 64).size == (64, 64)


# --- decompression bombs ----------------------------------------------------------------------


def test_bomb_refused_from_header_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "claims_5000x5000.png"
    write_png_claiming_size(path, 5000, 5000)

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError) as caught:
        load_rgb(path, 64, max_pixels=1_000_000)
    assert caught.value.code == "too_large"
    assert "25,000,000" in caught.value.message
    with pytest.raises(ImageError, match="too_large"):
        probe_image(path, max_pixels=1_000_000)


def test_bomb_over_pillows_limit_and_no_global_change(
    corpus: tuple[Path, dict[str, str | None]],
) -> None:
    folder, _ = corpus
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for name in ("bomb.png", "bomb.gif"):
        with pytest.raises(ImageError) as caught:
            load_rgb(folder / name, 64, max_pixels=10**12)
        assert caught.value.code == "too_large"
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_max_pixels_counts_stored_pixels(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    gradient_image(100, 100).save(path)
    assert load_rgb(path, 10, max_pixels=10_000).size == (10, 10)
    with pytest.raises(ImageError, match="too_large"):
        load_rgb(path, 10, max_pixels=9_999)


# --- colour modes -----------------------------------------------------------------------------


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    grey = Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16))
    assert grey.mode == "I;16"
    assert np.asarray(to_rgb(grey))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_16_bit_png_file_keeps_its_range(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = corpus
    grey = np.asarray(load_rgb(folder / "grey16.png", None))[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    assert 120 < grey.mean() < 135  # a linear ramp over the whole range, not clipped to white


@pytest.mark.parametrize(
    ("values", "mode", "want"),
    [
        ([0.0, 0.5, 1.0], "F", [0, 128, 255]),  # 0..1 floats
        ([0.0, 100.0, 255.0], "F", [0, 100, 255]),  # already 0..255
        ([-1.0, 0.0, 1.0], "F", [0, 128, 255]),  # other ranges: min-max
        ([0, 100, 255], "I", [0, 100, 255]),
        ([0, 1000, 65535], "I", [0, 4, 255]),
    ],
)
def test_high_depth_modes(values: list[float], mode: str, want: list[int]) -> None:
    dtype = np.float32 if mode == "F" else np.int32
    image = Image.fromarray(np.array([values], dtype=dtype))
    assert image.mode == mode
    assert np.asarray(to_rgb(image))[0, :, 1].tolist() == want


def test_alpha_is_composited_on_white(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = corpus
    for name, opaque in (("rgba.png", (0, 0, 255)), ("palette_transparent.png", (255, 0, 0))):
        image = load_rgb(folder / name, None)
        assert image.getpixel((10, 32)) == (255, 255, 255), name
        assert image.getpixel((80, 32)) == opaque, name
    half = Image.new("RGBA", (2, 1), (0, 0, 0, 128))
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)


def test_cmyk_and_grey_convert(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = corpus
    cyan = Image.new("CMYK", (4, 4), (255, 0, 0, 0))
    assert to_rgb(cyan).getpixel((0, 0)) == (0, 255, 255)
    reference = np.asarray(load_rgb(folder / "normal.jpg", None), dtype=np.int16)
    cmyk = np.asarray(load_rgb(folder / "cmyk.jpg", None), dtype=np.int16)
    assert np.abs(cmyk - reference).mean() < 6
    grey = np.asarray(load_rgb(folder / "grey.jpg", None))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_animated_gif_gives_first_frame(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = corpus
    assert load_rgb(folder / "animated.gif", None).getpixel((5, 5)) == (255, 0, 0)


def test_tiny_image_upscales(corpus: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = corpus
    image = load_rgb(folder / "tiny_1x1.png", 32)
    assert image.size == (32, 32)
    assert set(image.getdata()) == {(200, 100, 50)}


# --- square output ----------------------------------------------------------------------------


def test_square_squash_keeps_edges_crop_keeps_centre() -> None:
    stripes = Image.new("RGB", (300, 100), (0, 255, 0))
    stripes.paste((255, 0, 0), (0, 0, 100, 100))
    stripes.paste((0, 0, 255), (200, 0, 300, 100))
    squashed = resize_square(stripes, 30, "squash")
    cropped = resize_square(stripes, 30, "crop")
    assert squashed.size == cropped.size == (30, 30)
    assert squashed.getpixel((2, 15)) == (255, 0, 0) and squashed.getpixel((27, 15)) == (0, 0, 255)
    assert {cropped.getpixel((x, 15)) for x in (2, 15, 27)} == {(0, 255, 0)}
    with pytest.raises(ValueError, match="allowed"):
        resize_square(stripes, 30, "stretch")  # type: ignore[arg-type]


def test_load_square_is_oriented(tmp_path: Path) -> None:
    path = tmp_path / "o6.jpg"
    write_oriented_jpeg(path, pattern_image(640, 320), 6)
    square = load_rgb_square(path, 40)
    assert square.size == (40, 40)
    assert_colours_close(quadrant_colours(square), QUADRANT_COLOURS)


# --- hashing ----------------------------------------------------------------------------------


def test_hash_file_streams_large_files(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(2 * 1024 * 1024 + 123)  # crosses chunk boundaries
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert hash_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert hash_file(empty) == hashlib.sha256(b"").hexdigest()
    with pytest.raises(ImageError, match="missing"):
        hash_file(tmp_path / "nope.jpg")


# --- real photos ------------------------------------------------------------------------------


def test_real_rotated_photos_match_full_decode(shared_data: Path) -> None:
    folder = shared_data / "album_photos" / "images"
    for name in ("Leica_T_Typ_701_.jpg", "Canon_EOS_1000D.jpg"):  # EXIF orientation 8 and 6
        path = folder / name
        fast = load_rgb(path, 128)
        with Image.open(path) as im:
            full = ImageOps.exif_transpose(im.convert("RGB"))
        assert full.height > full.width  # both are portrait once turned
        reference = full.resize(fast.size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        error = np.asarray(fast, np.float32) - np.asarray(reference, np.float32)
        psnr = 10 * np.log10(255**2 / np.mean(error**2))
        assert fast.size == (128, round(full.height * 128 / full.width))
        assert psnr > 28, (name, psnr)
