"""Mining candidate rules: counts over known cells only, hand-worked statistics, consistency with
the current rules, the review file, label-only tables and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from label_system import PriorRules, load_default_taxonomy, load_priors
from label_system.mapping import load_default_mapping
from tagger.cli import main
from tagger.data.manifest import MANIFEST_COLUMNS, write_manifest
from tagger.priors.mining import (
    MiningConfig,
    label_table_targets,
    mine_rules,
    pair_counts,
    review_yaml,
    write_review,
)
from tests.tagger.bundle_fixtures import tiny_taxonomy

# tiny taxonomy columns: animal, dog (parent animal), cat (parent animal), beach


def test_unknown_cells_count_neither_way() -> None:
    targets = np.array([[1, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    known = np.array([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=bool)  # row 1: B unknown
    c = pair_counts(targets, known)
    # A -> B over rows 0, 2, 3 (B known): n 3, A positive 2, B positive 2, both 1
    assert (c["n"][0, 1], c["n_a"][0, 1], c["n_b"][0, 1], c["n_ab"][0, 1]) == (3, 2, 2, 1)
    assert c["n_a"][0, 0] == 3, "A alone: every row where A is known and positive"


def counts_for(rows: list[tuple[set[str], set[str]]]) -> dict[str, np.ndarray]:
    tax = tiny_taxonomy()
    t = np.zeros((len(rows), len(tax)), np.float32)
    k = np.zeros((len(rows), len(tax)), bool)
    for i, (pos, kn) in enumerate(rows):
        for tag in kn | pos:
            k[i, tax.index(tag)] = True
        for tag in pos:
            t[i, tax.index(tag)] = 1
    return pair_counts(t, k)


def test_a_hand_worked_implication_and_exclusion() -> None:
    tax = tiny_taxonomy()
    everything = set(tax.tag_ids)
    # 10 beach photos, all with a cat; 5 more cats; 10 dogs without cats or beaches; 20 empty
    rows = [({"beach", "cat", "animal"}, everything)] * 10 + [({"cat", "animal"}, everything)] * 5
    rows += [({"dog", "animal"}, everything)] * 10 + [(set(), everything)] * 20
    cfg = MiningConfig(min_support=5, min_confidence=0.9, min_lift=1.5, min_expected=2.0)
    mined = mine_rules(counts_for(rows), tax, PriorRules([], []), cfg)
    imp = mined.candidates[mined.candidates["kind"] == "implies"]
    beach_cat = imp[(imp["a"] == "beach") & (imp["b"] == "cat")].iloc[0]
    # P(cat | beach) = 10/10; P(cat) = 15/45 -> lift 3
    assert beach_cat["confidence"] == 1.0 and beach_cat["lift"] == pytest.approx(3.0)
    assert beach_cat["n_ab"] == 10
    assert not ((imp["a"] == "cat") & (imp["b"] == "animal")).any(), "the taxonomy says so"
    exc = mined.candidates[mined.candidates["kind"] == "excludes"]
    pairs = {frozenset((a, b)) for a, b in zip(exc["a"], exc["b"], strict=True)}
    # dog and cat never together, expected 10 * 15 / 45
    assert frozenset(("dog", "cat")) in pairs
    row = exc[exc.apply(lambda r: {r["a"], r["b"]} == {"dog", "cat"}, axis=1)].iloc[0]
    assert row["expected"] == pytest.approx(10 * 15 / 45) and row["n_ab"] == 0


def test_candidates_that_contradict_the_rules_are_listed_apart() -> None:
    tax = tiny_taxonomy()
    everything = set(tax.tag_ids)
    rows = [({"beach", "cat", "animal"}, everything)] * 10 + [(set(), everything)] * 30
    current = PriorRules([], [("cat", "beach")])  # beach -> cat would contradict it
    cfg = MiningConfig(min_support=5, min_expected=100.0)
    mined = mine_rules(counts_for(rows), tax, current, cfg)
    rejected = mined.rejected.set_index(["a", "b"])["reason"]
    assert "contradiction" in rejected[("beach", "cat")]
    assert "implication cycle" in rejected[("animal", "cat")], "cat -> animal is a parent edge"
    assert not ((mined.candidates["a"] == "beach") & (mined.candidates["b"] == "cat")).any()


def test_the_review_file_is_a_priors_file_with_statistics(tmp_path: Path) -> None:
    tax = tiny_taxonomy()
    everything = set(tax.tag_ids)
    rows = [({"beach", "cat", "animal"}, everything)] * 10 + [({"cat", "animal"}, everything)] * 5
    rows += [({"dog", "animal"}, everything)] * 10 + [(set(), everything)] * 20
    cfg = MiningConfig(min_support=5, min_expected=2.0)
    mined = mine_rules(counts_for(rows), tax, PriorRules([], []), cfg)
    path = write_review(mined, tmp_path / "mined.yaml", header="source: test")
    text = path.read_text()
    assert "# support 10, confidence 1.000, lift 3.00" in text and "# source: test" in text
    rules = load_priors(path, tax)  # what a reviewer would merge loads and checks as is
    assert ("beach", "cat") in rules.implies and ("dog", "cat") in rules.excludes
    assert len(pd.read_csv(path.with_suffix(".csv"))) == len(mined.candidates) + len(mined.rejected)
    empty = mine_rules(counts_for([(set(), everything)] * 5), tax, None, cfg)
    assert yaml.safe_load(review_yaml(empty)) == {"implies": [], "excludes": []}


def test_label_only_tables_map_through_the_vocabulary(tmp_path: Path) -> None:
    tax = load_default_taxonomy()
    csv = tmp_path / "labels.csv"
    csv.write_text("image_id,labels\n1,dog|person\n2,train\n3,\n")
    targets, known = label_table_targets(csv, load_default_mapping("voc", tax), tax)
    assert targets.shape == (3, len(tax))
    assert targets[0, tax.index("dog")] == 1 and targets[0, tax.index("animal")] == 1
    assert known[2, tax.index("dog")] and not targets[2].any(), "VOC is exhaustive: known absent"
    assert not known[2, tax.index("beach")], "beach is not in VOC's vocabulary: unknown"
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,labels\n1,dog|unicorn\n")
    with pytest.raises(
        ValueError, match=r"bad.csv: labels not in the 'voc' mapping: \['unicorn'\]"
    ):
        label_table_targets(bad, load_default_mapping("voc", tax), tax)


def write_manifest_of(tmp_path: Path, n: int = 60) -> Path:
    rows = []
    for i in range(n):
        tags = ["forest", "tree", "plant", "outdoor"] if i % 3 == 0 else ["kitchen", "indoor"]
        rows.append({
            "image_id": f"i{i}", "path": f"/x/i{i}.jpg", "content_hash": "", "width": 1,
            "height": 1, "source": "s", "sources": ["s"], "tags": tags,
            "known": ["forest", "tree", "plant", "outdoor", "kitchen", "indoor", "beach"],
            "provenance": [], "boxes": [], "mask_path": None, "fold": i % 5,
        })  # fmt: skip
    return write_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), tmp_path / "m.parquet")


def test_cli_mines_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest_of(tmp_path)
    out = tmp_path / "review" / "mined.yaml"
    code = main(["priors", "mine", str(manifest), "--out", str(out), "--min-support", "5",
                 "--min-expected", "3"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    text = out.read_text()
    assert "kitchen" in text and "forest" in text
    assert "review:" in capsys.readouterr().out


def test_cli_checks_arguments_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["priors", "mine", str(tmp_path / "missing.parquet")]) == 2
    assert "manifest: no file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["priors", "mine", "m.parquet", "--min-confidence", "1.5"])
    assert "must be in (0, 1]" in capsys.readouterr().err
    manifest = write_manifest_of(tmp_path)
    assert main(["priors", "mine", str(manifest), "--labels", "nocolon"]) == 2
    assert "expected CSV:VOCABULARY" in capsys.readouterr().err
