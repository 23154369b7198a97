"""One entry point for both backends: train, rebuild from (architecture, weights), start from a
user's weights file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from tagger.detect.detections import Detector, DetectorConfig
from tagger.detect.targets import BoxTargets
from tagger.detect.weights import read_state_dict

BACKENDS = ("ssd", "yolo")


def initial_weights(config: DetectorConfig) -> dict[str, Tensor] | None:
    """The weights training starts from: the user's local file (`config.weights`; a pickle only
    with `trust_pickle`), hub weights when asked (YOLO only), else None (random init)."""
    if config.weights is not None:
        return read_state_dict(config.weights, trust_pickle=config.trust_pickle)
    if config.hub_weights is not None:
        if config.backend != "yolo":
            raise ValueError("detector.hub_weights is for backend 'yolo'; for SSD give `weights`")
        from tagger.detect.yolo import hub_state_dict

        return hub_state_dict(config.hub_weights, trust_pickle=True)  # the publisher's own file
    return None


def train_detector(
    targets: BoxTargets,
    taxonomy_tag_ids: tuple[str, ...],
    config: DetectorConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> Detector:
    """Train the configured backend on `targets`."""
    start = initial_weights(config)
    if config.backend == "ssd":
        from tagger.detect.ssd import train_ssd

        return train_ssd(targets, taxonomy_tag_ids, config, initial_state=start, on_step=on_step)
    if config.backend == "yolo":
        from tagger.detect.yolo import train_yolo

        return train_yolo(targets, taxonomy_tag_ids, config, initial_state=start, on_step=on_step)
    raise ValueError(f"detector.backend {config.backend!r}; allowed: {list(BACKENDS)}")


def load_detector(
    architecture: dict[str, Any],
    state: dict[str, Tensor],
    taxonomy_tag_ids: tuple[str, ...],
    config: DetectorConfig,
) -> Detector:
    """Rebuild a trained detector from `Detector.architecture()` and its weights."""
    backend = architecture.get("backend")
    if backend == "ssd":
        from tagger.detect.ssd import load_ssd

        return load_ssd(architecture, state, taxonomy_tag_ids, config)
    if backend == "yolo":
        from tagger.detect.yolo import load_yolo

        return load_yolo(architecture, state, taxonomy_tag_ids, config)
    raise ValueError(f"detector architecture: backend {backend!r}; allowed: {list(BACKENDS)}")
