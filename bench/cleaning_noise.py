"""Does label cleaning find injected label noise, and does accepting its queue recover mAP?

    .venv/bin/python bench/cleaning_noise.py /tmp/assembled_shared/manifest.parquet \\
        [--cache-dir DIR] [--epochs 6 --image-size 96 --k 4 --test-folds 8 9 --seed 0]
        [--backbone resnet18 --pretrained WEIGHTS_FILE|hub]
    .venv/bin/python bench/cleaning_noise.py --cost-only      # the 1M x 1,000 cost line only

On the assembled `../shared/data` (`tagger assemble flows/configs/shared_data.yaml`):
1. Folds `--test-folds` are held out with their labels as assembled ("clean"); the other folds
   are the pool. Noise goes into the pool's *known* cells with a fixed seed: 10% of the known
   positives are dropped (set to known negative) and false positives numbering 5% of the known
   positives are added on random known negatives. Unknown cells are never touched.
2. Out-of-fold probabilities of the pool on the noisy labels (`tagger.train.crossfit`, k cheap
   models), the label-context regression on them (`tagger.clean.context`, out of the same k
   groups), then `tagger.clean` ranks label issues on known cells and builds the review queue
   (default queue settings: at most 50 items per tag, 1,000 in all). A cell is an issue when
   cleanlab's filter flags it or, where the context regression scored it (calibrated), its
   P(label wrong) reaches 0.5 (`IssueConfig.min_flip_prob`).
3. Precision and recall of the queue's label issues against the injected flips, for the queue
   built as the clean stage builds it (label context on, issues ranked by the probability that
   the label is wrong under the default noise priors) and, beside it: on the image model's
   probabilities alone; in cleanlab's self-confidence order (with and without the context); with
   cleanlab's filter alone deciding what is an issue; with the posterior rule let loose on the
   image model's uncalibrated scores; with wrong positives assumed spread evenly over absent
   cells (`IssueConfig.false_positive_spread` 1); and with both noise priors halved and doubled.
   Each also on the two halves of the pool's cross-fit groups. (The injected false positives
   are uniform over known negatives (`--false-positives uniform`), while the clean stage's
   default prior puts them in proportion to each tag's positives: a mismatch that this
   benchmark's rare tags pay for, and that `false_positive_spread` 1 removes. With
   `--false-positives by_tag` the default prior is the injected noise's own.) For the clean
   stage's queue also: the recall of the ranking's first N items, N = the number of flips
   (R-precision: a perfect ranking finds them all, while the 1,000-item queue holds at most
   1,000 of them); and the share of the flips in the queue by how well the image model knows
   their tag (its out-of-fold AP on the clean labels), which shows what a stronger cross-fit
   model would buy. The cross-fit models train from scratch unless `--pretrained` gives
   backbone weights.
4. Three models with equal settings and seed, trained on the pool's noisy labels, on the noisy
   labels after accepting every suggestion of the queue, and on the clean labels; mAP on the
   test folds' clean labels (known cells only).
5. Cost: issue ranking of 1M images x 1,000 tags of synthetic probabilities (30% of cells known,
   5% of them flipped), numpy backend over blocks of tags, against cleanlab's own per-tag call
   measured on a sample of tags in the same run; and the label-context regression on the same
   size (4 groups, default settings: rank 64 at 1,000 tags, 20,000 rows fitted per group).

Last line: `RESULT cleaning_noise recall_at_queue=<x> precision_at_queue=<x> map_noisy=<x>
map_cleaned=<x> map_clean=<x> cost_1m_x_1000_s=<x> cleanlab_1m_x_1000_s=<x> context_1m_x_1000_s=<x>
recall_at_queue_image_only=<x> precision_at_queue_image_only=<x> recall_at_flips=<x>
recall_at_queue_even_fp=<x> precision_at_queue_even_fp=<x>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from label_system.taxonomy import Taxonomy, load_default_taxonomy
from tagger.clean.context import label_context, label_context_probs
from tagger.clean.issues import IssueConfig, LabelIssues, find_label_issues, tag_label_issues
from tagger.clean.queue import QueueConfig, build_review_queue
from tagger.data.manifest import read_manifest, targets_from_manifest
from tagger.metrics import average_precision, mean_average_precision
from tagger.train.crossfit import CrossFitConfig, cross_fit
from tagger.train.predictions import predict_manifest
from tagger.train.training import TrainConfig, train

EVEN_FALSE_POSITIVES = "wrong positives spread evenly over absent cells"


def inject_noise(
    targets: np.ndarray,
    known: np.ndarray,
    rows: np.ndarray,
    rng: np.random.Generator,
    drop: float = 0.10,
    add: float = 0.05,
    spread: str = "uniform",
) -> tuple[np.ndarray, np.ndarray]:
    """`(noisy targets, flipped mask)`: in `rows`, `drop` of known positives -> negative, and
    `add` x (known positives) known negatives -> positive, drawn uniformly over the known
    negatives (`spread` "uniform") or with each tag's share in proportion to its known
    positives ("by_tag"; a tag with no known negative gets none)."""
    noisy = targets.copy()
    in_rows = np.zeros(len(targets), bool)
    in_rows[rows] = True
    pos = np.argwhere((targets > 0.5) & known & in_rows[:, None])
    neg = np.argwhere((targets < 0.5) & known & in_rows[:, None])
    dropped = pos[rng.choice(len(pos), round(drop * len(pos)), replace=False)]
    weights = None
    if spread == "by_tag":  # a negative's weight: its tag's positives per negative
        per_tag = np.bincount(pos[:, 1], minlength=targets.shape[1])
        per_tag = per_tag / np.maximum(np.bincount(neg[:, 1], minlength=targets.shape[1]), 1)
        weights = per_tag[neg[:, 1]]
        weights = weights / weights.sum()
    elif spread != "uniform":
        raise ValueError(f"spread {spread!r}: allowed 'uniform', 'by_tag'")
    added = neg[rng.choice(len(neg), round(add * len(pos)), replace=False, p=weights)]
    flipped = np.zeros_like(known)
    for cells, value in ((dropped, 0.0), (added, 1.0)):
        noisy[cells[:, 0], cells[:, 1]] = value
        flipped[cells[:, 0], cells[:, 1]] = True
    return noisy, flipped


def with_targets(manifest: pd.DataFrame, targets: np.ndarray, taxonomy: Taxonomy) -> pd.DataFrame:
    """The manifest with each row's positive tags replaced by `targets` (known unchanged)."""
    tags = np.asarray(taxonomy.tag_ids, dtype=object)
    out = manifest.copy()
    out["tags"] = [list(tags[row > 0.5]) for row in targets]
    return out


def pretrained_weights(value: str) -> str | Path:
    """`--pretrained`: 'hub', or a weights file that exists (checked before any model loads)."""
    if value == "hub":
        return value
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no weights file {path} (give a file, or 'hub')")
    return path


def train_config(
    args: argparse.Namespace, manifest: Path, cache_dir: Path, out: Path
) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"backbone": args.backbone, "image_size": args.image_size,
                      "pretrained": args.pretrained},
            "loss": {"name": "focal"},
            "sampler": {"name": "repeat_factor", "threshold": 0.02},
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
            "schedule": {"epochs": args.epochs, "warmup_epochs": 0.5},
            "data": {"manifest": str(manifest), "cache_dir": str(cache_dir), "cache_size": 256,
                     "val_fold": None, "batch_size": 32, "num_workers": 1},
            "output_dir": str(out),
            "device": "cpu",
            "progress": False,
            "seed": args.seed,
        }
    )  # fmt: skip


def heldout_map(
    cfg: TrainConfig, pool: pd.DataFrame, test: pd.DataFrame, taxonomy: Taxonomy, name: str
) -> float:
    """mAP on `test` (its labels as given) of a model trained on `pool`."""
    t0 = time.time()
    cfg = cfg.model_copy(update={"output_dir": cfg.output_dir / name})
    result = train(cfg, pool.reset_index(drop=True), taxonomy)
    assert result.model is not None
    preprocessing = {"image_size": cfg.model.image_size, "resize": cfg.data.eval_fit,
                     "mean": list(cfg.model.mean), "std": list(cfg.model.std)}  # fmt: skip
    probs = predict_manifest(result.model, test, preprocessing, cache_dir=cfg.data.cache_dir)
    targets, known = targets_from_manifest(test, taxonomy)
    value = mean_average_precision(average_precision(probs, targets, known))
    print(f"  {name}: held-out mAP {value:.4f} ({time.time() - t0:.0f} s)", flush=True)
    return value


def queue_scores(
    queue: pd.DataFrame, flipped: np.ndarray, ids: pd.Index, tags: pd.Index
) -> tuple[float, float, int]:
    """(recall, precision, size) of the queue's label issues against the flipped cells."""
    issues = queue[queue["kind"].isin(["missing", "wrong"])]
    rows, cols = ids.get_indexer(issues["image_id"]), tags.get_indexer(issues["tag"])
    hits = int(flipped[rows, cols].sum())
    return hits / max(int(flipped.sum()), 1), hits / max(len(issues), 1), len(issues)


def queue_of(
    issues: LabelIssues, positives: pd.Series, config: QueueConfig | None = None
) -> pd.DataFrame:
    """The review queue of `issues` alone (no pseudo labels, API or feedback), default settings
    unless `config`."""
    empty = pd.DataFrame(columns=["image_id", "tag", "model_prob", "api_score", "accepted"])
    fb = pd.DataFrame(columns=["image_id", "tag", "value", "votes", "users"])
    return build_review_queue(issues.cells, empty, fb, empty, positives, config)


def noise_priors(config: IssueConfig, factor: float) -> IssueConfig:
    """`config` with both noise priors multiplied by `factor`."""
    update = {
        "missing_rate": config.missing_rate * factor,
        "false_positive_share": config.false_positive_share * factor,
    }
    return config.model_copy(update=update)


def report_queue(
    issues: LabelIssues,
    queue: pd.DataFrame,
    flipped: np.ndarray,
    ids: pd.Index,
    tags: pd.Index,
    rows: np.ndarray,
    halves: list[np.ndarray],
) -> None:
    """Print the queue's recall and precision: whole pool, its top cuts, each half of the pool."""
    recall, precision, size = queue_scores(queue, flipped, ids, tags)
    all_r, all_p, all_n = queue_scores(issues.cells, flipped, ids, tags)
    print(f"  queue ({size} issues): recall {recall:.3f}, precision {precision:.3f}; "
          f"all flagged ({all_n}): recall {all_r:.3f}, precision {all_p:.3f}")  # fmt: skip
    for cut in (100, 250, 500):
        r, p, _ = queue_scores(queue.head(cut), flipped, ids, tags)
        print(f"  top {cut}: recall {r:.3f}, precision {p:.3f}")
    for h, half in enumerate(halves):
        own = np.zeros(len(ids), bool)
        own[rows[half]] = True
        part = queue[own[ids.get_indexer(queue["image_id"])]]
        r, p, n = queue_scores(part, flipped & own[:, None], ids, tags)
        print(f"  half {h} of the pool ({int(half.sum())} images): {n} queued, recall {r:.3f}, "
              f"precision {p:.3f}", flush=True)  # fmt: skip


def recall_by_skill(
    queue: pd.DataFrame,
    probs: np.ndarray,
    clean: np.ndarray,
    known: np.ndarray,
    flipped: np.ndarray,
    pool_ids: pd.Index,
    tags: pd.Index,
) -> None:
    """Print the share of the flips in the queue by how well the image model knows their tag:
    its out-of-fold AP on the clean labels. Arrays are `[pool rows, T]` in `pool_ids` order."""
    ap = np.asarray(average_precision(probs, clean, known), dtype=float)
    in_queue = np.zeros_like(flipped)
    issues = queue[queue["kind"].isin(["missing", "wrong"])]
    in_queue[pool_ids.get_indexer(issues["image_id"]), tags.get_indexer(issues["tag"])] = True
    for low, high in ((0.0, 0.2), (0.2, 0.6), (0.6, 0.8), (0.8, 1.01)):
        cols = np.flatnonzero((ap >= low) & (ap < high))
        flips = flipped[:, cols]
        found = int((flips & in_queue[:, cols]).sum())
        print(f"  tags whose image AP (clean labels) is in [{low:.1f}, {min(high, 1.0):.1f}]: "
              f"{len(cols)} tags, {int(flips.sum())} flips, {found / max(int(flips.sum()), 1):.2f} "
              f"of them in the queue")  # fmt: skip
    unscored = np.flatnonzero(np.isnan(ap))
    if len(unscored):
        print(f"  tags with no clean positive or negative known in the pool: {len(unscored)} "
              f"tags, {int(flipped[:, unscored].sum())} flips")  # fmt: skip


def synthetic_cells(
    rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(probs, labels, known)` of the cost lines: 5% true positives scored 0.7 + U(0, 0.3),
    30% of cells known, 5% of labels flipped."""
    truth = rng.random(shape, dtype=np.float32) < 0.05
    probs = np.clip(truth * 0.7 + rng.random(shape, dtype=np.float32) * 0.3, 0, 1)
    known = rng.random(shape, dtype=np.float32) < 0.3
    labels = truth ^ (rng.random(shape, dtype=np.float32) < 0.05)
    return probs, labels, known


def context_cost_line(n: int = 1_000_000, t: int = 1000, seed: int = 0) -> float:
    """Seconds of the label-context regression on an `[n, t]` problem (4 groups, defaults)."""
    rng = np.random.default_rng(seed)
    probs = np.empty((n, t), np.float32)
    labels, known = np.empty((n, t), bool), np.empty((n, t), bool)
    for start in range(0, n, 100_000):  # in blocks: no [n, t] temporaries
        part = slice(start, min(n, start + 100_000))
        probs[part], labels[part], known[part] = synthetic_cells(rng, (part.stop - start, t))
    t0 = time.perf_counter()
    label_context_probs(probs, labels, known, np.arange(n) % 4)
    seconds = time.perf_counter() - t0
    print(f"cost: label context on {n:,} images x {t:,} tags: {seconds:.0f} s", flush=True)
    return seconds


def cost_line(
    n: int = 1_000_000, t: int = 1000, block: int = 50, seed: int = 0
) -> tuple[float, float]:
    """Seconds to rank issues of an `[n, t]` problem (numpy backend, blocks of tags, every cell
    calibrated so the posterior rule runs too), and cleanlab's per-tag call extrapolated from a
    sample of tags."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n).astype(str).astype(object)
    numpy_cfg = IssueConfig(backend="numpy", filter_by="confident_learning")
    total, found, sample = 0.0, 0, []
    for start in range(0, t, block):
        width = min(block, t - start)
        probs, labels, known = synthetic_cells(rng, (n, width))
        t0 = time.perf_counter()
        result = find_label_issues(probs, labels.astype(np.float32), known, ids,
                                   [f"t{start + j}" for j in range(width)], numpy_cfg,
                                   calibrated=np.ones_like(known))  # fmt: skip
        total += time.perf_counter() - t0
        found += len(result.cells)
        if start == 0:
            cl_cfg = IssueConfig(filter_by="confident_learning")
            for j in range(3):  # cleanlab itself on 3 tags of this block
                rows = np.flatnonzero(known[:, j])
                t1 = time.perf_counter()
                tag_label_issues(probs[rows, j], labels[rows, j].astype(np.int64), cl_cfg)
                sample.append(time.perf_counter() - t1)
        del probs, known, labels, result
    cleanlab_total = float(np.mean(sample)) * t
    print(
        f"cost: {n:,} images x {t:,} tags (30% known): numpy backend {total:.1f} s "
        f"({found:,} issues); cleanlab per tag {np.mean(sample):.2f} s -> ~{cleanlab_total:.0f} s "
        f"for {t:,} tags ({cleanlab_total / total:.1f}x the numpy backend)",
        flush=True,
    )
    return total, cleanlab_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, nargs="?")
    parser.add_argument("--cache-dir", type=Path, help="default: <manifest folder>/cache")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--backbone", default="resnet18", help="timm name (default resnet18)")
    parser.add_argument(
        "--pretrained", type=pretrained_weights, default=False,
        help="backbone weights: a local file (safetensors or a state dict), or 'hub' to "
        "download timm's (default: none, trained from scratch)",
    )  # fmt: skip
    parser.add_argument("--k", type=int, default=4, help="cross-fit models")
    parser.add_argument("--test-folds", type=int, nargs="+", default=[8, 9])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--false-positives", choices=["uniform", "by_tag"], default="uniform",
        help="where the added false positives go: uniformly over the known negatives "
        "(default), or to each tag in proportion to its known positives",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cost-only", action="store_true")
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary one); "
                        "finished cross-fit models in it are reused")  # fmt: skip
    parser.add_argument(
        "--only", choices=["noisy", "cleaned", "clean"],
        help="train only this final model (run the three in parallel), no RESULT line",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cost_only or args.manifest is None:
        cost, cleanlab_cost = cost_line()
        context_cost = context_cost_line()
        print(f"RESULT cleaning_noise cost_1m_x_1000_s={cost:.1f} "
              f"cleanlab_1m_x_1000_s={cleanlab_cost:.0f} "
              f"context_1m_x_1000_s={context_cost:.0f}")  # fmt: skip
        return
    taxonomy = load_default_taxonomy()
    manifest = read_manifest(args.manifest)
    cache_dir = args.cache_dir or args.manifest.parent / "cache"
    targets, known = targets_from_manifest(manifest, taxonomy)
    in_test = manifest["fold"].isin(args.test_folds).to_numpy()
    pool_rows = np.flatnonzero(~in_test)
    rng = np.random.default_rng(args.seed)
    noisy, flipped = inject_noise(targets, known, pool_rows, rng, spread=args.false_positives)
    print(f"{len(manifest)} images ({len(pool_rows)} pool, {int(in_test.sum())} test); "
          f"{int(flipped.sum())} flips injected in the pool "
          f"({int((flipped & (targets > 0.5)).sum())} dropped, "
          f"{int((flipped & (targets < 0.5)).sum())} added)", flush=True)  # fmt: skip
    out = args.work or Path(tempfile.mkdtemp(prefix="cleaning_noise_"))
    cfg = train_config(args, args.manifest, cache_dir, out)
    pool_noisy = with_targets(manifest, noisy, taxonomy)[~in_test].reset_index(drop=True)

    t0 = time.time()
    crossfit = CrossFitConfig(k=args.k)
    oof = cross_fit(pool_noisy, taxonomy, cfg, crossfit, out / "crossfit")
    print(f"cross-fit: {args.k} models, {time.time() - t0:.0f} s", flush=True)
    rows = pd.Index(manifest["image_id"]).get_indexer(oof.image_ids)
    t0 = time.time()
    assert oof.scored_by is not None
    context, calibrated = label_context(oof.probs, noisy[rows], known[rows], oof.scored_by)
    print(f"label context: {time.time() - t0:.1f} s", flush=True)
    ids, tags = pd.Index(manifest["image_id"]), pd.Index(taxonomy.tag_ids)
    positives = pd.Series((noisy[rows] * known[rows]).sum(0), index=list(taxonomy.tag_ids))
    halves = [np.isin(oof.scored_by, part) for part in np.array_split(np.unique(oof.scored_by), 2)]
    default = IssueConfig()
    filter_only = default.model_copy(update={"min_flip_prob": None})
    everywhere = np.ones_like(calibrated)
    # name: (probabilities, where they count as calibrated (the posterior rule reads only
    # those), issue settings, ranked in self-confidence order)
    variants = {
        "as the clean stage": (context, calibrated, default, False),
        "image only": (oof.probs, None, default, False),
        "self-confidence order": (context, calibrated, default, True),
        "image only, self-confidence order": (oof.probs, None, default, True),
        "cleanlab's filter alone (no posterior rule)": (context, calibrated, filter_only, False),
        "posterior rule on the image model's uncalibrated scores": (
            oof.probs, everywhere, default, False,
        ),
        EVEN_FALSE_POSITIVES: (
            context, calibrated, default.model_copy(update={"false_positive_spread": 1.0}), False,
        ),
        "noise priors both halved": (context, calibrated, noise_priors(default, 0.5), False),
        "noise priors both doubled": (context, calibrated, noise_priors(default, 2.0), False),
    }  # fmt: skip
    queues, found = {}, {}
    for name, (probs, cells, issue_config, self_confidence) in variants.items():
        issues = find_label_issues(
            probs, noisy[rows], known[rows], oof.image_ids, taxonomy.tag_ids, issue_config,
            image_probs=oof.probs, calibrated=cells,
        )  # fmt: skip
        if self_confidence:  # cleanlab's order: P(label wrong) read as 1 - self-confidence
            issues = dataclasses.replace(issues, cells=issues.cells.assign(
                flip_prob=1.0 - issues.cells["quality"]))  # fmt: skip
        queues[name], found[name] = queue_of(issues, positives), issues
        print(f"{name} (missing_rate {issue_config.missing_rate}, false_positive_share "
              f"{issue_config.false_positive_share}, false_positive_spread "
              f"{issue_config.false_positive_spread}):")  # fmt: skip
        report_queue(issues, queues[name], flipped, ids, tags, rows, halves)
    queue = queues["as the clean stage"]
    recall, precision, _ = queue_scores(queue, flipped, ids, tags)
    recall_image, precision_image, _ = queue_scores(queues["image only"], flipped, ids, tags)
    recall_even, precision_even, _ = queue_scores(queues[EVEN_FALSE_POSITIVES], flipped, ids, tags)
    n_flips = int(flipped.sum())
    ranking = queue_of(found["as the clean stage"], positives, QueueConfig(max_items=n_flips))
    recall_flips, _, _ = queue_scores(ranking, flipped, ids, tags)
    print(f"as the clean stage, the ranking's first {n_flips:,} (as many as the flips): recall "
          f"{recall_flips:.3f}")  # fmt: skip
    print("as the clean stage, by the image model's skill on the flips' tags:")
    recall_by_skill(queue, oof.probs, targets[rows], known[rows], flipped[rows],
                    pd.Index(oof.image_ids), tags)  # fmt: skip

    cleaned = noisy.copy()
    qr, qc = ids.get_indexer(queue["image_id"]), tags.get_indexer(queue["tag"])
    cleaned[qr, qc] = (queue["suggested"] == "positive").to_numpy(np.float32)
    print(f"accepting the queue: {int((cleaned != noisy).sum())} cells changed, "
          f"{int(((cleaned != noisy) & flipped).sum())} of them injected flips undone")  # fmt: skip
    test = manifest[in_test].reset_index(drop=True)
    maps = {}
    for name, labels in (("noisy", noisy), ("cleaned", cleaned), ("clean", targets)):
        if args.only not in (None, name):
            continue
        pool = with_targets(manifest, labels, taxonomy)[~in_test]
        maps[name] = heldout_map(cfg, pool, test, taxonomy, name)
    if args.only:
        return
    recovered = (maps["cleaned"] - maps["noisy"]) / max(maps["clean"] - maps["noisy"], 1e-9)
    print(f"share of the lost mAP recovered: {recovered:.2f}")
    cost, cleanlab_cost = cost_line()
    context_cost = context_cost_line()
    print(
        f"RESULT cleaning_noise recall_at_queue={recall:.3f} precision_at_queue={precision:.3f} "
        f"map_noisy={maps['noisy']:.4f} map_cleaned={maps['cleaned']:.4f} "
        f"map_clean={maps['clean']:.4f} cost_1m_x_1000_s={cost:.1f} "
        f"cleanlab_1m_x_1000_s={cleanlab_cost:.0f} context_1m_x_1000_s={context_cost:.0f} "
        f"recall_at_queue_image_only={recall_image:.3f} "
        f"precision_at_queue_image_only={precision_image:.3f} recall_at_flips={recall_flips:.3f} "
        f"recall_at_queue_even_fp={recall_even:.3f} precision_at_queue_even_fp={precision_even:.3f}"
    )


if __name__ == "__main__":
    main()
