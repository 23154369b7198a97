"""Multi-label losses over `[B, num_tags]` logits that honour the known mask.

Every loss takes `logits`, `targets` (0/1) and `known` (bool, or a non-negative weight), all
`[B, num_tags]`. Unknown cells (known == 0) add nothing to the loss, get zero gradient, and do
not count in the normalisation: reduction "mean" divides by the number (total weight) of known
cells, and a batch without known cells has loss 0 (not nan), so training goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from torch import Tensor

Reduction = Literal["none", "sum", "mean"]
LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def reduce_known(loss: Tensor, known: Tensor | None, reduction: Reduction) -> Tensor:
    """Zero unknown cells of an elementwise `loss [B, T]` and reduce over known cells only.

    `torch.where` (not a product) keeps the gradient of unknown cells exactly zero even if their
    elementwise loss is inf. "mean" = sum / number of known cells (0 when there are none).
    """
    if known is None:
        weight = None
        total = torch.tensor(float(loss.numel()), dtype=loss.dtype, device=loss.device)
    else:
        if known.shape != loss.shape:
            raise ValueError(f"known has shape {tuple(known.shape)}, loss {tuple(loss.shape)}")
        weight = known.to(loss.dtype)
        loss = torch.where(weight > 0, loss * weight, torch.zeros_like(loss))
        total = weight.sum()
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        # clamp: with no known cell the sum is 0 as well, so the mean is 0 without a host sync
        return loss.sum() / total.clamp_min(torch.finfo(loss.dtype).tiny)
    raise ValueError(f"reduction {reduction!r} not one of 'none', 'sum', 'mean'")


def bce_loss(
    logits: Tensor, targets: Tensor, known: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """Binary cross-entropy on logits `[B, T]`, unknown cells ignored."""
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return reduce_known(loss, known, reduction)


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017, https://arxiv.org/abs/1708.02002) on `[B, T]`.

    loss = alpha_t * (1 - p_t)^gamma * BCE, with p_t the probability of the true value.
    alpha in [0, 1] weights positives by alpha and negatives by 1 - alpha; alpha < 0 disables it.
    With gamma=0 and alpha<0 it equals `bce_loss`. Same formula as
    `torchvision.ops.sigmoid_focal_loss`, plus the known mask.
    """
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return reduce_known(loss, known, reduction)


def asymmetric_loss(
    logits: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    reduction: Reduction = "mean",
) -> Tensor:
    """Asymmetric loss, ASL (Ridnik et al. 2021, https://arxiv.org/abs/2009.14119) on `[B, T]`.

    Positives: -(1 - p)^gamma_pos * log(p). Negatives use the shifted probability
    p_m = max(p - clip, 0): -p_m^gamma_neg * log(1 - p_m), which down-weights easy negatives
    and discards very easy ones (possibly mislabelled). Defaults are the paper's (gamma- = 4,
    gamma+ = 0, m = 0.05). With gamma_pos = gamma_neg = g and clip = 0 it equals focal loss
    with gamma g and alpha disabled.
    """
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    if clip > 0:
        # 1 - p_m = min(1 - p + clip, 1) >= clip, so the log is finite
        one_minus_pm = (torch.sigmoid(-logits) + clip).clamp(max=1.0)
        log_one_minus_pm = torch.log(one_minus_pm)
        p_m = 1 - one_minus_pm
    else:
        log_one_minus_pm = F.logsigmoid(-logits)
        p_m = p
    pos = (1 - p) ** gamma_pos * log_p
    neg = p_m**gamma_neg * log_one_minus_pm
    loss = -(targets * pos + (1 - targets) * neg)
    return reduce_known(loss, known, reduction)


class BCELossConfig(BaseModel):
    """Plain binary cross-entropy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["bce"] = "bce"


class FocalLossConfig(BaseModel):
    """Sigmoid focal loss; alpha < 0 disables the class weighting."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["focal"] = "focal"
    alpha: float = Field(default=0.25, le=1.0)
    gamma: float = Field(default=2.0, ge=0.0)


class AsymmetricLossConfig(BaseModel):
    """Asymmetric loss (ASL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["asl"] = "asl"
    gamma_pos: float = Field(default=0.0, ge=0.0)
    gamma_neg: float = Field(default=4.0, ge=0.0)
    clip: float = Field(default=0.05, ge=0.0, lt=1.0)


LossConfig = Annotated[
    BCELossConfig | FocalLossConfig | AsymmetricLossConfig, Field(discriminator="name")
]
_LOSS_ADAPTER: TypeAdapter[BCELossConfig | FocalLossConfig | AsymmetricLossConfig] = TypeAdapter(
    LossConfig
)

LOSSES: dict[str, Callable[..., Tensor]] = {
    "bce": bce_loss,
    "focal": sigmoid_focal_loss,
    "asl": asymmetric_loss,
}


def create_loss(
    cfg: BCELossConfig | FocalLossConfig | AsymmetricLossConfig | dict[str, object],
) -> LossFn:
    """Loss function `(logits, targets, known) -> scalar mean over known cells` from a config.

    `cfg` is a loss config or a plain dict such as `{"name": "focal", "gamma": 2.0}`.
    """
    if isinstance(cfg, dict):
        name = cfg.get("name")
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
        cfg = _LOSS_ADAPTER.validate_python(cfg)
    params = cfg.model_dump(exclude={"name"})
    return partial(LOSSES[cfg.name], reduction="mean", **params)
