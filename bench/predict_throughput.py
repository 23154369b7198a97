"""End-to-end batch-tagging throughput against the compute limit and a plain pipeline.

Same process, same model (resnet50 at 224, untrained, bundle saved to and loaded from a temp
dir), same batch size (16), same images (the album photos, repeated `--passes` times, so a run
is a job of a few hundred photos and start-up is paid once, as in a real job):

- limit: the model alone on pre-decoded uint8 batches (normalisation + forward + sigmoid),
  with the same backend object the pipeline uses; measured right before and right after each
  "ours" run, and the ratio taken against their mean (the machine's speed drifts);
- plain: full decode (`Image.open().convert("RGB")`), torchvision Resize + CenterCrop +
  ToTensor + Normalize, a standard DataLoader (2 workers on CPU, all cores but one with
  --device cuda), `model(x)` under no_grad;
- ours: `tagger.inference.api.write_predictions` to a JSONL file (records, tags, fsync included),
  with the default options; start-up (bundle to first record) and CPU use are reported;
- the same with the ONNX Runtime backend (CPU only; its export is cached, as in real jobs);
- each reduced precision (`--precisions`, default bf16 and int8: torch autocast and ONNX Runtime
  static quantization, calibrated on `--calibration-images` of the photos' eval views), after
  the bundle's check against fp32 (`tagger.inference.precision.verify_precisions`, on the
  photos' eval views with random labels: agreement and margin are what count for an untrained
  model). "ours" stays fp32 (the keys of earlier runs); "best" is the fastest precision whose
  check passed.

Beside each figure: the *pipeline ideal* of that backend = cores / (model core-ms + decode
core-ms per image), both measured alone in this run as CPU time (the model on pre-decoded
batches, the reduced decode of every photo inline), so `vs_ideal` says how much of the machine
the pipeline leaves unused, whatever the neighbours do to wall-clock time.

Ratios are medians of same-round ratios, so a busy neighbour slows both sides alike.

- fusion variants (--fusion): the same bundle plus a small-object detector (SSDlite320, 20
  tags) and per-tag fusion, with the detector off / gated / always; `fusion_gated_vs_off` is
  the median same-round ratio of gated to off images/s. The album photos are unlabelled, so
  `fusion_gain_kept` (share of the "always" AP gain the gate keeps) is the fusion model's own
  held-out figure, fitted on synthetic held-out evidence (informative detector, noisy
  classifier), and the gate bands it learned there decide which album photos run the detector.

Usage: python bench/predict_throughput.py [DATA_DIR] [--passes 10] [--rounds 5] [--images N]
       [--precisions bf16 int8] [--variants] [--fusion] [--device cuda] [--no-heap-reuse]
Last line: RESULT predict_throughput images_per_s=<n> vs_limit=<x> vs_plain=<x> device=...
       [onnx_...] best_precision=<p> best_vs_plain=<x> vs_ideal=<best / its ideal>
       [fusion_gated_vs_off=<x> fusion_gain_kept=<x>]
"""

from __future__ import annotations

import os

# before torch loads, as the `tagger` console script does: all runs below (the plain baseline
# too) share the settings (tagger.inference.runtime.prefer_passive_omp; prefer_heap_reuse below)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import functools
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from label_system.taxonomy import Taxonomy
from tagger.bundle.model_bundle import Bundle, Preprocessing, create_bundle, save_bundle
from tagger.bundle.resolve import load_bundle
from tagger.calibrate.thresholds import calibrate_thresholds
from tagger.inference.api import write_predictions
from tagger.inference.engine import (
    Backend,
    TorchBackend,
    available_cpus,
    create_decode_fn,
    default_workers,
    preprocessing_of,
)
from tagger.inference.onnx_export import OnnxBackend, create_onnx_backend
from tagger.inference.options import InputItem, PredictOptions
from tagger.inference.precision import unsupported_reason, verified_precisions
from tagger.inference.quantize import cached_int8_export
from tagger.inference.runtime import prefer_heap_reuse
from tagger.inference.verification import verify_precisions
from tagger.train.model import ModelConfig, create_model

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


FUSION_TAGS = 20


def fusion_bundle(bundle: Bundle, folder: Path) -> tuple[Bundle, float]:
    """`bundle` plus an untrained SSDlite320 over its first FUSION_TAGS tags and a fusion
    fitted (gate "gated") on synthetic held-out evidence; and the share of the fused tags'
    held-out AP gain the gate keeps (mean over fused tags)."""
    from dataclasses import replace

    from tagger.detect.detections import DetectorConfig
    from tagger.detect.fusion import fit_fusion
    from tagger.detect.runtime import bundle_detector_settings
    from tagger.detect.ssd import SSDDetector, create_ssd

    tags = bundle.tag_ids[:FUSION_TAGS]
    config = DetectorConfig(enabled=True, tags=tags)
    torch.manual_seed(0)
    detector = SSDDetector(create_ssd(config.architecture, len(tags) + 1, config.image_size),
                           tags, bundle.tag_ids, config)  # fmt: skip
    rng = np.random.default_rng(0)
    n = 2000
    y = (rng.random((n, len(tags))) < 0.2).astype(np.float32)
    # classifier probabilities spread like the untrained model's on the photos (~0.3-0.7)
    p = np.clip(0.5 + 0.08 * y + rng.normal(0, 0.06, y.shape), 0.01, 0.99)
    conf = np.clip(0.6 * y + rng.normal(0.15, 0.15, y.shape), 0, 1)
    features = np.stack([np.log(p / (1 - p)), conf, np.log1p(conf > 0.25),
                         np.where(conf > 0.25, 0.02, 0.0)], axis=2).astype(np.float32)  # fmt: skip
    fusion = fit_fusion(features, y, np.ones_like(y, bool), tags, gate="gated", keep_gain=0.9)
    fused = [t for t in fusion.tags if t.mode == "fused"]
    kept = float(np.mean([(t.ap_gated - t.ap_classifier) / (t.ap_fused - t.ap_classifier)
                          for t in fused])) if fused else float("nan")  # fmt: skip
    settings = bundle_detector_settings(detector.architecture(), config, fusion)
    with_detector = replace(bundle, detector=settings, detector_weights=detector.state_dict())
    save_bundle(with_detector, folder / "bundle_fusion")
    return load_bundle(folder / "bundle_fusion"), kept


def time_limit(backend: Backend, n: int, cpu_ms: list[float] | None = None) -> float:
    """images/s of the model alone on pre-decoded uint8 batches (`backend` warmed up); the
    model's CPU time per image (core-ms) is appended to `cpu_ms`."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    backend(pixels[:2])  # warm-up
    backend(pixels)
    cpu = cpu_seconds()
    start = time.perf_counter()
    done = 0
    while done < n:
        k = min(BATCH, n - done)
        backend(pixels[:k])  # returns host numpy: a GPU run is synchronised per batch
        done += k
    rate = n / (time.perf_counter() - start)
    if cpu_ms is not None:
        cpu_ms.append(1000 * (cpu_seconds() - cpu) / n)
    return rate


def decode_core_ms(bundle: Bundle, photos: list[Path]) -> float:
    """CPU ms per image of the job's reduced decode alone (inline, this process)."""
    decode = create_decode_fn(bundle, PredictOptions())
    items = [InputItem(str(p), str(p)) for p in photos]
    decode(items[0])  # warm-up
    cpu = cpu_seconds()
    for item in items:
        if decode(item).pixels is None:
            raise RuntimeError(f"{item.path}: decode failed")
    return 1000 * (cpu_seconds() - cpu) / len(items)


def eval_views(bundle: Bundle, photos: list[Path]) -> np.ndarray:
    """The photos as the job's backend sees them: uint8 `[N, S, S, 3]`."""
    decode = create_decode_fn(bundle, PredictOptions())
    return np.stack([decode(InputItem(str(p), str(p))).pixels for p in photos])  # type: ignore[misc]


def check_precisions(
    bundle: Bundle, photos: list[Path], precisions: list[str], calibration: int
) -> Bundle:
    """The bundle with int8 calibration images and its check of `precisions` against fp32."""
    pixels = eval_views(bundle, photos)
    bundle = dataclasses.replace(bundle, calibration_images=pixels[:calibration])
    rng = np.random.default_rng(0)  # an untrained model: labels only feed the AP figures
    targets = (rng.random((len(pixels), NUM_TAGS)) < 0.2).astype(np.float32)
    report = verify_precisions(
        bundle, pixels, targets, np.ones_like(targets, bool),
        precisions=tuple(precisions),  # type: ignore[arg-type]
        threads=available_cpus(),
    )  # fmt: skip
    for name, check in report.checks.items():
        print(
            f"check {name}: {'passed' if check.passed else 'FAILED ' + '; '.join(check.reasons)}"
            f" (agreement {check.agreement:.4f} of {check.decisions} decisions, largest score "
            f"difference {check.max_score_diff:.2e})",
            flush=True,
        )
    return dataclasses.replace(bundle, precision=report.model_dump(mode="json"))


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


def time_plain(bundle: Bundle, paths: list[Path], device: str, workers: int) -> float:
    """images/s of the plain pipeline (DataLoader, NCHW model, no_grad)."""
    model = bundle.create_model().eval().to(device)
    loader = DataLoader(
        PlainDataset(paths, preprocessing_of(bundle)),
        batch_size=BATCH,
        num_workers=workers,
        pin_memory=device != "cpu",
    )
    with torch.no_grad():
        model(torch.zeros(2, 3, SIZE, SIZE, device=device))  # warm-up
        start = time.perf_counter()
        for batch in loader:
            model(batch.to(device)).cpu()
    return len(paths) / (time.perf_counter() - start)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Run:
    images_per_s: float
    startup_s: float = float("nan")  # call to first record (bundle in memory)
    cpu_per_image_ms: float = float("nan")


def time_ours(bundle: Bundle, paths: list[Path], folder: Path, **options: object) -> Run:
    """`write_predictions` end to end (decode, infer, select tags, write JSONL)."""
    out = folder / "out.jsonl"
    stamps: list[float] = []
    cpu = cpu_seconds()
    start = time.perf_counter()
    summary = write_predictions(
        [str(p) for p in paths], bundle, out, mode="overwrite", batch_size=BATCH,
        progress=lambda n: stamps.append(time.perf_counter()), **options,
    )  # fmt: skip
    cpu = cpu_seconds() - cpu
    if summary.images != len(paths) or summary.tagged != len(paths):
        raise RuntimeError(f"expected {len(paths)} tagged images, got {summary.to_text()}")
    return Run(summary.images_per_s, stamps[0] - start, 1000 * cpu / len(paths))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--passes", type=int, default=10, help="times each photo is tagged")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--images", type=int, default=None, help="use the first N photos only")
    parser.add_argument(
        "--precisions", nargs="*", default=["bf16", "int8"], choices=["bf16", "int8"],
        help="reduced precisions to check and time beside fp32 (none: fp32 only)",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-images", type=int, default=8, help="photos that calibrate int8"
    )
    parser.add_argument("--variants", action="store_true", help="also time worker variants")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--fusion", action="store_true", help="also time detector fusion off / gated / always"
    )
    parser.add_argument(
        "--no-heap-reuse", action="store_true", help="leave glibc's malloc at its defaults"
    )
    args = parser.parse_args(argv)
    # glibc keeps freed activations for reuse, as the `tagger` console script makes it do
    heap_reuse = not args.no_heap_reuse and prefer_heap_reuse()
    images = args.data_dir / "images" if (args.data_dir / "images").is_dir() else args.data_dir
    photos = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    photos = photos[: args.images] if args.images else photos
    if not photos:
        sys.exit(f"no JPEG photos in {images}")
    paths = photos * args.passes
    cpus = available_cpus()
    gpu = args.device != "cpu"
    torch.set_num_threads(cpus)  # every variant and baseline on the same core budget
    defaults = PredictOptions(device=args.device)
    workers = default_workers(device=args.device)
    kind = defaults.worker_kind
    plain_workers = max(2, cpus - 1) if gpu else 2
    precisions = []
    for p in args.precisions:  # a job would run fp32 for these: timing them measures nothing
        reason = unsupported_reason(p, args.device)
        if reason is None:
            precisions.append(p)
        else:
            print(f"skipping {p}: {reason}")
    print(
        f"{len(photos)} photos x {args.passes} passes = {len(paths)} images; batch {BATCH}; "
        f"{cpus} CPUs; torch threads {torch.get_num_threads()}; device {args.device}"
        f"{' (' + torch.cuda.get_device_name() + ')' if gpu else ''}; "
        f"default decode workers {workers} ({kind}); plain DataLoader workers {plain_workers}; "
        f"heap reuse {heap_reuse}; precisions fp32 {' '.join(precisions)}"
    )
    variants: list[dict[str, object]] = []
    if args.variants:
        variants = [
            {"workers": w, "worker_kind": k, "threads": t}
            for k in ("thread", "process")
            for w in ((1, 2) if not gpu else (cpus // 2, cpus - 1))
            for t in ((cpus,) if gpu else sorted({cpus, max(1, cpus - 1)}, reverse=True))
        ]
    rates: dict[str, list[float]] = {}
    model_ms: dict[str, list[float]] = {}
    runs_of_ours: dict[str, list[Run]] = {}

    def record(name: str, value: float) -> None:
        rates.setdefault(name, []).append(value)
        print(f"  {name:50s} {value:8.2f} images/s", flush=True)

    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("TAGGER_ONNX_CACHE", str(folder / "onnx"))
        bundle = make_bundle(folder)
        if precisions:
            bundle = check_precisions(bundle, photos, precisions, args.calibration_images)
        verified = verified_precisions(bundle)
        decode_ms = decode_core_ms(bundle, photos)
        print(f"decode alone: {decode_ms:.1f} core-ms per image", flush=True)
        prep = preprocessing_of(bundle)
        backends: dict[str, Backend] = {
            "fp32": TorchBackend(bundle.create_model(), prep, args.device)
        }
        # ONNX Runtime threads sleep when idle: the model core-ms of the ideal is its CPU time
        if not gpu:
            backends["onnx"] = create_onnx_backend(bundle, threads=cpus, spinning=False)
        if "bf16" in precisions:
            backends["bf16"] = TorchBackend(bundle.create_model(), prep, args.device, "bf16")
        if "int8" in precisions:
            backends["int8"] = OnnxBackend(cached_int8_export(bundle), prep, cpus, spinning=False)
        ours_options: dict[str, dict[str, object]] = {
            "ours": {"device": args.device, "precision": "fp32"}
        }
        backend_of = {"ours": "fp32"}
        if not gpu:
            ours_options["ours onnx"] = {"backend": "onnx", "precision": "fp32"}
            backend_of["ours onnx"] = "onnx"
        for p in precisions:
            ours_options[f"ours {p}"] = {"device": args.device, "precision": p}
            backend_of[f"ours {p}"] = p
        for variant in variants:
            name = "variant " + " ".join(f"{k}={v}" for k, v in variant.items())
            ours_options[name] = {"device": args.device, "precision": "fp32", **variant}
            backend_of[name] = "fp32"
        fused_bundle, gain_kept = (fusion_bundle(bundle, folder) if args.fusion
                                   else (None, float("nan")))  # fmt: skip
        if args.fusion:
            for gate in ("never", "gated", "always"):
                name = f"fusion {gate}"
                ours_options[name] = {"device": args.device, "precision": "fp32", "detector": gate}
                backend_of[name] = "fp32"

        def bundle_for(name: str) -> Bundle:
            return fused_bundle if name.startswith("fusion") and fused_bundle else bundle

        for name, options in ours_options.items():  # warm caches, the ONNX exports, cuDNN once
            time_ours(bundle_for(name), photos[:4], folder, **options)
        for r in range(args.rounds):  # interleaved, so a noisy neighbour hits all alike
            print(f"round {r + 1}", flush=True)
            for name, options in ours_options.items():
                cpu_ms = model_ms.setdefault(backend_of[name], [])
                limit: Callable[[], float] = functools.partial(
                    time_limit, backends[backend_of[name]], len(paths), cpu_ms
                )
                before = limit()
                run = time_ours(bundle_for(name), paths, folder, **options)
                after = limit()
                runs_of_ours.setdefault(name, []).append(run)
                record(name, run.images_per_s)
                record(f"{name} (limit)", (before + after) / 2)
                ideal = cpus / ((cpu_ms[-1] + decode_ms) / 1000)
                record(f"{name} (ideal)", ideal)
                print(
                    f"    start-up {run.startup_s:.2f} s, CPU {run.cpu_per_image_ms:.1f} ms per "
                    f"image; limit before {before:.2f}, after {after:.2f}; model "
                    f"{cpu_ms[-1]:.1f} + decode {decode_ms:.1f} core-ms -> ideal {ideal:.2f}",
                    flush=True,
                )
                if name == "ours":
                    record("plain", time_plain(bundle, paths, args.device, plain_workers))

    def ratio(a: str, b: str) -> float:
        """Median over rounds of a/b measured in the same round (robust to a noisy machine)."""
        return float(np.median(np.array(rates[a]) / np.array(rates[b])))

    def median(name: str) -> float:
        return float(np.median(rates[name]))

    print(f"medians of {args.rounds} rounds (ratios: medians of same-round ratios):")
    print(f"limit (model alone, pre-decoded, torch):  {median('ours (limit)'):8.2f} images/s")
    print(
        f"plain (full decode, DataLoader {plain_workers}):        {median('plain'):8.2f} images/s"
    )
    print(f"decode alone: {decode_ms:.1f} core-ms per image; model alone (core-ms per image): "
          + ", ".join(f"{b} {np.median(v):.1f}" for b, v in model_ms.items()))  # fmt: skip
    for name in ours_options:
        startup = np.median([run.startup_s for run in runs_of_ours[name]])
        cpu_ms = np.median([run.cpu_per_image_ms for run in runs_of_ours[name]])
        print(
            f"{name:50s} {median(name):8.2f} images/s = {ratio(name, name + ' (limit)'):.2f} "
            f"of its limit ({median(name + ' (limit)'):.2f}), "
            f"{ratio(name, name + ' (ideal)'):.2f} of its ideal ({median(name + ' (ideal)'):.2f}), "
            f"{ratio(name, 'plain'):.2f}x plain; start-up {startup:.2f} s, CPU {cpu_ms:.1f} ms "
            f"per image"
        )
    extra = ""
    if "ours onnx" in rates:
        extra = (
            f" onnx_images_per_s={median('ours onnx'):.2f} "
            f"onnx_vs_limit={ratio('ours onnx', 'ours onnx (limit)'):.2f} "
            f"onnx_vs_plain={ratio('ours onnx', 'plain'):.2f}"
        )
    # the fastest precision whose check passed (fp32, the reference, always counts)
    candidates = {"fp32": "ours"} | {p: f"ours {p}" for p in precisions if p in verified}
    best = max(candidates, key=lambda p: median(candidates[p]))
    unverified = [p for p in precisions if p not in verified]
    if unverified:
        print(f"not verified for this bundle (not eligible as best): {', '.join(unverified)}")
    print(
        f"best verified precision: {best}, {median(candidates[best]):.2f} images/s = "
        f"{ratio(candidates[best], 'plain'):.2f}x plain (goal >= 3.5), "
        f"{ratio(candidates[best], candidates[best] + ' (ideal)'):.2f} of its ideal (goal >= 0.9)"
    )
    if args.fusion:
        extra += (
            f" fusion_gated_vs_off={ratio('fusion gated', 'fusion never'):.2f}"
            f" fusion_always_vs_off={ratio('fusion always', 'fusion never'):.2f}"
            f" fusion_gain_kept={gain_kept:.2f}"
        )
    print(
        f"RESULT predict_throughput images_per_s={median('ours'):.2f} "
        f"vs_limit={ratio('ours', 'ours (limit)'):.2f} vs_plain={ratio('ours', 'plain'):.2f}"
        f" device={args.device}{extra} best_precision={best} "
        f"best_vs_plain={ratio(candidates[best], 'plain'):.2f} "
        f"vs_ideal={ratio(candidates[best], candidates[best] + ' (ideal)'):.2f}"
    )


if __name__ == "__main__":
    main()
