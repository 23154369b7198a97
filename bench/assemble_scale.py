"""Benchmark: an Open-Images-schema label CSV (10M rows, 1M images, 1,000 MIDs) to a manifest.

Generates `ImageID,Source,LabelName,Confidence` (55% positives, 45% verified negatives, a
long-tailed MID frequency, ~10 rows per image) with numpy + pyarrow in a temporary folder, plus a
synthetic taxonomy (1,000 leaf tags under 50 groups under 8 tops, some leaves with two parents)
and an Open Images mapping for the MIDs (3% unmapped, 5% partial two-tag entries).

Then, each in a fresh subprocess (peak memory = that process's ru_maxrss, imports included):

- ours: `tagger.data.readers.read_openimages` (pyarrow CSV, categoricals) ->
  `tagger.data.assembly.assemble` (hashing off: the images do not exist) -> the manifest table (tags
  with ancestors, known mask, provenance); then, timed separately, stratified folds and the Parquet
  write.
- pandas: the straightforward way: `pd.read_csv`, `merge` with the mapping, with an
  ancestor/descendant table, `groupby(ImageID).agg(set)`, and per-image set arithmetic for
  known = positives + (negatives - positives).

rows_per_s and vs_pandas compare CSV -> manifest table (read + map + aggregate), the same work
on both sides; both produce the same number of positive and known (image, tag) pairs (checked).

    .venv/bin/python bench/assemble_scale.py [--rows 10000000] [--images N] [--mids 1000]

Last line: `RESULT assemble_scale rows_per_s=<n> peak_mem_over_csv=<x> vs_pandas=<x>
rows_per_cpu_s=<n>`. rows_per_s is wall clock; on a shared machine also read rows_per_cpu_s
(rows / CPU seconds of all the process's threads), which other processes do not inflate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

GROUPS, TOPS = 50, 8


# ---- data ---------------------------------------------------------------------------------------


def write_label_csv(path: Path, rows: int, images: int, mids: int, seed: int) -> Path:
    """The label CSV, ~rows/images rows per image in file order of random hex ImageIDs."""
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(0, 2**63, size=images + images // 100, dtype=np.int64))[:images]
    rng.shuffle(ids)
    image_ids = pa.array(np.char.mod("%016x", ids).astype(object), pa.string())
    per_image = np.full(images, rows // images, dtype=np.int64)
    per_image[: rows - per_image.sum()] += 1
    image_index = np.repeat(np.arange(images, dtype=np.int32), per_image)
    weights = 1.0 / (np.arange(mids) + 10.0) ** 1.1
    label_index = rng.choice(mids, size=rows, p=weights / weights.sum()).astype(np.int32)
    confidence = (rng.random(rows) < 0.55).astype(np.int8)
    table = pa.table(
        {
            "ImageID": pa.DictionaryArray.from_arrays(pa.array(image_index), image_ids),
            "Source": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(rows, np.int32)), pa.array(["verification"])
            ),
            "LabelName": pa.DictionaryArray.from_arrays(
                pa.array(label_index), pa.array(mid_names(mids))
            ),
            "Confidence": pa.array(confidence),
        }
    )
    table = table.cast(
        pa.schema(
            [
                ("ImageID", pa.string()),
                ("Source", pa.string()),
                ("LabelName", pa.string()),
                ("Confidence", pa.int8()),
            ]
        )
    )
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))
    return path


def mid_names(mids: int) -> list[str]:
    return [f"/m/0{i:05x}" for i in range(mids)]


def write_label_system(folder: Path, mids: int) -> tuple[Path, Path]:
    """A taxonomy of 8 tops > 50 groups > `mids` leaves and an Open Images mapping YAML."""
    tags = [
        {"id": f"top{k}", "names": {"en": f"Top {k}"}, "category": f"c{k}"} for k in range(TOPS)
    ]
    tags += [
        {
            "id": f"g{g:02d}",
            "names": {"en": f"Group {g}"},
            "category": f"c{g % TOPS}",
            "parents": [f"top{g % TOPS}"],
        }
        for g in range(GROUPS)
    ]
    for i in range(mids):
        parents = [f"g{i % GROUPS:02d}"] + ([f"g{(i + 1) % GROUPS:02d}"] if i % 10 == 0 else [])
        tags.append(
            {
                "id": f"t{i:04d}",
                "names": {"en": f"Leaf {i}"},
                "category": f"c{i % GROUPS % TOPS}",
                "parents": parents,
            }
        )
    taxonomy = {
        "name": "bench",
        "version": "1",
        "tags": tags,
        "categories": [{"id": f"c{k}", "names": {"en": f"C{k}"}} for k in range(TOPS)],
    }
    entries = []
    for i, mid in enumerate(mid_names(mids)):
        if i % 33 == 32:
            entries.append({"id": mid, "tags": []})
        elif i % 20 == 19:
            entries.append(
                {"id": mid, "tags": [f"t{i:04d}", f"t{(i + 1) % mids:04d}"], "partial": True}
            )
        else:
            entries.append({"id": mid, "tags": [f"t{i:04d}"]})
    mapping = {"vocabulary": "openimages", "negatives": "verified", "entries": entries}
    tax_path, map_path = folder / "taxonomy.yaml", folder / "openimages.yaml"
    tax_path.write_text(yaml.safe_dump(taxonomy), encoding="utf-8")
    map_path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return tax_path, map_path


# ---- variants (each in its own process) ---------------------------------------------------------


class _Clock:
    """Wall and CPU (all threads) seconds per stage: `laps["<stage>_s"]`, `["<stage>_cpu"]`."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, stage: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.laps[f"{stage}_s"], self.laps[f"{stage}_cpu"] = wall - self._wall, cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def run_ours(csv: Path, tax_path: Path, map_path: Path, out: Path) -> dict[str, float]:
    from label_system.mapping import load_mapping
    from label_system.taxonomy import load_taxonomy
    from tagger.data.assembly import assemble, with_folds
    from tagger.data.folds import assign_folds, stratification_matrix
    from tagger.data.manifest import write_manifest
    from tagger.data.readers import read_openimages

    taxonomy = load_taxonomy(tax_path)
    mapping = load_mapping(map_path, taxonomy)
    clock = _Clock()
    source = read_openimages(csv, out / "images")
    clock.lap("read")
    result = assemble([source], taxonomy, {"openimages": mapping}, hashing=False)
    clock.lap("assemble")
    rss_manifest = _maxrss()
    del source
    matrix = stratification_matrix(result.manifest, taxonomy)
    manifest = with_folds(result.manifest, assign_folds(matrix, 10, seed=0))
    clock.lap("folds")
    write_manifest(manifest, out / "manifest.parquet")
    clock.lap("write")
    return {
        **clock.laps,
        "images": manifest.num_rows,
        "positive_pairs": int(result.stats["positive_pairs"]),
        "known_pairs": int(result.stats["positive_pairs"] + result.stats["negative_pairs"]),
        "maxrss_to_manifest": rss_manifest,
    }


def run_pandas(csv: Path, tax_path: Path, map_path: Path, out: Path) -> dict[str, float]:
    import pandas as pd

    from label_system.mapping import load_mapping
    from label_system.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(tax_path)
    mapping = load_mapping(map_path, taxonomy).to_frame()
    up = pd.DataFrame(
        [(t, a) for t in taxonomy.tag_ids for a in (t, *taxonomy.ancestors(t))],
        columns=["tag", "implied"],
    )
    down = pd.DataFrame(
        [(a, t) for t in taxonomy.tag_ids for a in (t, *taxonomy.ancestors(t))],
        columns=["tag", "implied"],
    )
    clock = _Clock()
    df = pd.read_csv(csv)
    clock.lap("read")
    df["label"] = df["LabelName"].str.strip().str.lower()
    m = df.merge(mapping, on="label")
    pos = m[m["Confidence"] == 1].merge(up, on="tag")
    neg = m[(m["Confidence"] == 0) & ~m["partial"]].merge(down, on="tag")
    images = df["ImageID"].unique()
    tags = pos.groupby("ImageID")["implied"].agg(set).reindex(images)
    negatives = neg.groupby("ImageID")["implied"].agg(set).reindex(images)
    order = {t: i for i, t in enumerate(taxonomy.tag_ids)}
    pos_lists, known_lists = [], []
    for p, n in zip(tags, negatives, strict=True):
        p = p if isinstance(p, set) else set()
        n = n if isinstance(n, set) else set()
        pos_lists.append(sorted(p, key=order.__getitem__))
        known_lists.append(sorted(p | n, key=order.__getitem__))
    manifest = pd.DataFrame({"image_id": images, "tags": pos_lists, "known": known_lists})
    clock.lap("assemble")
    return {
        **clock.laps,
        "images": len(manifest),
        "positive_pairs": int(sum(map(len, pos_lists))),
        "known_pairs": int(sum(map(len, known_lists))),
        "maxrss_to_manifest": _maxrss(),
    }


def _maxrss() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


VARIANTS = {"ours": run_ours, "pandas": run_pandas}
# glibc raises its mmap threshold after big frees, so later mid-size temporaries come from the
# heap and fragment it: the peak RSS of one and the same run then varies by up to ~0.9x the CSV.
# A fixed 1 MiB threshold (a standard glibc tunable, worth setting for production jobs too)
# makes the figure repeatable. Both variants run with it.
VARIANT_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def run_variant(name: str, csv: Path, tax: Path, mapping: Path, out: Path) -> dict[str, float]:
    """Run one variant in a fresh Python process; its stats as a dict."""
    code = [sys.executable, __file__, "--variant", name, "--csv", str(csv), "--taxonomy",
            str(tax), "--mapping", str(mapping), "--work", str(out)]  # fmt: skip
    done = subprocess.run(code, capture_output=True, text=True, check=False, env=VARIANT_ENV)
    if done.returncode != 0:
        raise RuntimeError(f"variant {name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--images", type=int, help="default: rows / 10")
    parser.add_argument("--mids", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--taxonomy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mapping", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        stats = VARIANTS[args.variant](args.csv, args.taxonomy, args.mapping, args.work)
        stats["maxrss"] = _maxrss()
        print(json.dumps(stats))
        return
    work = Path(tempfile.mkdtemp(prefix="assemble_scale_"))
    try:
        images = args.images or max(1, args.rows // 10)
        t = time.perf_counter()
        csv = write_label_csv(work / "labels.csv", args.rows, images, args.mids, args.seed)
        tax, mapping = write_label_system(work, args.mids)
        size = csv.stat().st_size
        print(
            f"generated {args.rows:,} rows, {images:,} images, {args.mids} MIDs: "
            f"{size / 2**20:.0f} MiB CSV in {time.perf_counter() - t:.1f} s ({work})"
        )
        print(f"variants run with MALLOC_MMAP_THRESHOLD_={VARIANT_ENV['MALLOC_MMAP_THRESHOLD_']}")
        ours = run_variant("ours", csv, tax, mapping, work)
        report("ours", ours, args.rows, size)
        rate = args.rows / (ours["read_s"] + ours["assemble_s"])
        print(
            f"  then folds {ours['folds_s']:.2f} s, Parquet write {ours['write_s']:.2f} s; "
            f"CSV -> folded manifest on disk: {args.rows / _total(ours):,.0f} rows/s"
        )
        ratio = float("nan")
        if not args.skip_pandas:
            base = run_variant("pandas", csv, tax, mapping, work)
            report("pandas", base, args.rows, size)
            same = (base["positive_pairs"], base["known_pairs"], base["images"]) == (
                ours["positive_pairs"],
                ours["known_pairs"],
                ours["images"],
            )
            print(f"outputs agree (images, positive and known pairs): {same}")
            ratio = (base["read_s"] + base["assemble_s"]) / (ours["read_s"] + ours["assemble_s"])
        peak = ours["maxrss"] / size
        per_cpu = args.rows / (ours["read_cpu"] + ours["assemble_cpu"])
        print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(
            f"RESULT assemble_scale rows_per_s={rate:.0f} peak_mem_over_csv={peak:.2f} "
            f"vs_pandas={ratio:.1f} rows_per_cpu_s={per_cpu:.0f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _total(stats: dict[str, float]) -> float:
    return sum(stats.get(k, 0.0) for k in ("read_s", "assemble_s", "folds_s", "write_s"))


def report(name: str, stats: dict[str, float], rows: int, csv_size: int) -> None:
    core = stats["read_s"] + stats["assemble_s"]
    cpu = stats["read_cpu"] + stats["assemble_cpu"]
    print(
        f"{name:>6}: read {stats['read_s']:.2f} s + map/aggregate {stats['assemble_s']:.2f} s "
        f"= {core:.2f} s wall, {cpu:.2f} s CPU (all threads): {rows / core:,.0f} rows/s; "
        f"peak RSS {stats['maxrss'] / 2**20:,.0f} MiB = {stats['maxrss'] / csv_size:.2f} x CSV "
        f"(at the manifest: {stats['maxrss_to_manifest'] / csv_size:.2f} x); images "
        f"{stats['images']:,}, positive pairs {stats['positive_pairs']:,}, known pairs "
        f"{stats['known_pairs']:,}"
    )


if __name__ == "__main__":
    main()
