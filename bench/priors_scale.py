"""Prior rules applied to 1M images x 1,000 tags, against calibration's time on the same scores.

    .venv/bin/python bench/priors_scale.py                          # 1,000,000 x 1,000
    .venv/bin/python bench/priors_scale.py --images 100000 --tags 300

A realistic synthetic rule set: a taxonomy-like parent DAG over the tags (10 roots, each tag
one parent, some two, up to ~6 levels deep), implications across branches (always towards an
earlier tag, so no cycle) and exclusions between tags of different roots that no tag implies
both of; the whole set passes `label_system.priors.check_priors`. Scores: float32 sigmoid of
per-tag logits with a long tail of prevalences, tag-major in memory (`[T, N]` passed as the
transposed `[N, T]` view, as bench/calibrate_scale.py does), thresholds at each tag's
(1 - prevalence) score quantile (each tag predicted about as often as it occurs).

The 4 GB score matrix is never held at once: rows are drawn, the rules applied (timed) and the
output checked for violations of every hard rule at the thresholds (not timed), one chunk at a
time. Each chunk is applied twice: as the retrain flow's priors stage does (`explain=False`,
scores only: the headline `seconds`) and as the predictor does (`explain=True`, also which rule
changed each cell); both must give the same scores. `apply_priors` works on `--threads` chunks at
once (default: the CPUs this process may use); calibration is numpy on one thread.
Calibration (`tagger.calibrate.thresholds.calibrate_thresholds`, precision policy) is timed
on `--calib-images` rows of the same distribution and scaled linearly to `--images` (its sort
grows as N log N, so the linear scaling understates calibration and overstates the ratio).

Last line: RESULT priors_scale seconds=<apply> ratio_to_calibration=<apply / calibration>
consistent=<true|false> explain_seconds=<x> explain_ratio=<x> threads=<n>
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from label_system.priors import PriorRules, check_priors
from label_system.taxonomy import Taxonomy
from tagger.calibrate.thresholds import CalibrationConfig, calibrate_thresholds
from tagger.inference.runtime import prefer_heap_reuse
from tagger.priors.apply import (
    DEFAULT_CHUNK_ROWS,
    RuleSet,
    apply_priors,
    compile_rules,
    violations,
)


def make_taxonomy(t: int, rng: np.random.Generator) -> Taxonomy:
    """10 roots; every other tag one parent among earlier tags (15% a second one)."""
    depth = np.zeros(t, dtype=int)
    tags = []
    for i in range(t):
        parents: list[int] = []
        if i >= 10:
            cand = [j for j in rng.integers(0, i, size=8) if depth[j] < 5]
            parents = [int(cand[0])] if cand else [int(rng.integers(0, 10))]
            if rng.random() < 0.15 and len(cand) > 1 and cand[1] != parents[0]:
                parents.append(int(cand[1]))
            depth[i] = 1 + max(depth[p] for p in parents)
        tags.append({"id": f"t{i}", "names": {"en": f"T{i}"}, "category": "c",
                     "parents": [f"t{p}" for p in parents]})  # fmt: skip
    categories = [{"id": "c", "names": {"en": "C"}}]
    return Taxonomy.from_dict(
        {"name": "bench", "version": "1", "categories": categories, "tags": tags}
    )


def make_rules(
    tax: Taxonomy, rng: np.random.Generator, implies: int, excludes: int
) -> tuple[PriorRules, RuleSet]:
    """Implications b -> a with a < b; exclusions kept when no tag implies both sides."""
    t = len(tax)
    pairs = {(int(b), int(a)) for a, b in rng.integers(0, t, size=(implies, 2)) if a < b}
    imp = [(f"t{b}", f"t{a}") for b, a in sorted(pairs)]
    base = compile_rules(tax, PriorRules(imp, []))
    reach = np.zeros((t, t), dtype=bool)  # reach[x, y]: x implies y (or x == y)
    for y in range(t):
        reach[base.sources[y], y] = True
    np.fill_diagonal(reach, True)
    root = np.array([_root(tax, f"t{i}") for i in range(t)])
    exc: list[tuple[str, str]] = []
    tries = 0
    while len(exc) < excludes and tries < 50 * excludes:
        tries += 1
        a, b = (int(x) for x in rng.integers(0, t, size=2))
        if root[a] == root[b] or (reach[:, a] & reach[:, b]).any():
            continue
        exc.append((f"t{a}", f"t{b}"))
    priors = PriorRules(imp, exc)
    check_priors(priors, tax)
    return priors, compile_rules(tax, priors)


def _root(tax: Taxonomy, tag: str) -> str:
    ancestors = tax.ancestors(tag)
    return ancestors[-1] if ancestors else tag


def draw_scores(
    n: int, prevalence: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and float32 sigmoid scores, tag-major `[T, n]` (positives 2.5 logits higher)."""
    y = rng.random((len(prevalence), n), dtype=np.float32) < prevalence[:, None]
    logit = rng.standard_normal((len(prevalence), n), dtype=np.float32)
    logit += np.where(y, np.float32(0.5), np.float32(-2.0))
    return y, (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--implies", type=int, default=400, help="implications drawn")
    parser.add_argument("--excludes", type=int, default=300, help="exclusion pairs wanted")
    parser.add_argument("--chunk", type=int, default=50_000, help="rows drawn at a time")
    parser.add_argument(
        "--apply-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows apply_priors takes at once"
    )
    parser.add_argument("--calib-images", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="apply_priors threads")
    args = parser.parse_args()
    prefer_heap_reuse()  # large temporaries reused, not faulted in anew (as the CLI does)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    tax = make_taxonomy(args.tags, rng)
    priors, rules = make_rules(tax, rng, args.implies, args.excludes)
    closure = sum(len(s) for s in rules.sources)
    print(f"rules: {len(rules.rules)} ({len(priors.implies)} implications, "
          f"{len(priors.excludes)} exclusions, the rest taxonomy parents); closure pairs "
          f"{closure}; built and checked in {time.perf_counter() - t0:.1f}s")  # fmt: skip
    prevalence = (0.2 / (1.0 + rng.permutation(args.tags)) ** 0.7).astype(np.float32)
    # as calibration would: each tag predicted about as often as it occurs
    _, sample = draw_scores(20_000, prevalence, rng)
    thresholds = np.array(
        [np.quantile(row, 1.0 - p) for row, p in zip(sample, prevalence, strict=True)],
        dtype=np.float32,
    )

    apply_s, explain_s, bad = 0.0, 0.0, {"implies": 0, "excludes": 0}
    changed, same = 0, True
    for r0 in range(0, args.images, args.chunk):
        _, tag_major = draw_scores(min(args.chunk, args.images - r0), prevalence, rng)
        scores = tag_major.T  # [n, T], tag-major in memory as the calibration benchmark's
        kw = {"chunk_rows": args.apply_rows, "threads": args.threads}
        start = time.perf_counter()
        out = apply_priors(scores, rules, thresholds, explain=False, **kw).scores
        apply_s += time.perf_counter() - start
        start = time.perf_counter()
        explained = apply_priors(scores, rules, thresholds, explain=True, **kw).scores
        explain_s += time.perf_counter() - start
        same = same and bool((explained == out).all())
        for k, v in violations(out, rules, thresholds).items():
            bad[k] += v
        changed += int((out != scores).sum())
    print(f"apply: {args.images:,} x {args.tags:,} in {apply_s:.1f}s "
          f"({args.images / apply_s:,.0f} images/s), {explain_s:.1f}s with which-rule "
          f"bookkeeping (same scores: {same}); cells changed {changed:,}; "
          f"violations after {bad}")  # fmt: skip

    m = min(args.calib_images, args.images)
    y, tag_major = draw_scores(m, prevalence, rng)
    known = rng.random(y.shape, dtype=np.float32) < 0.7
    start = time.perf_counter()
    calibrate_thresholds(
        tag_major.T, y.T.astype(np.float32), known.T, tax, CalibrationConfig(target_precision=0.9),
        rng=np.random.default_rng(0),
    )  # fmt: skip
    calib_sample = time.perf_counter() - start
    calib_s = calib_sample * args.images / m
    print(f"calibration: {m:,} x {args.tags:,} in {calib_sample:.1f}s -> {calib_s:.1f}s scaled "
          f"linearly to {args.images:,} images")  # fmt: skip
    consistent = bad == {"implies": 0, "excludes": 0} and same
    threads = args.threads or len(os.sched_getaffinity(0))
    print(
        f"RESULT priors_scale seconds={apply_s:.2f} ratio_to_calibration={apply_s / calib_s:.3f} "
        f"consistent={str(consistent).lower()} explain_seconds={explain_s:.2f} "
        f"explain_ratio={explain_s / calib_s:.3f} threads={threads}"
    )


if __name__ == "__main__":
    main()
