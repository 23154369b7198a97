"""The CUDA code paths: training under each AMP mode, resume on the GPU, prediction on the GPU.

Skipped without CUDA; on a GPU machine: `pytest -m cuda tests/tagger/test_cuda.py` (< 1 min).
The models are tiny (resnet18 at 32 px for training, timm `test_resnet` at 32 px for prediction)
and the data is drawn on the fly by the helpers the CPU tests use.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tagger.bundle.model_bundle import Bundle
from tagger.inference.api import predict
from tagger.inference.engine import Predictor, TorchBackend, create_backend, preprocessing_of
from tagger.inference.options import PredictOptions
from tagger.inference.records import PredictionRecord
from tagger.train.checkpoint import read_checkpoint_meta, scoped_rng
from tagger.train.model import create_model
from tagger.train.training import DistContext, TrainConfig, Trainer, split_manifest, train
from tests.tagger.bundle_fixtures import make_bundle, write_images
from tests.tagger.inference.test_predict import set_thresholds
from tests.tagger.synthetic_training import SyntheticData, make_synthetic_data
from tests.tagger.train.test_training import _config, _Interrupt, _StopAfter

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# GPU and CPU probabilities may differ this much: cuDNN runs fp32 convolutions in TF32 by default
SCORE_TOL = 2e-3


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    return make_synthetic_data(tmp_path_factory.mktemp("cuda_train_data"), n_images=24)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six images, an unreadable file mid-batch and a missing file at the end."""
    folder = tmp_path_factory.mktemp("cuda_predict")
    images = write_images(folder, n=6)
    broken = folder / "broken.png"
    broken.write_bytes(b"not an image")
    return [*images[:3], broken, *images[3:], folder / "missing.png"]


def _auto_amp_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _create_trainer(data: SyntheticData, cfg: TrainConfig) -> Trainer:
    """A single-process trainer, its model drawn from seeded RNGs as `train()` does."""
    train_split, val_split = split_manifest(data.manifest, data.taxonomy, cfg.data)
    with scoped_rng(cfg.seed, cuda_devices=[0]):
        return Trainer(cfg, train_split, val_split, data.taxonomy, [], DistContext())


# ---- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_train_on_cuda_checkpoint_and_resume(data: SyntheticData, tmp_path: Path, amp: str) -> None:
    cfg = _config(data, tmp_path, device="cuda", amp=amp)
    with pytest.raises(_Interrupt):
        train(cfg, data.manifest, data.taxonomy, callbacks=[_StopAfter(1)])
    last = tmp_path / "last"
    assert read_checkpoint_meta(last)["epoch"] == 1
    # the weights are plain float32 CPU safetensors (no bf16/fp16 leaks from autocast) ...
    after_one = load_file(last / "model.safetensors")
    assert {t.device.type for t in after_one.values()} == {"cpu"}
    assert {t.dtype for t in after_one.values() if t.is_floating_point()} == {torch.float32}
    create_model(cfg.model.to_model_config(len(data.taxonomy))).load_state_dict(after_one)
    # ... and the rest of the state loads on a CPU-only machine; GradScaler state iff fp16
    state = torch.load(last / "state.pt", map_location="cpu", weights_only=True)
    scaled = amp == "fp16" or _auto_amp_dtype() == torch.float16
    assert bool(state["scaler"]) == scaled
    if scaled:
        assert math.isfinite(state["scaler"]["scale"]) and state["scaler"]["scale"] > 0

    result = train(cfg, data.manifest, data.taxonomy, resume=last)

    assert result.epochs_completed == 2 and read_checkpoint_meta(last)["epoch"] == 2
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    for h in result.history:
        assert math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]), h
    assert result.model is not None
    assert {p.device.type for p in result.model.parameters()} == {"cuda"}
    final = load_file(last / "model.safetensors")  # epoch 2 really trained
    assert not torch.equal(after_one["conv1.weight"], final["conv1.weight"])


@pytest.mark.parametrize("amp", ["auto", "bf16", "fp16", "off"])
def test_each_amp_mode_runs_an_epoch_on_cuda(data: SyntheticData, tmp_path: Path, amp: str) -> None:
    cfg = _config(data, tmp_path, device="cuda", amp=amp, schedule={"epochs": 1})
    trainer = _create_trainer(data, cfg)
    expected = {
        "auto": _auto_amp_dtype(),
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "off": torch.float32,
    }[amp]
    assert trainer.device == torch.device("cuda", 0)
    assert {p.device for p in trainer.model.parameters()} == {trainer.device}
    assert trainer.amp_dtype == (None if amp == "off" else expected)
    assert trainer.scaler.is_enabled() == (expected == torch.float16)
    head_dtypes: set[torch.dtype] = set()
    trainer.model.get_submodule("fc").register_forward_hook(
        lambda module, args, out: head_dtypes.add(out.dtype)
    )
    with scoped_rng(cfg.seed, cuda_devices=[0]):
        result = trainer.run()

    assert head_dtypes == {expected}  # autocast ran the head in that precision (train and eval)
    assert result.epochs_completed == 1 and math.isfinite(result.history[0]["train_loss"])
    assert read_checkpoint_meta(result.last_checkpoint)["epoch"] == 1


# ---- prediction -------------------------------------------------------------------------------


def _scores(record: PredictionRecord) -> dict[str, float]:
    return {t.id: t.score for t in record.tags}


def _outline(records: list[PredictionRecord]) -> list[tuple[object, ...]]:
    """Everything of the records but the tags: id, path, size, error, in order."""
    return [(r.image_id, r.path, r.width, r.height, r.error) for r in records]


def test_cuda_predictions_match_cpu(inputs: list[Path]) -> None:
    # thresholds 0: every tag is emitted, so the records carry every score
    every_tag = set_thresholds(make_bundle(with_extras=False), [0.0] * 4)
    options = {"batch_size": 3, "workers": 2}
    cpu = list(predict(inputs, every_tag, device="cpu", **options))
    gpu = list(predict(inputs, every_tag, device="cuda", **options))

    assert _outline(gpu) == _outline(cpu)
    codes = [r.error.code if r.error else None for r in cpu]
    assert codes == [None] * 3 + ["not_an_image"] + [None] * 3 + ["missing"]
    for c, g in zip(cpu, gpu, strict=True):
        assert _scores(g).keys() == _scores(c).keys()
        ids = sorted(_scores(c))
        got = [_scores(g)[t] for t in ids]
        np.testing.assert_allclose(got, [_scores(c)[t] for t in ids], rtol=0, atol=SCORE_TOL)

    # thresholds at each tag's median CPU score, so that tags are both on and off
    cpu_scores = [_scores(r) for r in cpu]
    tag_ids = every_tag.tag_ids
    ok_scores = np.array([[s[t] for t in tag_ids] for s in cpu_scores if s], dtype=np.float32)
    cut = set_thresholds(every_tag, np.median(ok_scores, axis=0).tolist())
    threshold = dict(zip(tag_ids, cut.thresholds.tolist(), strict=True))
    cpu_cut = list(predict(inputs, cut, device="cpu", **options))
    gpu_cut = list(predict(inputs, cut, device="cuda", **options))

    assert _outline(gpu_cut) == _outline(cpu)
    compared = {True: 0, False: 0}  # decided (not borderline) cells, by CPU emitted or not
    for c, g, scores in zip(cpu_cut, gpu_cut, cpu_scores, strict=True):
        # A tag is emitted when score >= threshold. With |gpu - cpu| <= SCORE_TOL (checked
        # above), a CPU score more than SCORE_TOL above its threshold keeps the GPU score above
        # it, and one more than SCORE_TOL below keeps it below: both devices must agree. Only
        # a tag whose CPU score lies within SCORE_TOL of its threshold may flip, so those
        # borderline tags are left out of the comparison.
        borderline = {t for t, s in scores.items() if abs(s - threshold[t]) <= SCORE_TOL}
        cpu_tags = {t.id for t in c.tags}
        assert {t.id for t in g.tags} - borderline == cpu_tags - borderline
        for t in g.tags:
            assert abs(t.score - scores[t.id]) <= SCORE_TOL
        for t in set(scores) - borderline:
            compared[t in cpu_tags] += 1
    assert compared[True] > 0 and compared[False] > 0  # the comparison is not vacuous


def test_device_cuda_0_string(inputs: list[Path]) -> None:
    bundle = make_bundle(with_extras=False)
    predictor = Predictor(bundle, PredictOptions(device="cuda:0"))
    assert isinstance(predictor.backend, TorchBackend)
    assert predictor.backend.device == torch.device("cuda", 0)
    assert {p.device for p in predictor.backend.model.parameters()} == {torch.device("cuda", 0)}

    records = list(predict(inputs, bundle, device="cuda:0", workers=0, batch_size=4))
    assert [r.image_id for r in records] == [str(p) for p in inputs]
    assert [r.ok for r in records] == [True] * 3 + [False] + [True] * 3 + [False]


def test_device_auto_picks_cuda(data: SyntheticData, tmp_path: Path) -> None:
    backend = create_backend(make_bundle(with_extras=False), PredictOptions(device="auto"))
    assert isinstance(backend, TorchBackend) and backend.device.type == "cuda"
    trainer = _create_trainer(data, _config(data, tmp_path, device="auto", amp="auto"))
    assert trainer.device.type == "cuda" and trainer.amp_dtype == _auto_amp_dtype()


def test_torch_backend_on_cuda_returns_host_probs() -> None:
    bundle: Bundle = make_bundle(with_extras=False)
    prep = preprocessing_of(bundle)
    rng = np.random.default_rng(0)
    size = prep.image_size
    pixels = rng.integers(0, 256, size=(5, size, size, 3), dtype=np.uint8)  # NHWC, as decoded
    gpu = TorchBackend(bundle.create_model(), prep, "cuda")
    cpu = TorchBackend(bundle.create_model(), prep, "cpu")

    probs = gpu(pixels)

    assert isinstance(probs, np.ndarray) and probs.dtype == np.float32
    assert probs.shape == (5, len(bundle.tag_ids))
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs, cpu(pixels), rtol=0, atol=SCORE_TOL)
    assert gpu(pixels[:1]).shape == (1, len(bundle.tag_ids))  # a batch of one
