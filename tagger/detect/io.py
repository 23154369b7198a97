"""Files of the detect stage: a detector (safetensors weights + architecture JSON) and
detections per image (Parquet)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.torch import save_file

from tagger.detect.backends import load_detector
from tagger.detect.detections import Detections, Detector, DetectorConfig
from tagger.detect.weights import read_state_dict

DETECTIONS_FORMAT = "album-tagger-detections"


def write_detector(detector: Detector, weights: Path, architecture: Path) -> tuple[Path, Path]:
    """Weights as safetensors (no pickle) and the architecture description as JSON."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in detector.state_dict().items()}
    save_file(state, str(weights))
    architecture.write_text(json.dumps(detector.architecture(), indent=1), encoding="utf-8")
    return weights, architecture


def read_detector(
    weights: Path,
    architecture: Path,
    taxonomy_tag_ids: tuple[str, ...],
    config: DetectorConfig,
    *,
    trust_pickle: bool = False,
) -> Detector:
    """A detector written by `write_detector` (pickled weights only with `trust_pickle`)."""
    arch: dict[str, Any] = json.loads(Path(architecture).read_text(encoding="utf-8"))
    state = read_state_dict(weights, trust_pickle=trust_pickle)
    return load_detector(arch, state, taxonomy_tag_ids, config)


def write_detections(
    image_ids: Sequence[str], detections: Sequence[Detections | None], path: Path
) -> Path:
    """One row per image: image_id, width, height, boxes [K*4], scores [K], tags [K] (null
    row values where the image could not be decoded)."""
    ok = [d is not None for d in detections]
    table = pa.table(
        {
            "image_id": pa.array([str(i) for i in image_ids], pa.string()),
            "decoded": pa.array(ok),
            "width": pa.array([d.width if d else 0 for d in detections], pa.int32()),
            "height": pa.array([d.height if d else 0 for d in detections], pa.int32()),
            "boxes": pa.array(
                [d.boxes.ravel().tolist() if d else [] for d in detections], pa.list_(pa.float32())
            ),
            "scores": pa.array(
                [d.scores.tolist() if d else [] for d in detections], pa.list_(pa.float32())
            ),
            "tags": pa.array(
                [d.tags.tolist() if d else [] for d in detections], pa.list_(pa.int64())
            ),
        }
    ).replace_schema_metadata({"tagger": json.dumps({"format": DETECTIONS_FORMAT})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_detections(path: Path) -> tuple[list[str], list[Detections | None]]:
    """Image ids and detections of a file written by `write_detections`."""
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"tagger", b"{}"))
    if meta.get("format") != DETECTIONS_FORMAT:
        raise ValueError(f"{path}: not a detections file (no {DETECTIONS_FORMAT!r} metadata)")
    rows = table.to_pylist()
    out: list[Detections | None] = []
    for r in rows:
        if not r["decoded"]:
            out.append(None)
            continue
        out.append(
            Detections(
                np.asarray(r["boxes"], np.float32).reshape(-1, 4),
                np.asarray(r["scores"], np.float32),
                np.asarray(r["tags"], np.int64),
                int(r["width"]),
                int(r["height"]),
            )
        )
    return [r["image_id"] for r in rows], out
