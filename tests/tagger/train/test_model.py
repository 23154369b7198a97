"""Model factory: timm backbone with one output per tag; local pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from tagger.train.model import ModelConfig, create_model


def test_create_model_outputs_one_logit_per_tag() -> None:
    model = create_model(ModelConfig(backbone="resnet18", num_tags=7, image_size=32))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_backbone_lists_similar_names() -> None:
    with pytest.raises(ValidationError, match="unknown timm model 'resnet5000'"):
        ModelConfig(backbone="resnet5000", num_tags=3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_pretrained_weights_load_backbone_and_keep_head(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    source = create_model(ModelConfig(backbone="resnet18", num_tags=1000))
    path = tmp_path / f"backbone{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)

    model = create_model(ModelConfig(backbone="resnet18", num_tags=5, pretrained=path))

    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)
    assert model.fc.weight.shape == (5, 512)  # head sized for our tags, not the file's


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    other = create_model(ModelConfig(backbone="resnet34", num_tags=3))
    path = tmp_path / "resnet34.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"resnet34\.safetensors: unexpected keys"):
        create_model(ModelConfig(backbone="resnet18", num_tags=3, pretrained=path))


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        create_model(
            ModelConfig(backbone="resnet18", num_tags=3, pretrained=tmp_path / "nope.safetensors")
        )
