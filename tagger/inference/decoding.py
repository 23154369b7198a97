"""Decoding one input for prediction: the work of a decode worker (thread or process).

Kept free of torch, so a worker process started with spawn (where there is no fork) imports
only Pillow and numpy and starts in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagger.data.images import FitMode, ImageError, load_reduced_info, resize_square, shrink_shorter
from tagger.inference.options import InputItem
from tagger.inference.records import RecordError


@dataclass(frozen=True)
class Decoded:
    """A decoded input: uint8 `pixels [S, S, 3]` and displayed size, or the error; with a
    detector, `detector_pixels [H, W, 3]`: the photo for it (aspect kept, shorter side at most
    the detector's decode side)."""

    item: InputItem
    pixels: np.ndarray | None
    width: int | None = None
    height: int | None = None
    error: RecordError | None = None
    detector_pixels: np.ndarray | None = None


def decode_input(
    item: InputItem,
    *,
    size: int,
    fit: FitMode,
    max_pixels: int,
    detector_side: int | None = None,
) -> Decoded:
    """Decode one image to the bundle's eval view; never raises (failures become `.error`).

    One open of the file: the header (displayed width/height; cheap refusals: missing, empty,
    too_large ...), then the pixels at reduced scale, EXIF-oriented, with one resampling step
    to `size x size`. A record of damaged pixels still has the displayed size when the header
    was readable. With `detector_side` the reduced decode is large enough for the detector
    too, which gets its own copy (shorter side brought down to `detector_side`): one decode
    serves both, off the model's process. (The classifier's view is then resampled from that
    larger decode: the same view within resampling differences.)
    """
    try:
        image, info = load_reduced_info(
            item.path, max(size, detector_side or 0), max_pixels=max_pixels
        )
        pixels = np.asarray(resize_square(image, size, fit), dtype=np.uint8)
        detector_pixels = None
        if detector_side is not None:
            detector_pixels = np.asarray(shrink_shorter(image, detector_side), dtype=np.uint8)
    except ImageError as err:
        width, height = (err.info.width, err.info.height) if err.info else (None, None)
        return Decoded(item, None, width, height, RecordError(err.code, err.message))
    except Exception as err:  # a codec bug or MemoryError must cost one image, not the job
        message = f"{type(err).__name__}: {err}"
        return Decoded(item, None, error=RecordError("decode_failed", message))
    if pixels.shape != (size, size, 3):  # internal invariant of resize_square
        raise AssertionError(f"{item.path}: decoded to {pixels.shape}, not {(size, size, 3)}")
    return Decoded(item, pixels, info.width, info.height, detector_pixels=detector_pixels)


def crashed_decode(item: InputItem) -> Decoded:
    """The record of an image whose decoder process died (signal, OOM kill)."""
    message = "the decoder process died on this image (crash or out of memory)"
    return Decoded(item, None, error=RecordError("decode_failed", message))


def timed_out_decode(item: InputItem, timeout: float | None = None) -> Decoded:
    """The record of an image whose decoder hung past the decode timeout (its worker killed)."""
    limit = f" {timeout:g} s" if timeout is not None else ""
    message = f"decoding took longer than the decode timeout{limit}; its worker was stopped"
    return Decoded(item, None, error=RecordError("decode_failed", message))


__all__ = ["Decoded", "crashed_decode", "decode_input", "timed_out_decode"]
