"""Benchmark: building the resized image cache with reduced-scale JPEG decoding vs full decoding.

Both methods run in this process, through the same `build_cache` (same worker pool, same JPEG
writer, a fresh temporary cache folder per run); only the decoder differs:

- reduced: `tagger.data.images.load_rgb` (JPEG DCT scaling to >= size, EXIF, one bicubic resize);
- full: `Image.open(p).convert("RGB")`, `ImageOps.exif_transpose`, then the same resize.

Each image is listed `--copies` times under distinct cache keys, so the pool's start-up is
amortised as in a real build of thousands of photos. Runs alternate between the methods.

    .venv/bin/python bench/cache_build.py [DATA_DIR] --size 256 --workers 2 --repeat 3

Last line: `RESULT cache_build images_per_s=<reduced> speedup=<reduced / full>`.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tagger.data.cache import build_cache, cache_path
from tagger.data.images import hash_file, load_rgb, probe_image, resize_shorter

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "album_photos"
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".heic"}


def load_full_then_resize(path: str, size: int) -> Image.Image:
    """Baseline decoder: full-resolution decode, EXIF transpose, then one resize."""
    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im.convert("RGB"))
    return resize_shorter(rgb, size)


LOADERS = {"reduced": load_rgb, "full": load_full_then_resize}


def find_images(data_dir: Path) -> list[Path]:
    folder = data_dir / "images" if (data_dir / "images").is_dir() else data_dir
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


def time_build(
    method: str,
    paths: list[str],
    hashes: list[str],
    size: int,
    workers: int,
    keep: tuple[Path, list[str]] | None = None,
) -> float:
    """Seconds to build a cache of all `paths` from scratch with the method's decoder.

    keep: (folder, hashes) whose cached files to copy to folder/method for comparison.
    """
    with tempfile.TemporaryDirectory(prefix=f"cache_{method}_") as tmp:
        start = time.perf_counter()
        result = build_cache(paths, hashes, tmp, size, workers, loader=LOADERS[method])
        seconds = time.perf_counter() - start
        if result.problems or result.built != len(paths):
            raise RuntimeError(f"{method}: built {result.built}, problems {result.problems}")
        if keep is not None:
            for content_hash in keep[1]:
                src = cache_path(tmp, size, content_hash)
                dest = cache_path(keep[0] / method, size, content_hash)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(src.read_bytes())
    return seconds


def compare_outputs(keep: Path, size: int, hashes: list[str]) -> str:
    """How close the two methods' cached images are: same sizes, mean absolute pixel difference."""
    same, diffs = 0, []
    for content_hash in hashes:
        a = Image.open(cache_path(keep / "reduced", size, content_hash))
        b = Image.open(cache_path(keep / "full", size, content_hash))
        if a.size == b.size:
            same += 1
            diffs.append(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())
    mad = float(np.mean(diffs)) if diffs else float("nan")
    return f"outputs: {same}/{len(hashes)} same size, mean |reduced - full| = {mad:.2f} / 255"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method")
    parser.add_argument("--copies", type=int, default=10, help="times each image is listed")
    args = parser.parse_args()

    images = find_images(args.data_dir.resolve())
    if not images:
        raise SystemExit(f"no images under {args.data_dir}")
    base_hashes = [hash_file(p) for p in images]
    paths = [str(p) for _ in range(args.copies) for p in images]
    hashes = [
        hashlib.sha256(f"{h}:{copy}".encode()).hexdigest()
        for copy in range(args.copies)
        for h in base_hashes
    ]
    megapixels = statistics.mean(
        info.width * info.height / 1e6 for info in map(probe_image, images)
    )
    print(
        f"{len(images)} images ({megapixels:.1f} MP mean) x {args.copies} copies = "
        f"{len(paths)} builds per run; size {args.size}, workers {args.workers}"
    )

    seconds: dict[str, list[float]] = {m: [] for m in LOADERS}
    with tempfile.TemporaryDirectory(prefix="cache_compare_") as keep_dir:
        for run in range(args.repeat):
            for method in LOADERS:
                keep = (Path(keep_dir), hashes[: len(images)]) if run == 0 else None
                seconds[method].append(
                    time_build(method, paths, hashes, args.size, args.workers, keep)
                )
        comparison = compare_outputs(Path(keep_dir), args.size, hashes[: len(images)])

    print(f"\n{'method':<10}{'runs (s)':<28}{'median s':>10}{'images/s':>10}")
    rate = {}
    for method, runs in seconds.items():
        median = statistics.median(runs)
        rate[method] = len(paths) / median
        listed = " ".join(f"{s:.2f}" for s in runs)
        print(f"{method:<10}{listed:<28}{median:>10.2f}{rate[method]:>10.1f}")
    speedup = rate["reduced"] / rate["full"]
    print(f"\nspeedup reduced / full: {speedup:.2f}x   ({comparison})")
    print(f"RESULT cache_build images_per_s={rate['reduced']:.1f} speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
