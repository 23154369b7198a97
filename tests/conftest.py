"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("TAGGER_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder `../shared/data`; skips the test when it is absent."""
    path = SHARED_DATA.resolve()
    if not (path / "README.md").exists():
        pytest.skip(f"real data not available at {path}")
    return path
