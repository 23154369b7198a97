"""flows.heldout: what a bundle records about its training data (issue 16, item 8)."""

from __future__ import annotations

import pandas as pd

from flows.heldout import training_data_of


def test_training_data_names_the_sources_and_counts_the_images() -> None:
    manifest = pd.DataFrame({"source": ["voc", "coco", "voc"], "image_id": ["a", "b", "c"]})
    assert training_data_of(manifest, demo=False) == {
        "name": "coco+voc", "sources": ["coco", "voc"], "images": 3, "demo": False,
    }  # fmt: skip
    assert training_data_of(manifest, demo=True)["name"] == "demo"
