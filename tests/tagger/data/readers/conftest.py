"""Fixtures for the reader tests: tiny real image files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


def _write_jpeg(path: Path, size: tuple[int, int] = (8, 6), color: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (color, color // 2, 255 - color)).save(path, "JPEG")
    return path


@pytest.fixture
def write_jpeg() -> Callable[..., Path]:
    """write_jpeg(path, size=(w, h), color=int) -> path: a tiny RGB JPEG."""
    return _write_jpeg
