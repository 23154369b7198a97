"""The tagger network: a timm backbone with one sigmoid output per tag."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import timm
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelConfig(BaseModel):
    """Typed model config; defaults in one place.

    pretrained: False (default, offline), "hub" (timm's default weights, downloads), or a path
    to a local `.safetensors` / `.pth` file with backbone weights.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = "resnet50"
    num_tags: int = Field(gt=0)
    image_size: int = Field(default=224, ge=16)
    pretrained: Literal[False, "hub"] | Path = False
    drop_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if not timm.is_model(v):
            close = timm.list_models(f"*{v.split('.')[0][:6]}*")[:10]
            raise ValueError(f"unknown timm model {v!r}; similar names: {close}")
        return v


def create_model(cfg: ModelConfig) -> nn.Module:
    """Build the network: `images [B, 3, H, W] -> logits [B, num_tags]`.

    Only `pretrained="hub"` touches the network; a local path loads weights without pickle
    for `.safetensors` and with `weights_only=True` for torch files.
    """
    model = timm.create_model(
        cfg.backbone,
        pretrained=cfg.pretrained == "hub",
        num_classes=cfg.num_tags,
        drop_rate=cfg.drop_rate,
    )
    if isinstance(cfg.pretrained, Path):
        load_backbone_weights(model, cfg.pretrained)
    return model


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load backbone weights from a local file; the classifier head is left as initialised."""
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state: dict[str, torch.Tensor]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict):
            raise ValueError(
                f"{path}: expected a state dict of tensors, got {type(loaded).__name__}"
            )
        state = loaded
    head_name = str(getattr(model, "pretrained_cfg", {}).get("classifier", "fc"))
    head_keys = {k for k in model.state_dict() if k.startswith(f"{head_name}.")}
    state = {k: v for k, v in state.items() if k not in head_keys}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head_keys]
    if missing:
        raise ValueError(
            f"{path}: weights do not fit {type(model).__name__}; missing {missing[:5]}"
        )
    if unexpected:
        raise ValueError(f"{path}: unexpected keys {unexpected[:5]}")


def fold_sequential_batch_norm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a convolution inside an `nn.Sequential` into that
    convolution (eval mode, inference only; the BatchNorm becomes `nn.Identity`), in place.

    For models torch.fx cannot trace whole (torchvision's detectors loop over feature maps):
    their convolution blocks are Sequentials (MobileNet's `Conv2dNormActivation`, SSD heads).
    Outputs stay equal within float rounding.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_sequential_batch_norm(child)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv.eval(), norm.eval())
                module[i + 1] = nn.Identity()
    return module
