"""Generated image inputs of every awkward kind, for tests of decoding, caching and prediction.

`write_corpus(folder)` writes the files and returns {file name: expected `ImageError` code, or
None when the image must load}. Everything is drawn here; nothing is downloaded.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

QUADRANT_COLOURS = {  # displayed position -> colour of the asymmetric test pattern
    "top_left": (255, 0, 0),
    "top_right": (0, 255, 0),
    "bottom_left": (0, 0, 255),
    "bottom_right": (255, 255, 0),
}
# Stored pixels for EXIF orientation o are `displayed.transpose(_STORE[o])`: the inverse of
# what a viewer applies (e.g. 6 = "rotate 90 degrees clockwise to view").
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def pattern_image(width: int, height: int) -> Image.Image:
    """RGB image of four coloured quadrants (`QUADRANT_COLOURS`): no symmetry survives a turn."""
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    image.paste(QUADRANT_COLOURS["top_left"], (0, 0, half_w, half_h))
    image.paste(QUADRANT_COLOURS["top_right"], (half_w, 0, width, half_h))
    image.paste(QUADRANT_COLOURS["bottom_left"], (0, half_h, half_w, height))
    image.paste(QUADRANT_COLOURS["bottom_right"], (half_w, half_h, width, height))
    return image


def gradient_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth deterministic colour gradient, converted to `mode`."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack(
        [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), (x + y) / 2],
        axis=-1,
    )
    return Image.fromarray(rgb.astype(np.uint8)).convert(mode)


def write_oriented_jpeg(path: Path, displayed: Image.Image, orientation: int) -> None:
    """Write a JPEG whose EXIF orientation makes a viewer show `displayed`."""
    stored = displayed if orientation == 1 else displayed.transpose(_STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())


def write_png_claiming_size(path: Path, width: int, height: int) -> None:
    """A tiny valid PNG whose IHDR claims `width` x `height` (CRC fixed): a decompression bomb."""
    buffer = Path(path)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "PNG")
    data = bytearray(buffer.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    buffer.write_bytes(bytes(data))


def write_gif_claiming_size(path: Path, width: int, height: int) -> None:
    """A tiny GIF whose logical screen claims `width` x `height` (at most 65535 each)."""
    Image.new("P", (8, 8), 1).save(path, "GIF")
    data = bytearray(Path(path).read_bytes())
    data[6:10] = struct.pack("<HH", width, height)
    Path(path).write_bytes(bytes(data))


def reads_are_blocked(path: Path) -> bool:
    """True when this process really cannot read `path` (False as root, whom chmod 000 spares)."""
    try:
        with open(path, "rb") as fp:
            fp.read(1)
    except PermissionError:
        return True
    return False


def write_corpus(folder: Path) -> dict[str, str | None]:
    """Write every awkward input kind into `folder`; return {name: expected error code or None}.

    "missing.jpg" is listed but not written. "unreadable.jpg" is chmod 000: expected
    "unreadable", or None when the process can read it anyway (root). "image.heic" is written
    only when pillow-heif is installed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str | None] = {}

    def add(name: str, code: str | None) -> Path:
        expected[name] = code
        return folder / name

    base = gradient_image(96, 64)
    base.save(add("normal.jpg", None), "JPEG", quality=90)
    for orientation in (3, 6, 8):
        write_oriented_jpeg(
            add(f"exif_rot{orientation}.jpg", None), pattern_image(96, 64), orientation
        )
    base.save(add("progressive.jpg", None), "JPEG", quality=90, progressive=True)
    base.convert("L").save(add("grey.jpg", None), "JPEG")
    base.convert("CMYK").save(add("cmyk.jpg", None), "JPEG")
    _write_truncated(base, "JPEG", add("truncated.jpg", "truncated"))
    _write_truncated(base, "PNG", add("truncated.png", "truncated"))
    add("empty.jpg", "empty").write_bytes(b"")
    add("text.jpg", "not_an_image").write_text("this is not an image\n" * 20)
    add("missing.jpg", "missing")
    write_png_claiming_size(add("bomb.png", "too_large"), 40_000, 40_000)
    write_gif_claiming_size(add("bomb.gif", "too_large"), 65_535, 65_535)
    grey16 = np.linspace(0, 65535, 96 * 64).reshape(64, 96).astype(np.uint16)
    Image.fromarray(grey16).save(add("grey16.png", None), "PNG")
    Image.fromarray(np.linspace(0, 1, 96 * 64, dtype=np.float32).reshape(64, 96)).save(
        add("float.tif", None), "TIFF"
    )
    _palette_with_transparency().save(add("palette_transparent.png", None), "PNG")
    _rgba().save(add("rgba.png", None), "PNG")
    base.convert("LA").save(add("grey_alpha.png", None), "PNG")
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    frames[0].save(add("animated.gif", None), save_all=True, append_images=frames[1:])
    base.save(add("image.webp", None), "WEBP", quality=90)
    base.save(add("image.tif", None), "TIFF")
    base.save(add("image.bmp", None), "BMP")
    base.save(add("image.ppm", "unsupported"), "PPM")
    Image.new("RGB", (1, 1), (200, 100, 50)).save(add("tiny_1x1.png", None), "PNG")
    gradient_image(20_000, 300).save(add("panorama.jpg", None), "JPEG", quality=80)
    if _heif_writer_available():
        _write_heic(base, add("image.heic", None))
    unreadable = folder / "unreadable.jpg"
    base.save(unreadable, "JPEG")
    unreadable.chmod(0)
    expected["unreadable.jpg"] = "unreadable" if reads_are_blocked(unreadable) else None
    return expected


def _write_truncated(image: Image.Image, fmt: str, path: Path) -> None:
    image.save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _palette_with_transparency() -> Image.Image:
    """Palette image: left half index 0 (transparent), right half index 1 (opaque red)."""
    image = Image.new("P", (96, 64), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.paste(0, (0, 0, 48, 64))
    image.info["transparency"] = 0
    return image


def _rgba() -> Image.Image:
    """RGBA: left half fully transparent black, right half opaque blue."""
    image = Image.new("RGBA", (96, 64), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (48, 0, 96, 64))
    return image


def _heif_writer_available() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def _write_heic(image: Image.Image, path: Path) -> None:
    import pillow_heif

    pillow_heif.from_pillow(image).save(path, quality=90)
