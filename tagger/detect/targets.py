"""Detector training targets from the manifest's boxes, on the taxonomy's tags.

Assembly already mapped each source box onto a tag through the source's label mapping
(`boxes[].tag`, null when the source label maps to no tag). Unknown is not negative here too:
for image i and detector class c the image is

- *boxed* when c is a known positive with at least one box (trains with those boxes),
- *negative* when c is a known negative (every region is background for c),
- *uncovered* otherwise: unknown, or positive without a box (a keyword folder, an image-level
  label). An uncovered class must not be pushed down on that image.

`BoxTargets.covered [N, C]` says which classes an image informs; the SSD backend removes
uncovered classes from the image's softmax (`tagger.detect.ssd`), the YOLO backend, whose loss
cannot mask a class, trains only on images that cover every class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from label_system.taxonomy import Taxonomy
from tagger.data.manifest import targets_from_manifest


@dataclass(frozen=True)
class BoxTargets:
    """Per manifest row: boxes (normalised xyxy, float32 `[K_i, 4]`), class indices (`[K_i]`,
    0-based into `tag_ids`), and `covered` bool `[N, C]`."""

    tag_ids: tuple[str, ...]
    paths: list[str]
    image_ids: list[str]
    boxes: list[np.ndarray]
    classes: list[np.ndarray]
    covered: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: np.ndarray) -> BoxTargets:
        idx = [int(i) for i in np.flatnonzero(rows)] if rows.dtype == bool else list(rows)
        return BoxTargets(
            self.tag_ids,
            [self.paths[i] for i in idx],
            [self.image_ids[i] for i in idx],
            [self.boxes[i] for i in idx],
            [self.classes[i] for i in idx],
            self.covered[idx],
        )

    def useful(self) -> np.ndarray:
        """Rows that inform at least one class."""
        return np.asarray(self.covered.any(axis=1))

    def covering_all(self) -> np.ndarray:
        """Rows that inform every class (what a loss without class masks may train on)."""
        return np.asarray(self.covered.all(axis=1))


def detector_tags(
    manifest: pd.DataFrame, taxonomy: Taxonomy, tags: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """The tags a detector covers: `tags` as given (checked against the taxonomy), or the
    taxonomy's `small_object` tags that have at least one box in the manifest."""
    if tags is not None:
        unknown = [t for t in tags if t not in taxonomy]
        if unknown:
            raise ValueError(
                f"detector.tags: {unknown} are not tags of taxonomy {taxonomy.name!r}; allowed: "
                f"its tag ids, e.g. the small_object tags {list(taxonomy.small_object_tags)[:10]}"
            )
        return tuple(tags)
    boxed = {b["tag"] for boxes in manifest["boxes"] for b in boxes if b["tag"] is not None}
    return tuple(t for t in taxonomy.small_object_tags if t in boxed)


def box_targets(manifest: pd.DataFrame, taxonomy: Taxonomy, tag_ids: tuple[str, ...]) -> BoxTargets:
    """Training targets of the detector classes `tag_ids` for every manifest row.

    Difficult boxes (VOC difficult, COCO crowd) are left out of the targets, but their class
    stays covered only if the image has another, non-difficult box of it.
    """
    if not tag_ids:
        raise ValueError("a detector needs at least one tag to cover; none given or found")
    targets, known = targets_from_manifest(manifest, taxonomy)
    cols = taxonomy.indices(tag_ids)
    positive = targets[:, cols].astype(bool)
    negative = known[:, cols] & ~positive
    index = {t: i for i, t in enumerate(tag_ids)}
    all_boxes, all_classes = [], []
    boxed = np.zeros_like(positive)
    for row, boxes in enumerate(manifest["boxes"]):
        coords, classes = [], []
        for b in boxes:
            c = index.get(b["tag"]) if b["tag"] is not None else None
            if c is None or b["difficult"]:
                continue
            coords.append((b["xmin"], b["ymin"], b["xmax"], b["ymax"]))
            classes.append(c)
        boxed[row, classes] = True
        all_boxes.append(np.asarray(coords, dtype=np.float32).reshape(-1, 4))
        all_classes.append(np.asarray(classes, dtype=np.int64))
    covered = negative | (positive & boxed)
    for row in range(len(all_boxes)):  # a box of an uncovered class would fight its mask
        keep = covered[row, all_classes[row]]
        all_boxes[row], all_classes[row] = all_boxes[row][keep], all_classes[row][keep]
    return BoxTargets(
        tuple(tag_ids),
        manifest["path"].astype(str).tolist(),
        manifest["image_id"].astype(str).tolist(),
        all_boxes,
        all_classes,
        covered,
    )
