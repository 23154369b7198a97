"""Tests for tagger/data/cache.py: layout, idempotency, parallel builds, bad and crashing images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

from tagger.data.cache import CacheConfig, WorkerCrash, build_cache, cache_path, map_in_processes
from tagger.data.images import load_rgb
from tests.tagger.image_corpus import gradient_image, write_corpus, write_oriented_jpeg


def fake_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def crash_on_marked(path: str, size: int) -> Image.Image:
    """A loader whose process dies (like a decoder segfault) on files named *crash*."""
    if "crash" in Path(path).name:
        os._exit(3)
    return load_rgb(path, size)


def fail_on_three(x: int) -> int:
    if x == 3:
        raise KeyError("three")
    return x


def die_on_three(x: int) -> int:
    if x == 3:
        os._exit(3)
    return x * 10


@pytest.fixture
def small_images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "src"
    folder.mkdir()
    paths = []
    for i in range(4):
        path = folder / f"img{i}.jpg"
        gradient_image(120 + 10 * i, 80).save(path, "JPEG")
        paths.append(path)
    write_oriented_jpeg(folder / "rot6.jpg", gradient_image(90, 60), 6)  # displayed 90 x 60
    return [*paths, folder / "rot6.jpg"]


def test_cache_path_layout(tmp_path: Path) -> None:
    h = "ab" + "0" * 62
    assert cache_path(tmp_path, 256, h) == tmp_path / "s256" / "ab" / f"{h}.jpg"


def test_build_is_idempotent_and_resizes(tmp_path: Path, small_images: list[Path]) -> None:
    hashes = [fake_hash(p.name) for p in small_images]
    first = build_cache(small_images, hashes, tmp_path / "cache", size=32, workers=0)
    assert (first.built, first.skipped, first.problems) == (5, 0, [])
    files = [cache_path(tmp_path / "cache", 32, h) for h in hashes]
    sizes = [Image.open(f).size for f in files]
    assert sizes == [(48, 32), (52, 32), (56, 32), (60, 32), (48, 32)]
    assert all(Image.open(f).mode == "RGB" for f in files)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = build_cache(small_images, hashes, tmp_path / "cache", size=32, workers=0)
    assert (again.built, again.skipped, again.problems) == (0, 5, [])
    assert [f.stat().st_mtime_ns for f in files] == stamps
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".jpg"]
    assert leftovers == []


def test_duplicate_hash_built_once(tmp_path: Path, small_images: list[Path]) -> None:
    h = fake_hash("same")
    result = build_cache(small_images[:2], [h, h], tmp_path, size=16, workers=0)
    assert (result.built, result.skipped) == (1, 1)


def test_bad_input_tables_are_refused(tmp_path: Path, small_images: list[Path]) -> None:
    with pytest.raises(ValueError, match="2 paths but 1 hashes"):
        build_cache(small_images[:2], [fake_hash("a")], tmp_path)
    with pytest.raises(ValueError, match=r"hashes\[1\] = '\.\./\.\./etc'"):
        build_cache(small_images[:2], [fake_hash("a"), "../../etc"], tmp_path)


def test_parallel_build_with_bad_images(tmp_path: Path) -> None:
    expected = write_corpus(tmp_path / "corpus")
    names = sorted(expected)
    paths = [tmp_path / "corpus" / n for n in names]
    result = build_cache(paths, [fake_hash(n) for n in names], tmp_path / "cache", 24, workers=2)
    bad = [n for n in names if expected[n] is not None]
    assert result.built == len(names) - len(bad) and result.skipped == 0
    assert [Path(p.file).name for p in result.problems] == bad  # input order, one per image
    for problem in result.problems:
        assert problem.reason.startswith(f"{expected[Path(problem.file).name]}: ")
    for name in names:
        cached = cache_path(tmp_path / "cache", 24, fake_hash(name))
        assert cached.exists() == (expected[name] is None), name


def test_failed_image_is_built_once_repaired(tmp_path: Path, small_images: list[Path]) -> None:
    broken = small_images[0]
    good_bytes = broken.read_bytes()
    broken.write_bytes(good_bytes[: len(good_bytes) // 2])
    hashes = [fake_hash(p.name) for p in small_images]
    first = build_cache(small_images, hashes, tmp_path / "c", size=16, workers=0)
    assert first.built == 4 and [p.reason.split(":")[0] for p in first.problems] == ["truncated"]
    broken.write_bytes(good_bytes)
    second = build_cache(small_images, hashes, tmp_path / "c", size=16, workers=0)
    assert (second.built, second.skipped, second.problems) == (1, 4, [])


def test_crashing_worker_costs_only_its_image(tmp_path: Path, small_images: list[Path]) -> None:
    crash = small_images[0].with_name("crash.jpg")
    crash.write_bytes(small_images[0].read_bytes())
    paths = [*small_images[:2], crash, *small_images[2:]]
    hashes = [fake_hash(p.name) for p in paths]
    result = build_cache(paths, hashes, tmp_path / "c", 16, workers=2, loader=crash_on_marked)
    assert result.built == len(paths) - 1
    assert [Path(p.file).name for p in result.problems] == ["crash.jpg"]
    assert "worker process died" in result.problems[0].reason


def test_map_in_processes_order_crash_and_errors() -> None:
    results = map_in_processes(die_on_three, list(range(8)), workers=2)
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50, 60, 70]
    assert isinstance(results[3], WorkerCrash)
    with pytest.raises(KeyError, match="three"):
        map_in_processes(fail_on_three, list(range(6)), workers=2)


def test_cache_config_validates() -> None:
    assert CacheConfig().size == 256
    with pytest.raises(ValueError, match="quality"):
        CacheConfig(quality=0)
    with pytest.raises(ValueError, match="extra"):
        CacheConfig(sise=128)  # type: ignore[call-arg]
