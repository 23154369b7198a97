"""Benchmark: images/s of the full training loop against the model step alone, same run.

Full loop: `Trainer.train_epoch` = sampler -> DataLoader workers (decode the cached JPEG at
reduced DCT scale, random-resized crop, flip, uint8 tensor) -> batch normalised on the device
-> forward, loss, backward, clip, optimizer, scheduler.
Step alone: `Trainer.train_step` on a batch already in memory (same model, optimizer, loss).

Both run in this process on one Trainer, alternating (step, loop, step, loop, ...) so machine
noise hits both alike; the first loop epoch (worker start-up) is not timed. The cache holds
generated smooth-textured photos as small JPEGs (shorter side `--cache-size`), like the real
resized cache. Default: resnet18 at 128 px, batch 32, CPU, 2 torch threads, 1 loader worker.

fp32 (`amp: off`) and bf16 (`amp: bf16`, what `amp: auto` picks on a CPU with bf16 units) run
side by side, one Trainer each, interleaved per round; `bf16_vs_fp32` is the median of the
same-round ratios of their full-loop images/s (goal >= 1.8x for resnet18@128).

    .venv/bin/python bench/train_throughput.py [--threads 2 --workers 1 --rounds 3 --no-bf16]

Wall-clock rates swing with other load on a shared machine, so each round also records CPU
seconds per image (this process + its loader workers): step-alone CPU / loop CPU is the ratio
the loop reaches when the cores are its own.

Last line: `RESULT train_throughput images_per_s=<loop> ratio_to_step=<loop / step>
cpu_cost_ratio=<step CPU / loop CPU per image> precision=<bf16|fp32> fp32_images_per_s=<loop>
fp32_ratio_to_step=<x> bf16_vs_fp32=<x>` (the first three of the bf16 run; fp32 only with
--no-bf16).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

from label_system.taxonomy import Taxonomy
from tagger.data.cache import cache_path
from tagger.train.precision import bf16_supported, cpu_support
from tagger.train.training import DistContext, SplitData, TrainConfig, Trainer


def write_cache(cache_dir: Path, n: int, size: int, num_tags: int, seed: int = 0) -> SplitData:
    """`n` smooth random photos as cache JPEGs (shorter side `size`, 4:3) and random labels."""
    rng = np.random.default_rng(seed)
    hashes = []
    for i in range(n):
        low = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((size * 4 // 3, size), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 12, size=(size, size * 4 // 3, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        content_hash = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        dest = cache_path(cache_dir, size, content_hash)
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(dest, "JPEG", quality=90)
        hashes.append(content_hash)
    targets = (rng.random((n, num_tags)) < 0.1).astype(np.float32)
    known = rng.random((n, num_tags)) < 0.8
    return SplitData([f"/nonexistent/{h}.jpg" for h in hashes], hashes, targets, known)


def taxonomy(num_tags: int) -> Taxonomy:
    return Taxonomy.from_dict(
        {
            "name": "bench",
            "version": "1",
            "categories": [{"id": "c", "names": {"en": "C"}}],
            "tags": [
                {"id": f"t{k}", "names": {"en": f"T{k}"}, "category": "c"} for k in range(num_tags)
            ],
        }
    )


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its loader workers so far."""
    proc = psutil.Process()
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        times = child.cpu_times()
        total += times.user + times.system
    return float(total)


def time_steps(
    trainer: Trainer, batch: tuple[torch.Tensor, ...], steps: int
) -> tuple[float, float]:
    """(images/s, CPU s/image) of `steps` optimizer steps on one in-memory batch."""
    cpu, start = cpu_seconds(), time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*batch)
    images = steps * len(batch[0])
    return images / (time.perf_counter() - start), (cpu_seconds() - cpu) / images


def time_epoch(trainer: Trainer) -> tuple[float, float]:
    """(images/s, CPU s/image incl. workers) of one full training epoch (loader + step)."""
    trainer.epoch += 1
    cpu, start = cpu_seconds(), time.perf_counter()
    trainer.train_epoch()
    images = len(trainer.train_loader) * trainer.cfg.data.batch_size
    return images / (time.perf_counter() - start), (cpu_seconds() - cpu) / images


def make_trainer(
    args: argparse.Namespace, tmp: str, split: SplitData, num_tags: int, amp: str
) -> tuple[Trainer, tuple[torch.Tensor, ...]]:
    """A Trainer at `amp` ("off" = fp32, "bf16"), warmed up, and one in-memory batch."""
    empty = SplitData([], [], np.zeros((0, num_tags), np.float32), np.zeros((0, num_tags), bool))
    cfg = TrainConfig.model_validate(
        {
            "model": {"backbone": args.backbone, "image_size": args.image_size},
            "sampler": {"name": "uniform"},
            "data": {
                "cache_dir": tmp,
                "cache_size": args.cache_size,
                "val_fold": None,
                "batch_size": args.batch_size,
                "num_workers": args.workers,
            },
            "schedule": {"epochs": 1000, "warmup_epochs": 0},
            "device": "cpu",
            "amp": amp,
            "channels_last": args.channels_last,
            "progress": False,
            "output_dir": str(Path(tmp) / f"out-{amp}"),
        }
    )
    torch.manual_seed(0)
    trainer = Trainer(cfg, split, empty, taxonomy(num_tags), [], DistContext())
    trainer._set_phase(0)
    trainer._set_train_mode()
    images, targets, known = next(iter(trainer.train_loader))  # also starts the workers
    batch = (images, targets, known)
    time_epoch(trainer)  # warm-up: worker start-up, allocator, oneDNN kernels
    time_steps(trainer, batch, 2)
    return trainer, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--cache-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--no-bf16", action="store_true", help="fp32 only (a CPU without bf16 units)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_tags = 50
    n = args.steps * args.batch_size
    amps = ["off"] if args.no_bf16 else ["off", "bf16"]
    names = {"off": "fp32", "bf16": "bf16"}
    auto = "bf16" if bf16_supported("cpu") else "off"
    print(f"CPU: {cpu_support().describe()}; amp 'auto' here: {auto}")
    step_rates: dict[str, list[float]] = {a: [] for a in amps}
    loop_rates: dict[str, list[float]] = {a: [] for a in amps}
    ratios: dict[str, list[float]] = {a: [] for a in amps}
    cpu_ratios: dict[str, list[float]] = {a: [] for a in amps}
    with tempfile.TemporaryDirectory() as tmp:
        split = write_cache(Path(tmp), n, args.cache_size, num_tags)
        trainers = {amp: make_trainer(args, tmp, split, num_tags, amp) for amp in amps}
        for r in range(args.rounds):  # interleaved: step, loop at each precision, per round
            for amp, (trainer, batch) in trainers.items():
                step_rate, step_cpu = time_steps(trainer, batch, args.steps)
                loop_rate, loop_cpu = time_epoch(trainer)
                step_rates[amp].append(step_rate)
                loop_rates[amp].append(loop_rate)
                ratios[amp].append(loop_rate / step_rate)
                cpu_ratios[amp].append(step_cpu / loop_cpu)
                print(
                    f"round {r + 1} {names[amp]}: step alone {step_rate:.1f} img/s "
                    f"({step_cpu * 1e3:.0f} CPU ms/img), full loop {loop_rate:.1f} img/s "
                    f"({loop_cpu * 1e3:.0f} CPU ms/img), ratio {ratios[amp][-1]:.3f}, CPU-cost "
                    f"ratio {cpu_ratios[amp][-1]:.3f}",
                    flush=True,
                )
    print(
        f"{args.backbone} @{args.image_size}px batch {args.batch_size}, cache {args.cache_size}px, "
        f"{args.threads} threads, {args.workers} loader workers, channels_last={args.channels_last}"
    )
    for amp in amps:
        print(
            f"median {names[amp]}: full loop {statistics.median(loop_rates[amp]):.1f} img/s, step "
            f"alone {statistics.median(step_rates[amp]):.1f} img/s, ratio "
            f"{statistics.median(ratios[amp]):.3f}; CPU-cost ratio "
            f"{statistics.median(cpu_ratios[amp]):.3f} (step CPU per image / loop CPU per image "
            "incl. workers: what the ratio is on 2 idle cores)"
        )
    extra = ""
    main_amp = amps[-1]  # bf16 when timed: what `amp: auto` runs on a CPU with bf16 units
    if "bf16" in amps:
        same_round = np.array(loop_rates["bf16"]) / np.array(loop_rates["off"])
        step_same_round = np.array(step_rates["bf16"]) / np.array(step_rates["off"])
        speedup = float(np.median(same_round))
        print(
            f"bf16 / fp32 (median of same-round ratios): full loop {speedup:.2f}x, step alone "
            f"{float(np.median(step_same_round)):.2f}x (goal: loop >= 1.8x, each loop >= 0.9 of "
            "its step)"
        )
        extra = (
            f" fp32_images_per_s={statistics.median(loop_rates['off']):.1f} "
            f"fp32_ratio_to_step={statistics.median(ratios['off']):.3f} bf16_vs_fp32={speedup:.2f}"
        )
    print(f"load average (1 min) at the end: {psutil.getloadavg()[0]:.1f}")
    print(
        f"RESULT train_throughput images_per_s={statistics.median(loop_rates[main_amp]):.1f} "
        f"ratio_to_step={statistics.median(ratios[main_amp]):.3f} "
        f"cpu_cost_ratio={statistics.median(cpu_ratios[main_amp]):.3f} "
        f"precision={names[main_amp]}{extra}"
    )


if __name__ == "__main__":
    main()
