"""Training loop: exact resume, frozen phase, early stop, schedule, config, checkpoints, DDP."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tagger.train.checkpoint import read_checkpoint, read_checkpoint_meta, read_checkpoint_weights
from tagger.train.model import ModelConfig, create_model
from tagger.train.training import Callback, TrainConfig, load_train_config, lr_factor, train
from tests.tagger.synthetic_training import SyntheticData, make_synthetic_data

REPO = Path(__file__).resolve().parents[3]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    return make_synthetic_data(tmp_path_factory.mktemp("train_data"), n_images=24)


def _config(synth: SyntheticData, out: Path, **overrides: Any) -> TrainConfig:
    raw: dict[str, Any] = {
        "model": {"backbone": "resnet18", "image_size": 32, "drop_rate": 0.2},
        "loss": {"name": "focal"},
        "sampler": {"name": "repeat_factor", "threshold": 0.5},
        "data": {
            "cache_dir": str(synth.cache_dir),
            "cache_size": synth.cache_size,
            "batch_size": 4,
            "num_workers": 0,
        },
        "schedule": {"epochs": 2, "warmup_epochs": 0.5},
        "output_dir": str(out),
        "progress": False,
        "device": "cpu",  # the same results on a GPU machine; CUDA has tests/tagger/test_cuda.py
    }
    for key, value in overrides.items():
        raw[key] = raw.get(key, {}) | value if isinstance(value, dict) else value
    return TrainConfig.model_validate(raw)


class _Interrupt(Exception):
    pass


class _StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epochs:
            raise _Interrupt  # as if the job were killed right after the checkpoint


class _Recorder(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: list[tuple[Path, bool]] = []

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.steps.append(step)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, metrics))

    def on_checkpoint(self, path: Path, best: bool) -> None:
        self.checkpoints.append((path, best))


def _without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [
        {k: v for k, v in h.items() if k not in ("images_per_s", "epoch_time_s")} for h in history
    ]


def test_one_epoch_plus_resume_plus_one_equals_two_epochs(
    data: SyntheticData, tmp_path: Path
) -> None:
    # frozen encoder for epoch 1 (the phase changes across the resume), EMA, dropout (global RNG)
    extra = {"schedule": {"freeze_encoder_epochs": 1}, "ema_decay": 0.8}
    straight = train(_config(data, tmp_path / "a", **extra), data.manifest, data.taxonomy)
    cfg = _config(data, tmp_path / "b", **extra)
    with pytest.raises(_Interrupt):
        train(cfg, data.manifest, data.taxonomy, callbacks=[_StopAfter(1)])
    assert read_checkpoint_meta(tmp_path / "b" / "last")["epoch"] == 1
    after_one = read_checkpoint_weights(tmp_path / "b" / "last", prefer_ema=False)
    resumed = train(cfg, data.manifest, data.taxonomy, resume=tmp_path / "b" / "last")

    assert resumed.epochs_completed == straight.epochs_completed == 2
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "a" / "last" / name)
        b = load_file(tmp_path / "b" / "last" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume"
    assert _without_timing(resumed.history) == _without_timing(straight.history)
    # not vacuous: epoch 2 (encoder unfrozen) changed the encoder that epoch 1 left alone
    final = load_file(tmp_path / "b" / "last" / "model.safetensors")
    assert not torch.equal(after_one["conv1.weight"], final["conv1.weight"])


def test_frozen_encoder_phase_trains_only_the_head(data: SyntheticData, tmp_path: Path) -> None:
    cfg = _config(
        data, tmp_path, schedule={"epochs": 1, "freeze_encoder_epochs": 1}, model={"drop_rate": 0.0}
    )
    result = train(cfg, data.manifest, data.taxonomy)
    torch.manual_seed(cfg.seed)  # the loop builds its model first thing after seeding
    initial = create_model(cfg.model.to_model_config(len(data.taxonomy))).state_dict()
    trained = read_checkpoint_weights(result.last_checkpoint)
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert changed == {"fc.weight", "fc.bias"}  # encoder weights and BN statistics untouched
    assert result.history[0]["frozen_encoder"] == 1.0


def test_callbacks_checkpoints_and_early_stop(data: SyntheticData, tmp_path: Path) -> None:
    # frozen encoder (BN statistics too) and a vanishing lr leave validation mAP flat:
    # epoch 1 is best, epoch 2 is stale -> stop
    cfg = _config(
        data,
        tmp_path,
        optimizer={"lr": 1e-12},
        log_every_steps=2,
        schedule={"epochs": 5, "early_stop_patience": 1, "freeze_encoder_epochs": 5},
    )
    rec = _Recorder()
    result = train(cfg, data.manifest, data.taxonomy, callbacks=[rec])
    assert result.stopped_early and result.epochs_completed == 2
    assert [e for e, _ in rec.epochs] == [1, 2]
    assert {"train_loss", "lr", "images_per_s", "val_loss", "val_map"} <= rec.epochs[0][1].keys()
    assert rec.checkpoints == [(tmp_path / "last", True), (tmp_path / "last", False)]
    assert rec.steps and rec.steps == sorted(rec.steps)
    assert read_checkpoint_meta(result.best_checkpoint)["epoch"] == 1
    assert read_checkpoint_meta(result.last_checkpoint)["epoch"] == 2
    assert result.best_val_ap is not None and result.best_val_ap.shape == (len(data.taxonomy),)
    assert result.best_metric == pytest.approx(rec.epochs[0][1]["val_map"])


def test_checkpoint_is_safe_to_load_and_describes_the_model(
    data: SyntheticData, tmp_path: Path
) -> None:
    cfg = _config(
        data,
        tmp_path,
        schedule={"epochs": 1},
        sampler={"name": "uniform"},
        loss={"name": "asl"},
        optimizer={"name": "sgd", "lr": 0.01},
    )
    result = train(cfg, data.manifest, data.taxonomy)
    ckpt = result.last_checkpoint
    state = torch.load(ckpt / "state.pt", weights_only=True)  # no pickle beyond tensors/primitives
    assert state["epoch"] == 1 and state["tag_ids"] == list(data.taxonomy.tag_ids)
    meta = read_checkpoint(ckpt).meta
    model = create_model(ModelConfig(**meta["model_config"]))
    model.load_state_dict(read_checkpoint_weights(ckpt))
    assert meta["tag_ids"] == list(data.taxonomy.tag_ids)
    assert meta["preprocessing"]["image_size"] == 32
    assert result.model is not None
    x = torch.zeros(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), result.model(x))


def test_lr_schedule_warmup_then_cosine() -> None:
    f = [lr_factor(s, warmup_steps=4, total_steps=14, min_ratio=0.1) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0)
    assert f[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f[14] == pytest.approx(0.1) and f[19] == pytest.approx(0.1)  # clamped past the end
    assert all(a >= b for a, b in itertools.pairwise(f[4:]))
    assert lr_factor(0, warmup_steps=0, total_steps=10, min_ratio=0.0) == 1.0


def test_load_train_config_resolves_paths_and_reports_errors(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "train.yaml"
    path.parent.mkdir()
    path.write_text(
        textwrap.dedent("""
        model: {backbone: resnet18, image_size: 64}
        loss: {name: asl, gamma_neg: 3}
        data: {manifest: ../data/manifest.parquet, cache_dir: /abs/cache}
        output_dir: runs/x
    """)
    )
    cfg = load_train_config(path)
    assert cfg.data.manifest == path.parent / "../data/manifest.parquet"
    assert cfg.data.cache_dir == Path("/abs/cache")
    assert cfg.output_dir == path.parent / "runs/x"
    assert cfg.loss.name == "asl" and cfg.loss.gamma_neg == 3

    path.write_text("optimizer: {name: adam, lr: 0.1}\nschedule: {epochs: 0}\n")
    with pytest.raises(ValueError, match=r"train\.yaml") as err:
        load_train_config(path)
    assert "optimizer.name" in str(err.value) and "'adam'" in str(err.value)
    assert "schedule.epochs" in str(err.value)
    path.write_text("model: {backbone: resnet_does_not_exist}\n")
    with pytest.raises(ValueError, match="unknown timm model 'resnet_does_not_exist'"):
        load_train_config(path)
    path.write_text("data: {batch_sz: 3}\n")
    with pytest.raises(ValueError, match=r"data\.batch_sz: Extra inputs"):
        load_train_config(path)


def test_bad_setups_fail_early(data: SyntheticData, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp16"):
        train(_config(data, tmp_path, amp="fp16", device="cpu"), data.manifest, data.taxonomy)
    with pytest.raises(ValueError, match="val_fold=7"):
        train(_config(data, tmp_path, data={"val_fold": 7}), data.manifest, data.taxonomy)
    with pytest.raises(ValueError, match="batch_size=64"):
        train(_config(data, tmp_path, data={"batch_size": 64}), data.manifest, data.taxonomy)


def test_tagger_train_command(data: SyntheticData, tmp_path: Path, capsys: Any) -> None:
    from tagger.cli import main

    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text(yaml.safe_dump(data.taxonomy.to_dict()))
    raw = _config(data, tmp_path / "out", schedule={"epochs": 1}).model_dump(mode="json")
    raw["data"] |= {"manifest": str(data.manifest_path), "taxonomy": "taxonomy.yaml"}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config)]) == 0
    assert "best checkpoint" in capsys.readouterr().out
    assert read_checkpoint_meta(tmp_path / "out" / "last")["epoch"] == 1
    assert main(["train", str(config), "--resume"]) == 0  # nothing left: returns at once
    config.write_text("schedule: {epochs: -1}\n")
    assert main(["train", str(config)]) == 2
    assert "schedule.epochs" in capsys.readouterr().err


DDP_SCRIPT = """
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from tagger.data.manifest import read_manifest
from tagger.train.training import TrainConfig, init_distributed, train
from tests.tagger.synthetic_training import tiny_taxonomy

torch.set_num_threads(1)
cfg = TrainConfig.model_validate_json(Path(sys.argv[1]).read_text())
ctx = init_distributed("cpu")
assert ctx.world_size == 2, ctx
result = train(cfg, read_manifest(sys.argv[2]), tiny_taxonomy(4))
state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
save_file(state, str(cfg.output_dir / f"rank{ctx.rank}.safetensors"))
torch.distributed.destroy_process_group()
"""


def test_two_process_gloo_ddp_run(data: SyntheticData, tmp_path: Path) -> None:
    cfg = _config(
        data,
        tmp_path / "out",
        schedule={"epochs": 2, "freeze_encoder_epochs": 1},
        device="cpu",
        data={"batch_size": 3},
    )
    (tmp_path / "out").mkdir()
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(cfg.model_dump_json())
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = os.environ | {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(script),
            str(cfg_path),
            str(data.manifest_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = load_file(tmp_path / "out" / "rank0.safetensors")
    r1 = load_file(tmp_path / "out" / "rank1.safetensors")
    saved = load_file(tmp_path / "out" / "last" / "model.safetensors")
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"ranks disagree on {key}"
        assert torch.equal(r0[key], saved[key])
    assert read_checkpoint_meta(tmp_path / "out" / "last")["epoch"] == 2
    # both processes' RNG states are in the checkpoint, for an exact resume
    assert len(torch.load(tmp_path / "out" / "last" / "state.pt", weights_only=True)["rng"]) == 2
