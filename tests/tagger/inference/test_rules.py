"""Prior rules at prediction time: applied in the Predictor (every engine and backend), with the
rule named in the record, and records that carry it through every output format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from label_system.priors import PriorRules
from tagger.bundle.model_bundle import Bundle, read_bundle, save_bundle
from tagger.inference.api import predict
from tagger.inference.engine import Predictor
from tagger.inference.options import InputItem, PredictOptions
from tagger.inference.records import (
    PredictionRecord,
    TagPrediction,
    open_writer,
    read_records,
)
from tagger.inference.rules import RuleStep
from tagger.priors.apply import compile_rules, violations
from tests.tagger.bundle_fixtures import make_bundle, write_images

# tiny taxonomy columns: animal, dog (parent animal), cat (parent animal), beach


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    """dog excludes beach (and the taxonomy: dog -> animal, cat -> animal)."""
    b = make_bundle(with_extras=False)
    priors = PriorRules.from_dict({"excludes": [{"tags": ["dog", "beach"]}]}, b.taxonomy)
    thresholds = np.array([0.6, 0.5, 0.5, 0.4], dtype=np.float32)
    return dataclasses.replace(b, priors=priors, thresholds=thresholds)


class FixedBackend:
    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.probs[: len(pixels)]


def decoded(n: int) -> list:
    from tagger.inference.decoding import Decoded

    item = InputItem("x", "x")
    return [Decoded(item, np.zeros((32, 32, 3), np.uint8), 32, 32, None) for _ in range(n)]


def test_the_predictor_applies_the_rules_and_names_them(bundle: Bundle) -> None:
    predictor = Predictor(bundle, PredictOptions(device="cpu"))
    probs = np.array([[0.1, 0.9, 0.0, 0.8],  # dog wins over beach; animal implied by dog
                      [0.1, 0.55, 0.0, 0.95]], dtype=np.float32)  # fmt: skip
    predictor.backend = FixedBackend(probs)
    first, second = predictor.predict_decoded(decoded(2))
    tags = {t.id: t for t in first.tags}
    assert set(tags) == {"dog", "animal"}, "beach is excluded by the stronger dog"
    assert tags["animal"].evidence == "rule" and tags["animal"].rule == "animal: parent of dog"
    assert tags["dog"].evidence == "classifier" and tags["dog"].rule is None
    # beach is further above its threshold (0.95 vs 0.4) than dog (0.55 vs 0.5): beach wins
    assert {t.id for t in second.tags} == {"beach"}


def test_a_bundle_without_rules_is_unchanged(bundle: Bundle) -> None:
    step = RuleStep(bundle.taxonomy, None, bundle.thresholds)
    probs = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    scores, source = step(probs)
    assert scores is probs and source is None


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_every_backend_gives_consistent_records(
    bundle: Bundle, tmp_path: Path, backend: str
) -> None:
    directory = save_bundle(bundle, tmp_path / "bundle")
    assert read_bundle(directory).priors is not None, "the rules travel in the bundle"
    paths = write_images(tmp_path / "imgs", n=6)
    low = dataclasses.replace(bundle, thresholds=np.full(4, 0.05, np.float32))
    records = list(predict(paths, low, workers=0, backend=backend))
    rules = compile_rules(low.taxonomy, low.priors)
    for r in records:
        present = np.zeros((1, 4), np.float32)
        for t in r.tags:
            present[0, low.taxonomy.index(t.id)] = 1.0
        assert violations(present, rules, np.full(4, 0.5, np.float32)) == {
            "implies": 0,
            "excludes": 0,
        }
    assert all(r.tags for r in records)


def rule_record(i: int) -> PredictionRecord:
    tags = (
        TagPrediction("dog", "Dog", 0.9, "animals", ("animal",)),
        TagPrediction("animal", "Animal", 0.9, "animals", (), "rule", rule="animal: parent of dog"),
    )
    return PredictionRecord(f"img{i}", f"/x/img{i}.jpg", 10, 20, tags)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_rule_evidence_round_trips_in_every_format(tmp_path: Path, suffix: str) -> None:
    records = [rule_record(i) for i in range(3)]
    out = tmp_path / f"out{suffix}"
    writer = open_writer(out, chunk_size=2)
    writer.write(records)
    writer.close()
    assert list(read_records(out)) == records
    data = records[0].to_dict()["tags"]
    assert "rule" not in data[0] and data[1]["rule"] == "animal: parent of dog"
