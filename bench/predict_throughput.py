"""End-to-end batch-tagging throughput against the compute limit and a plain pipeline.

Same process, same model (resnet50 at 224, untrained, bundle saved to and loaded from a temp
dir), same batch size (16), same images (the album photos, repeated `--passes` times):

- limit: the model alone on pre-decoded uint8 batches (normalisation + forward + sigmoid);
- plain: full decode (`Image.open().convert("RGB")`), torchvision Resize + CenterCrop +
  ToTensor + Normalize, a standard DataLoader with 2 workers, `model(x)` under no_grad;
- ours: `tagger.predict.write_predictions` to a JSONL file (records, tags, fsync included),
  with the default options (and with `--variants`, each variant of decode workers / threads);
- the same two with the ONNX Runtime backend (export included in "ours onnx").

Ratios are medians of same-round ratios, so a busy neighbour slows both sides alike.

Usage: python bench/predict_throughput.py [DATA_DIR] [--passes 3] [--rounds 3] [--variants]
Last line: RESULT predict_throughput images_per_s=<n> vs_limit=<x> vs_plain=<x>
"""

from __future__ import annotations

import os

# before torch loads (see tagger.predict.prefer_passive_omp): all runs below share the setting
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from label_system.taxonomy import Taxonomy
from tagger.bundle import Bundle, Preprocessing, create_bundle, load_bundle, save_bundle
from tagger.calibration import calibrate_thresholds
from tagger.model import ModelConfig, create_model
from tagger.onnx_export import create_onnx_backend
from tagger.predict import PredictOptions, write_predictions
from tagger.predictor import (
    Backend,
    TorchBackend,
    available_cpus,
    default_workers,
    preprocessing_of,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "album_photos"
BATCH = 16
SIZE = 224
NUM_TAGS = 100


def make_bundle(folder: Path) -> Bundle:
    """An untrained resnet50@224 bundle with 100 tags, saved and loaded back (no pickle)."""
    taxonomy = Taxonomy.from_dict(
        {
            "name": "bench",
            "version": "1",
            "categories": [{"id": "things", "names": {"en": "Things"}}],
            "tags": [
                {"id": f"tag{i:03d}", "names": {"en": f"Tag {i}"}, "category": "things"}
                for i in range(NUM_TAGS)
            ],
        }
    )
    cfg = ModelConfig(backbone="resnet50", num_tags=NUM_TAGS, image_size=SIZE, pretrained=False)
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    rng = np.random.default_rng(0)  # thresholds calibrated on random held-out scores
    targets = (rng.random((500, NUM_TAGS)) < 0.2).astype(np.float32)
    probs = np.clip(rng.random((500, NUM_TAGS)) * 0.7 + 0.3 * targets, 0, 1).astype(np.float32)
    calibration = calibrate_thresholds(probs, targets, np.ones_like(targets, bool), taxonomy)
    bundle = create_bundle(model, cfg, taxonomy, calibration)
    save_bundle(bundle, folder / "bundle")
    return load_bundle(folder / "bundle")


def time_limit(backend: Backend, n: int) -> float:
    """images/s of the model alone on pre-decoded uint8 batches (`backend` warmed up)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    backend(pixels[:2])  # warm-up
    start = time.perf_counter()
    done = 0
    while done < n:
        k = min(BATCH, n - done)
        backend(pixels[:k])
        done += k
    return n / (time.perf_counter() - start)


class PlainDataset(Dataset[torch.Tensor]):
    """Full decode and torchvision resize: what a straightforward script does."""

    def __init__(self, paths: list[Path], prep: Preprocessing) -> None:
        self.paths = paths
        self.transform = transforms.Compose(
            [
                transforms.Resize(SIZE),
                transforms.CenterCrop(SIZE),
                transforms.ToTensor(),
                transforms.Normalize(prep.mean, prep.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(Image.open(self.paths[index]).convert("RGB"))


def time_plain(bundle: Bundle, paths: list[Path]) -> float:
    """images/s of the plain pipeline (DataLoader with 2 workers, NCHW model, no_grad)."""
    model = bundle.create_model().eval()
    loader = DataLoader(
        PlainDataset(paths, preprocessing_of(bundle)), batch_size=BATCH, num_workers=2
    )
    with torch.no_grad():
        model(torch.zeros(2, 3, SIZE, SIZE))  # warm-up
        start = time.perf_counter()
        for batch in loader:
            model(batch)
    return len(paths) / (time.perf_counter() - start)


def time_ours(bundle: Bundle, paths: list[Path], folder: Path, **options: object) -> float:
    """images/s of `write_predictions` end to end (decode, infer, select tags, write JSONL).

    Also prints the steady-state rate: after the first batch, i.e. without the model set-up
    and the first batch's decode, which a job of thousands of images amortises.
    """
    out = folder / "out.jsonl"
    stamps: list[float] = []
    summary = write_predictions(
        [str(p) for p in paths], bundle, out, mode="overwrite", batch_size=BATCH,
        progress=lambda n: stamps.append(time.perf_counter()), **options,
    )  # fmt: skip
    if summary.images != len(paths) or summary.tagged != len(paths):
        raise RuntimeError(f"expected {len(paths)} tagged images, got {summary.to_text()}")
    if len(stamps) > BATCH:
        steady = (len(stamps) - BATCH) / (stamps[-1] - stamps[BATCH - 1])
        print(f"    (steady state after the first batch: {steady:.2f} images/s)")
    return summary.images_per_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--passes", type=int, default=3, help="times each photo is tagged")
    parser.add_argument("--rounds", type=int, default=3, help="runs per variant (best kept)")
    parser.add_argument("--variants", action="store_true", help="also time worker variants")
    args = parser.parse_args(argv)
    images = args.data_dir / "images" if (args.data_dir / "images").is_dir() else args.data_dir
    photos = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not photos:
        sys.exit(f"no JPEG photos in {images}")
    paths = photos * args.passes
    cpus = available_cpus()
    torch.set_num_threads(cpus)  # every variant and baseline on the same core budget
    defaults = PredictOptions()
    print(
        f"{len(photos)} photos x {args.passes} passes = {len(paths)} images; batch {BATCH}; "
        f"{cpus} CPUs; torch threads {torch.get_num_threads()}; default decode workers "
        f"{default_workers()} ({defaults.worker_kind})"
    )
    variants: list[dict[str, object]] = []
    if args.variants:
        variants = [
            {"workers": w, "worker_kind": k, "threads": t}
            for k in ("process", "thread")
            for w in (1, 2)
            for t in sorted({cpus, max(1, cpus - 1)}, reverse=True)
        ]
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        folder = Path(tmp)
        bundle = make_bundle(folder)
        torch_backend = TorchBackend(bundle.create_model(), preprocessing_of(bundle))
        onnx_backend = create_onnx_backend(bundle)
        time_ours(bundle, photos[:4], folder)  # warm caches and the code path once
        for r in range(args.rounds):  # interleaved, so a noisy neighbour hits all alike
            runs: dict[str, Callable[[], float]] = {
                "limit": functools.partial(time_limit, torch_backend, len(paths)),
                "ours": functools.partial(time_ours, bundle, paths, folder),
                "plain": functools.partial(time_plain, bundle, paths),
                "limit onnx": functools.partial(time_limit, onnx_backend, len(paths)),
                "ours onnx": functools.partial(time_ours, bundle, paths, folder, backend="onnx"),
            }
            for variant in variants:
                name = "variant " + " ".join(f"{k}={v}" for k, v in variant.items())
                runs[name] = functools.partial(time_ours, bundle, paths, folder, **variant)
            for name, run in runs.items():
                ips = run()
                rates.setdefault(name, []).append(ips)
                print(f"  round {r + 1} {name:50s} {ips:6.2f} images/s", flush=True)

    def ratio(a: str, b: str) -> float:
        """Median over rounds of a/b measured in the same round (robust to a noisy machine)."""
        return float(np.median(np.array(rates[a]) / np.array(rates[b])))

    best = {name: max(values) for name, values in rates.items()}
    print(f"best of {args.rounds} rounds (ratios: median of same-round ratios):")
    print(f"limit (model alone, pre-decoded, torch): {best['limit']:6.2f} images/s")
    print(f"plain (full decode, DataLoader 2):       {best['plain']:6.2f} images/s")
    print(f"ours  (defaults, torch):                 {best['ours']:6.2f} images/s")
    print(f"limit (model alone, ONNX Runtime):       {best['limit onnx']:6.2f} images/s")
    print(
        f"ours  (backend=onnx):                    {best['ours onnx']:6.2f} images/s "
        f"({ratio('ours onnx', 'limit onnx'):.2f} of the ONNX limit, "
        f"{ratio('ours onnx', 'limit'):.2f} of the torch limit, "
        f"{ratio('ours onnx', 'plain'):.2f}x plain)"
    )
    for name in rates:
        if name.startswith("variant"):
            print(f"  {name:50s} {best[name]:6.2f} images/s ({ratio(name, 'limit'):.2f} of limit)")
    print(
        f"RESULT predict_throughput images_per_s={best['ours']:.2f} "
        f"vs_limit={ratio('ours', 'limit'):.2f} vs_plain={ratio('ours', 'plain'):.2f}"
    )


if __name__ == "__main__":
    main()
