"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def private_onnx_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """ONNX exports go to a per-test folder, never to the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    monkeypatch.setenv("TAGGER_ONNX_CACHE", str(folder))
    return folder


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test with one torch thread (tiny models; keeps parallel test runs fair)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
