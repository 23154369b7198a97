"""Per-tag thresholds for 1M images x 1,000 tags, against a per-tag scikit-learn loop.

    .venv/bin/python bench/calibrate_scale.py                       # 1,000,000 x 1,000
    .venv/bin/python bench/calibrate_scale.py --images 100000 --tags 200

Synthetic held-out scores with a long tail of tag frequencies (0.08% .. 20% positives) and a
known mask that covers 30-100% of the images per tag. Policies rotate over the tags (precision
0.9, recall 0.8, best F1) so all three are timed. In memory, tag-major (`[T, N]`, passed as
the transposed `[N, T]` view, which the library reads without copying):
scores float16 (2 bytes/cell: 2.0 GB at full size, what held-out probabilities are stored as),
targets and known bool (1 byte/cell each). `--dtype float32` doubles the scores and switches
the library from its histogram path to its sort path.

Precision targets are judged by `--bound` (default the one-sided 95% Clopper-Pearson lower
bound, as calibration does by default; `--bound none` = the point estimate).

Baseline, same process: for a sample of tags, mask the tag's known cells and run
`calibrate_tag_reference` (scikit-learn's `precision_recall_curve` + the policy), timed per tag
and extrapolated to all tags. Identical = the vectorised thresholds equal the reference on every
sampled tag. Peak memory: tracemalloc peak of numpy allocations during calibration (working
memory on top of the data) and the process's max RSS.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
import tracemalloc

import numpy as np

from label_system.taxonomy import Taxonomy
from tagger.calibrate.thresholds import (
    CalibrationConfig,
    PolicyOverride,
    calibrate_tag_reference,
    calibrate_thresholds,
)

POLICY_CYCLE = ("precision", "recall", "f1")


def make_data(
    n: int, t: int, dtype: type, rng: np.random.Generator, chunk: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tag-major `[T, N]` scores, targets, known; generated a few tags at a time."""
    scores = np.empty((t, n), dtype=dtype)
    targets = np.empty((t, n), dtype=bool)
    known = np.empty((t, n), dtype=bool)
    prevalence = 0.2 / (1.0 + np.arange(t)) ** 0.8
    known_rate = rng.uniform(0.3, 1.0, t)
    strength = rng.uniform(0.5, 3.0, t)
    for j0 in range(0, t, chunk):
        j1 = min(t, j0 + chunk)
        y = rng.random((j1 - j0, n), dtype=np.float32) < prevalence[j0:j1, None]
        logit = rng.standard_normal((j1 - j0, n), dtype=np.float32)
        logit += np.where(y, 1.0, -1.0).astype(np.float32) * strength[j0:j1, None]
        logit -= 2.0
        scores[j0:j1] = 1.0 / (1.0 + np.exp(-logit))
        targets[j0:j1] = y
        known[j0:j1] = rng.random((j1 - j0, n), dtype=np.float32) < known_rate[j0:j1, None]
    return scores, targets, known


def flat_taxonomy(t: int) -> Taxonomy:
    return Taxonomy.from_dict({
        "name": "bench", "version": "1",
        "categories": [{"id": "c", "names": {"en": "C"}}],
        "tags": [{"id": f"t{j}", "names": {"en": f"T{j}"}, "category": "c"} for j in range(t)],
    })  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=12, help="tags in the scikit-learn loop")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bound", choices=["none", "clopper_pearson", "wilson"],
                    default="clopper_pearson")  # fmt: skip
    args = ap.parse_args()
    n, t = args.images, args.tags
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    scores, targets, known = make_data(n, t, np.dtype(args.dtype).type, rng)
    data_gb = (scores.nbytes + targets.nbytes + known.nbytes) / 1e9
    print(
        f"data: {n:,} images x {t:,} tags, scores {args.dtype}, {data_gb:.2f} GB in memory "
        f"(generated in {time.perf_counter() - t0:.1f} s)"
    )

    tax = flat_taxonomy(t)
    policies = [POLICY_CYCLE[j % 3] for j in range(t)]
    overrides = {f"t{j}": PolicyOverride(policy=p) for j, p in enumerate(policies)}
    config = CalibrationConfig(
        target_precision=0.9, target_recall=0.8, min_positives=10, min_negatives=10,
        fallback=("disabled",), tags=overrides, bound=args.bound,
    )  # fmt: skip

    tracemalloc.start()
    t0 = time.perf_counter()
    cal = calibrate_thresholds(scores.T, targets.T, known.T, tax, config)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    status = cal.report["status"].value_counts().to_dict()
    print(
        f"vectorised: {seconds:.2f} s for {t:,} tags ({seconds / t * 1e3:.2f} ms/tag), "
        f"working memory peak {peak / 1e6:.0f} MB, statuses {status}"
    )

    sample = np.unique(np.linspace(0, t - 1, min(args.sample, t)).astype(int))
    ref_seconds, identical = 0.0, True
    for j in sample:
        t0 = time.perf_counter()
        m = known[j]
        target = {"precision": 0.9, "recall": 0.8, "f1": math.nan}[policies[j]]
        ref = calibrate_tag_reference(
            scores[j][m], targets[j][m], policies[j], target, bound=args.bound
        )
        ref_seconds += time.perf_counter() - t0
        got = cal.thresholds[j]
        if cal.report["status"][j] == "ok":
            same = not math.isnan(ref) and got == np.float32(ref)
        else:  # only "unreachable" may differ from ok here: supports are large
            same = math.isnan(ref) or "too few" in cal.report["reason"][j]
        if not same:
            print(f"  MISMATCH tag {j} ({policies[j]}): vectorised {got!r}, reference {ref!r}")
        identical &= same
    per_tag_ref = ref_seconds / len(sample)
    speedup = per_tag_ref / (seconds / t)
    print(
        f"scikit-learn loop: {per_tag_ref * 1e3:.1f} ms/tag on {len(sample)} sampled tags "
        f"-> {per_tag_ref * t:.1f} s extrapolated to {t:,} tags"
    )
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"speedup per tag: {speedup:.1f}x; process max RSS {rss_gb:.2f} GB")
    print(
        f"RESULT calibrate_scale seconds={seconds:.2f} speedup={speedup:.1f} "
        f"identical={'true' if identical else 'false'}"
    )


if __name__ == "__main__":
    main()
