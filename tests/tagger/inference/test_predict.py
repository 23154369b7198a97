"""tagger.predict: tag selection, inputs, every awkward input kind, workers, outputs, resume."""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tagger
from label_system.taxonomy import Taxonomy
from tagger.bundle.model_bundle import Bundle, save_bundle
from tagger.inference.api import predict, write_predictions
from tagger.inference.engine import (
    Decoded,
    DecodePool,
    decode_input,
    default_workers,
)
from tagger.inference.inputs import count_inputs, iter_inputs
from tagger.inference.options import InputItem, PredictOptions
from tagger.inference.records import PredictionRecord, read_records
from tagger.inference.selection import TagSelector
from tests.tagger.bundle_fixtures import make_bundle, tiny_taxonomy, write_images
from tests.tagger.image_corpus import gradient_image, write_corpus

predictor_module = importlib.import_module("tagger.inference.engine")

# tiny taxonomy columns: animal, dog (parent animal), cat (parent animal), beach
THRESHOLDS = np.array([0.5, 0.3, np.nan, 0.2], dtype=np.float32)


def select(probs: list[float], **options: object) -> list[tuple[str, float, str]]:
    selector = TagSelector(tiny_taxonomy(), THRESHOLDS, PredictOptions(**options))
    (tags,) = selector(np.array([probs], dtype=np.float32))
    return [(t.id, round(t.score, 4), t.evidence) for t in tags]


def set_thresholds(bundle: Bundle, values: list[float]) -> Bundle:
    """A copy with these thresholds (NaN = disabled), report included so it survives a save."""
    thresholds = np.array(values, dtype=np.float32)
    report = bundle.threshold_report.copy()
    report["threshold"] = thresholds.astype(np.float64)
    report["status"] = np.where(np.isnan(thresholds), "disabled", "ok")
    return dataclasses.replace(bundle, thresholds=thresholds, threshold_report=report)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    """test_resnet at 32 px with low thresholds, so that every image gets some tags."""
    return set_thresholds(make_bundle(with_extras=False), [0.0, 0.0, np.nan, 0.0])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_corpus(folder)


# ---- tag selection (hand-worked) --------------------------------------------------------------


def test_thresholds_and_nan_disabled() -> None:
    # animal 0.4 < 0.5; dog 0.6 >= 0.3; cat disabled (NaN) despite 0.9; beach 0.25 >= 0.2
    assert select([0.4, 0.6, 0.9, 0.25]) == [
        ("dog", 0.6, "classifier"),
        ("beach", 0.25, "classifier"),
    ]


def test_score_equal_to_threshold_passes() -> None:
    assert select([0.0, 0.3, 0.0, 0.0]) == [("dog", 0.3, "classifier")]


def test_include_parents_takes_the_best_child_score() -> None:
    got = select([0.4, 0.6, 0.9, 0.25], include_parents=True)
    assert got == [
        ("dog", 0.6, "classifier"),
        ("animal", 0.6, "parent"),
        ("beach", 0.25, "classifier"),
    ]
    # a parent predicted on its own keeps its own score and evidence
    got = select([0.7, 0.6, 0.0, 0.0], include_parents=True)
    assert got == [("animal", 0.7, "classifier"), ("dog", 0.6, "classifier")]


def test_disabled_parent_is_never_added() -> None:
    thresholds = np.array([np.nan, 0.3, np.nan, 0.2], dtype=np.float32)
    selector = TagSelector(tiny_taxonomy(), thresholds, PredictOptions(include_parents=True))
    (tags,) = selector(np.array([[0.9, 0.6, 0.0, 0.0]], dtype=np.float32))
    assert [t.id for t in tags] == ["dog"]


def test_min_confidence_max_tags_and_categories() -> None:
    probs = [0.4, 0.6, 0.9, 0.25]
    assert select(probs, min_confidence=0.3) == [("dog", 0.6, "classifier")]
    assert select(probs, max_tags=1) == [("dog", 0.6, "classifier")]
    assert select(probs, include_categories=("scenes",), include_parents=True) == [
        ("beach", 0.25, "classifier")
    ]
    assert select([0.0, 0.0, 0.0, 0.0]) == []


def test_record_fields_and_language() -> None:
    selector = TagSelector(tiny_taxonomy(), THRESHOLDS, PredictOptions(language="de"))
    (tags,) = selector(np.array([[0.0, 0.6, 0.0, 0.0]], dtype=np.float32))
    (dog,) = tags
    # no German name in the tiny taxonomy: falls back to English
    assert (dog.name, dog.category, dog.parents, dog.boxes) == ("Dog", "animals", ("animal",), ())


def test_language_picks_translated_names() -> None:
    taxonomy = Taxonomy.from_dict({
        "name": "t", "version": "1",
        "categories": [{"id": "animals", "names": {"en": "Animals"}}],
        "tags": [{"id": "dog", "names": {"en": "Dog", "de": "Hund"}, "category": "animals"},
                 {"id": "cat", "names": {"en": "Cat"}, "category": "animals"}],
    })  # fmt: skip
    selector = TagSelector(taxonomy, np.zeros(2, np.float32), PredictOptions(language="de"))
    (tags,) = selector(np.array([[0.9, 0.8]], dtype=np.float32))
    assert [t.name for t in tags] == ["Hund", "Cat"]


def test_bad_selection_options_say_what_is_allowed() -> None:
    with pytest.raises(
        ValueError, match=r"unknown categories \['food'\]; allowed: \['animals', 'scenes'\]"
    ):
        TagSelector(tiny_taxonomy(), THRESHOLDS, PredictOptions(include_categories=("food",)))
    with pytest.raises(ValueError, match="thresholds have shape"):
        TagSelector(tiny_taxonomy(), THRESHOLDS[:2], PredictOptions())
    with pytest.raises(ValueError, match="max_tags"):
        PredictOptions(max_tags=0)
    with pytest.raises(ValueError, match="extra"):
        PredictOptions(max_labels=3)  # type: ignore[call-arg]


# ---- inputs -----------------------------------------------------------------------------------


def test_folder_inputs_are_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["b.JPG", "a.png", "sub/c.webp", "sub/deeper/d.heic", "notes.txt", "sub/e.json"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = list(iter_inputs(tmp_path))
    names = [Path(i.path).relative_to(tmp_path).as_posix() for i in items]
    assert names == ["a.png", "b.JPG", "sub/c.webp", "sub/deeper/d.heic"]
    assert all(i.image_id == i.path for i in items)
    assert count_inputs(tmp_path) == 4


def test_manifest_inputs(tmp_path: Path) -> None:
    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"image_id": ["id1", "id2"], "path": ["imgs/a.jpg", "/abs/b.jpg"]}).to_parquet(
        manifest
    )
    assert list(iter_inputs(manifest)) == [
        InputItem("id1", str(tmp_path / "imgs/a.jpg")),
        InputItem("id2", "/abs/b.jpg"),
    ]
    assert count_inputs(manifest) == 2
    pd.DataFrame({"file": ["a.jpg"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: manifest has no column 'path'"):
        list(iter_inputs(tmp_path / "bad.parquet"))


def test_list_inputs(tmp_path: Path) -> None:
    items = list(iter_inputs([tmp_path / "a.jpg", "b.jpg", InputItem("k", "c.jpg")]))
    assert items == [InputItem(str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg")),
                     InputItem("b.jpg", "b.jpg"), InputItem("k", "c.jpg")]  # fmt: skip
    with pytest.raises(TypeError, match="entry 3"):
        list(iter_inputs([3]))  # type: ignore[list-item]


# ---- every input kind -------------------------------------------------------------------------


def test_every_input_kind_yields_exactly_one_record(
    bundle: Bundle, corpus: tuple[Path, dict[str, str | None]]
) -> None:
    folder, expected = corpus
    paths = [folder / name for name in expected]
    records = list(predict(paths, bundle, batch_size=4, workers=2))
    assert [r.image_id for r in records] == [str(p) for p in paths]
    for record, (name, code) in zip(records, expected.items(), strict=True):
        if code is None:
            assert record.error is None, (name, record.error)
            assert record.tags, name  # thresholds 0: every enabled tag
            assert record.width and record.height, name
        else:
            assert record.error is not None and record.error.code == code, (name, record.error)
            assert record.tags == ()
    by_name = {Path(r.path).name: r for r in records}
    assert (by_name["exif_rot6.jpg"].width, by_name["exif_rot6.jpg"].height) == (96, 64)
    assert (by_name["panorama.jpg"].width, by_name["panorama.jpg"].height) == (20_000, 300)
    assert by_name["truncated.jpg"].width == 96  # the header was fine: size known


def test_exif_rotation_is_applied_before_the_model() -> None:
    # a displayed 96x64 pattern stored rotated: decoding must give the same pixels either way
    import tempfile

    from tests.tagger.image_corpus import pattern_image, write_oriented_jpeg

    with tempfile.TemporaryDirectory() as tmp:
        views = []
        for orientation in (1, 6, 8):
            path = Path(tmp) / f"o{orientation}.jpg"
            write_oriented_jpeg(path, pattern_image(96, 64), orientation)
            decoded = decode_input(
                InputItem("x", str(path)), size=32, fit="squash", max_pixels=10**8
            )
            views.append(decoded.pixels.astype(int))  # type: ignore[union-attr]
    assert np.abs(views[0] - views[1]).mean() < 8 and np.abs(views[0] - views[2]).mean() < 8


def test_worker_kinds_agree(bundle: Bundle, tmp_path: Path) -> None:
    paths = [*write_images(tmp_path, n=5), tmp_path / "missing.png"]
    runs = [
        list(predict(paths, bundle, batch_size=2, workers=0, device="cpu")),
        list(predict(paths, bundle, batch_size=2, workers=2, worker_kind="thread", device="cpu")),
        list(predict(paths, bundle, batch_size=3, workers=1, worker_kind="process", device="cpu")),
    ]
    for other in runs[1:]:
        assert [r.image_id for r in other] == [r.image_id for r in runs[0]]
        for a, b in zip(runs[0], other, strict=True):
            assert [t.id for t in a.tags] == [t.id for t in b.tags]
            np.testing.assert_allclose(
                [t.score for t in a.tags], [t.score for t in b.tags], atol=1e-5
            )


# ---- crash isolation --------------------------------------------------------------------------


def _crash_on_boom(item: str) -> str:
    if item == "boom":
        os._exit(3)  # a hard crash: no exception, no cleanup
    return item.upper()


def _crashing_decode(item: InputItem, **kwargs: object) -> Decoded:
    if item.path.endswith("boom.png"):
        os._exit(3)
    return decode_input(item, **kwargs)  # type: ignore[arg-type]


def test_decode_pool_survives_a_dying_worker() -> None:
    items = ["a", "b", "boom", "c", "d", "e"]
    pool = DecodePool(_crash_on_boom, workers=2, window=3, on_crash=lambda i: f"crashed:{i}")
    with pool:
        assert list(pool.map(items)) == ["A", "B", "crashed:boom", "C", "D", "E"]
    assert pool.crashes >= 1


def test_decode_pool_reads_inputs_lazily() -> None:
    consumed = []

    def source():
        for i in range(10**6):
            consumed.append(i)
            yield str(i)

    with DecodePool(str.upper, workers=1, kind="thread", window=4, on_crash=str) as pool:
        results = pool.map(source())
        assert [next(results) for _ in range(3)] == ["0", "1", "2"]
    assert len(consumed) <= 3 + 4 + 1


def test_predict_streams_with_bounded_lookahead(bundle: Bundle, tmp_path: Path) -> None:
    (image,) = write_images(tmp_path, n=1)
    consumed = []

    def endless():  # an input far too long to hold: only a window of it is ever read
        for i in range(10**9):
            consumed.append(i)
            yield InputItem(f"id{i}", str(image))

    records = predict(endless(), bundle, batch_size=2, workers=1)
    first = [next(records) for _ in range(4)]
    assert [r.image_id for r in first] == ["id0", "id1", "id2", "id3"]
    assert len(consumed) <= 4 + (2 * 2 + 1) + 1
    records.close()


def _images_with_copy(folder: Path, name: str, at: int) -> list[Path]:
    """Four test images and a valid copy of the first named `name`, inserted at `at`."""
    paths = write_images(folder, n=4)
    (folder / name).write_bytes(paths[0].read_bytes())
    paths.insert(at, folder / name)
    return paths


def test_predict_survives_a_decoder_crash(
    bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _images_with_copy(tmp_path, "boom.png", at=2)
    monkeypatch.setattr(predictor_module, "decode_input", _crashing_decode)
    records = list(predict(paths, bundle, batch_size=2, workers=2, worker_kind="process"))
    assert [Path(r.path).name for r in records] == [p.name for p in paths]
    assert records[2].error is not None and records[2].error.code == "decode_failed"
    assert "died" in records[2].error.message
    assert all(r.ok and r.tags for i, r in enumerate(records) if i != 2)


# ---- options through the API ------------------------------------------------------------------


def test_options_reach_the_records(bundle: Bundle, tmp_path: Path) -> None:
    paths = write_images(tmp_path, n=3)
    plain = list(predict(paths, bundle, workers=0))
    assert all({t.id for t in r.tags} == {"animal", "dog", "beach"} for r in plain)  # cat NaN
    for r in plain:
        assert [t.score for t in r.tags] == sorted((t.score for t in r.tags), reverse=True)
    assert all(len(r.tags) == 1 for r in predict(paths, bundle, workers=0, max_tags=1))
    assert all(r.tags == () for r in predict(paths, bundle, workers=0, min_confidence=1.0))
    scenes = list(predict(paths, bundle, workers=0, include_categories=["scenes"]))
    assert all([t.id for t in r.tags] == ["beach"] for r in scenes)


def test_parents_come_from_the_bundle_thresholds(bundle: Bundle, tmp_path: Path) -> None:
    paths = write_images(tmp_path, n=2)
    only_dog = set_thresholds(bundle, [2.0, 0.0, np.nan, 2.0])
    without = list(predict(paths, only_dog, workers=0))
    with_parents = list(predict(paths, only_dog, workers=0, include_parents=True))
    assert all([t.id for t in r.tags] == ["dog"] for r in without)
    for r in with_parents:
        assert [(t.id, t.evidence) for t in r.tags] == [("dog", "classifier"), ("animal", "parent")]
        assert r.tags[1].score >= r.tags[0].score


def test_model_from_a_bundle_directory(bundle: Bundle, tmp_path: Path) -> None:
    directory = save_bundle(bundle, tmp_path / "bundle")
    paths = write_images(tmp_path / "imgs", n=2)
    from_dir = list(tagger.predict([str(p) for p in paths], str(directory), workers=0))
    in_memory = list(predict([str(p) for p in paths], bundle, workers=0))
    assert [[t.id for t in r.tags] for r in from_dir] == [[t.id for t in r.tags] for r in in_memory]


def test_import_tagger_does_not_import_torch() -> None:
    code = "import sys, tagger; assert callable(tagger.predict); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- outputs and resume -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_write_predictions_each_format_and_resume(
    bundle: Bundle, tmp_path: Path, suffix: str
) -> None:
    paths = [str(p) for p in write_images(tmp_path / "imgs", n=5)] + [str(tmp_path / "gone.jpg")]
    out = tmp_path / f"out{suffix}"
    first = write_predictions(paths[:3], bundle, out, chunk_size=2, workers=0)
    assert (first.images, first.tagged, first.skipped) == (3, 3, 0)
    with pytest.raises(FileExistsError):
        write_predictions(paths, bundle, out, workers=0)
    second = write_predictions(paths, bundle, out, mode="resume", chunk_size=2, workers=0)
    assert (second.images, second.tagged, second.skipped, second.errors) == (
        3,
        2,
        3,
        {"missing": 1},
    )
    records = list(read_records(out))
    assert sorted(r.image_id for r in records) == sorted(paths)
    expected = {r.image_id: r for r in predict(paths, bundle, workers=0)}
    for r in records:
        assert [t.id for t in r.tags] == [t.id for t in expected[r.image_id].tags]
    assert "missing 1" in second.to_text()


def test_cli_options_and_formats(
    bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tagger.cli import main

    model = save_bundle(bundle, tmp_path / "bundle")
    paths = [str(p) for p in write_images(tmp_path / "imgs", n=3)]
    out = tmp_path / "out.csv"
    common = ["--model", str(model), "--workers", "0", "--no-progress"]
    assert main(["predict", *paths, "--out", str(out), *common, "--max-tags", "1"]) == 0
    summary = capsys.readouterr().out
    assert "images 3, tagged 3, errors: none" in summary and "images/s" in summary
    assert [len(r.tags) for r in read_records(out)] == [1, 1, 1]
    assert main(["predict", *paths, "--out", str(out), *common]) == 2  # exists: say so
    assert "--resume or --overwrite" in capsys.readouterr().err
    args = ["--overwrite", "--include-categories", "animals", "--include-parents",
            "--min-confidence", "0.01", "--language", "de", "--backend", "onnx"]  # fmt: skip
    assert main(["predict", str(tmp_path / "imgs"), "--out", str(out), *common, *args]) == 0
    for record in read_records(out):
        assert {t.category for t in record.tags} == {"animals"}


def _run_cli(*args: str) -> subprocess.Popen[str]:
    code = "import sys; from tagger.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "predict", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_resume_after_kill_9(bundle: Bundle, tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("tagger.cli")
    model = save_bundle(bundle, tmp_path / "bundle")
    images = tmp_path / "imgs"
    images.mkdir()
    n = 80
    for i in range(n):
        gradient_image(40 + i % 7, 30).save(images / f"{i:03d}.png")
    (images / "999_bad.png").write_bytes(b"not an image")
    out = tmp_path / f"out{suffix}"
    args = [str(images), "--model", str(model), "--out", str(out), "--workers", "0",
            "--chunk-size", "5", "--no-progress"]  # fmt: skip
    proc = _run_cli(*args, "--batch-size", "1")  # slow: one fsync per image
    try:
        _wait_for_some_records(out, proc, at_least=10)
    finally:
        proc.kill()  # SIGKILL: no cleanup, possibly mid-write
        proc.communicate()
    partial = {r.image_id for r in read_records(out)}
    assert 10 <= len(partial) < n + 1, "the kill must land mid-way"
    finished = _run_cli(*args, "--resume", "--batch-size", "16")
    stdout, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 1, stderr  # 999_bad.png failed: exit code 1
    assert "skipped (done before)" in stdout
    ids = [r.image_id for r in read_records(out)]
    assert len(ids) == len(set(ids)) == n + 1
    assert set(ids) == {str(p) for p in images.iterdir()}
    bad = [r for r in read_records(out) if r.error is not None]
    assert [(Path(r.path).name, r.error.code) for r in bad] == [("999_bad.png", "not_an_image")]  # type: ignore[union-attr]


def _wait_for_some_records(out: Path, proc: subprocess.Popen[str], at_least: int) -> None:
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"predict ended before the kill: {proc.communicate()}")
        try:
            if sum(1 for _ in read_records(out)) >= at_least:
                return
        except (OSError, ValueError):
            pass  # a part file renamed under us; look again
        time.sleep(0.05)
    pytest.fail("no records appeared within 120 s")


def test_records_are_plain_data(bundle: Bundle, tmp_path: Path) -> None:
    (path,) = write_images(tmp_path, n=1)
    (record,) = predict([path], bundle, workers=0)
    assert PredictionRecord.from_dict(record.to_dict()).image_id == str(path)


def test_worker_defaults_follow_cores_and_device() -> None:
    assert default_workers(2) == 2
    assert default_workers(16) == 8  # CPU inference: half the cores decode
    assert default_workers(16, device="cuda:0") == 15  # the GPU needs one feeder core
    assert default_workers(1, device="cuda") == 2
    assert PredictOptions().worker_kind == "process"  # a crashing codec costs one image


HEAP_PROBE = """
import resource
import torch  # its CPU allocator is plain malloc (numpy's asks for huge pages)
from tagger.inference.runtime import prefer_heap_reuse
print(prefer_heap_reuse())
def batch():  # two 48 MB blocks, above glibc's largest mmap threshold, like activations
    a = torch.ones(48 << 20, dtype=torch.uint8)
    b = torch.ones(48 << 20, dtype=torch.uint8)
    del a, b
for _ in range(12):  # warm-up: the heap grows to its working size
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_heap_reuse_stops_faulting_in_freed_memory_again() -> None:
    def probe(**env: str) -> tuple[str, int]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        done = subprocess.run(
            [sys.executable, "-c", HEAP_PROBE], env=base | env, capture_output=True, text=True,
            check=True, timeout=60,
        )  # fmt: skip
        applied, faults = done.stdout.split()
        return applied, int(faults)

    applied, faults = probe()
    assert applied == "True"
    assert faults < 2_000  # freed blocks are reused: not 4 x 2 x 12k pages faulted in again
    applied, faults = probe(MALLOC_ARENA_MAX="2")  # the user tunes malloc: left alone
    assert applied == "False"
    assert faults > 90_000  # glibc's default: a fresh mmap per block, every page faulted in


# ---- hung decoders ----------------------------------------------------------------------------


def _hang_on_hang(item: str) -> str:
    if item == "hang":
        time.sleep(3600)  # a codec stuck in a loop
    return item.upper()


def _hanging_decode(item: InputItem, **kwargs: object) -> Decoded:
    if Path(item.path).name == "hang.png":
        time.sleep(3600)
    return decode_input(item, **kwargs)  # type: ignore[arg-type]


def test_pool_gives_up_on_a_hung_item_and_goes_on() -> None:
    items = ["a", "b", "hang", "c", "d", "e"]
    pool = DecodePool(
        _hang_on_hang, workers=2, window=3, on_crash=lambda i: f"crashed:{i}", timeout=1.0,
        on_timeout=lambda i: f"timeout:{i}",
    )  # fmt: skip
    start = time.perf_counter()
    with pool:
        assert list(pool.map(items)) == ["A", "B", "timeout:hang", "C", "D", "E"]
    assert pool.timeouts == 1
    assert time.perf_counter() - start < 30  # not the hour the codec would take


def test_predict_records_a_hung_decode_and_finishes(
    bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _images_with_copy(tmp_path, "hang.png", at=1)
    monkeypatch.setattr(predictor_module, "decode_input", _hanging_decode)
    records = list(predict(paths, bundle, batch_size=2, workers=2, decode_timeout=1.0))
    assert [Path(r.path).name for r in records] == [p.name for p in paths]
    assert records[1].error is not None and records[1].error.code == "decode_failed"
    assert "decode timeout 1 s" in records[1].error.message
    assert all(r.error is None for i, r in enumerate(records) if i != 1)
    with pytest.raises(ValueError, match="decode_timeout"):
        PredictOptions(decode_timeout=0)
