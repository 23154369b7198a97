"""The review queue for people: an offline HTML contact sheet and Label Studio tasks.

Both group the queue by image (one card / one task per image, in queue order) and show, for each
tag under review: the current value, the suggested change and why, and the tag's annotation
guideline from the taxonomy.

Label Studio: `label_studio_config()` is the project's labeling config (an image, the current
tags as text, the guidelines, and a multiple `Choices` whose options are each task's tags under
review, loaded dynamically from `$review_tags`). Each task (Basic Label Studio JSON) carries the
image URL, our ids and the base manifest's sha256 in `data`, and our suggestion as `predictions`
(a `choices` result: the reviewed tags we think are present). On import back, a reviewed tag that
the annotator leaves ticked is positive, unticked is negative (`tagger.clean.review`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from PIL import Image, ImageOps

from label_system.taxonomy import Taxonomy

LS_FROM_NAME = "tags"  # the Choices control
LS_TO_NAME = "image"  # the Image object
LS_MODEL_VERSION = "tagger-clean"
DEFAULT_IMAGE_URL = "/data/local-files/?d={path}"  # Label Studio local-files storage


def _images(queue: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(image_id, its queue rows) in the order of each image's best rank."""
    order = queue.groupby("image_id", sort=False)["rank"].min().sort_values()
    for image_id in order.index:
        yield str(image_id), queue[queue["image_id"] == image_id].sort_values("rank")


def _lookup(manifest: pd.DataFrame) -> dict[str, Any]:
    return {
        str(r["image_id"]): r
        for r in manifest[["image_id", "path", "tags", "source"]].to_dict("records")
    }


# ---- the contact sheet -------------------------------------------------------------------------


def thumbnail_data_uri(path: str | Path, size: int = 160) -> str:
    """A JPEG thumbnail (longest side `size`, EXIF orientation applied) as a data: URI."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body{font-family:sans-serif;margin:16px;color:#222}
.card{display:flex;gap:12px;border:1px solid #ccc;border-radius:6px;padding:8px;margin:8px 0}
.card img{max-width:{size}px;max-height:{size}px;object-fit:contain;background:#eee}
.tags{color:#555;font-size:90%}.item{margin:4px 0}.add{color:#070}.remove{color:#a00}
.why{font-size:90%;color:#444}.guide{font-size:85%;color:#336;margin-left:1em}
"""


def write_contact_sheet(
    queue: pd.DataFrame,
    manifest: pd.DataFrame,
    taxonomy: Taxonomy,
    path: str | Path,
    *,
    thumbnails: Literal["embed", "relative"] = "embed",
    thumb_size: int = 160,
    title: str = "Label review queue",
) -> Path:
    """Write the offline HTML contact sheet; returns its path.

    thumbnails: "embed" (base64 JPEG inside the file: one file to mail or open anywhere) or
    "relative" (links to the image files, relative to the sheet's folder).
    """
    if thumbnails not in ("embed", "relative"):
        raise ValueError(f"thumbnails={thumbnails!r}; allowed: 'embed', 'relative'")
    path = Path(path)
    rows = _lookup(manifest)
    cards = []
    for image_id, items in _images(queue):
        row = rows.get(image_id)
        if row is None:
            raise ValueError(f"contact sheet: queue image {image_id!r} is not in the manifest")
        if thumbnails == "embed":
            src = thumbnail_data_uri(row["path"], thumb_size)
        else:
            src = Path(_relative(Path(row["path"]), path.parent)).as_posix()
        current = ", ".join(taxonomy.tags[t].name() for t in row["tags"]) or "(none)"
        lines = [_item_html(item, taxonomy) for item in items.to_dict("records")]
        cards.append(
            f'<div class="card" id="{html.escape(image_id)}"><img src="{html.escape(src)}" '
            f'alt="{html.escape(image_id)}" loading="lazy"><div>'
            f"<b>{html.escape(image_id)}</b> <span class='tags'>({html.escape(row['source'])}, "
            f"rank {int(items['rank'].min())})</span>"
            f"<div class='tags'>current tags: {html.escape(current)}</div>{''.join(lines)}"
            "</div></div>"
        )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE.replace('{size}', str(thumb_size))}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(queue)} items on "
        f"{queue['image_id'].nunique() if len(queue) else 0} images, most important first. "
        "Each item: the suggested change, why, and the tag's annotation guideline.</p>"
        + "".join(cards)
        + "</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _relative(target: Path, start: Path) -> str:
    return os.path.relpath(target.resolve(), start.resolve())


def _item_html(item: dict[Any, Any], taxonomy: Taxonomy) -> str:
    tag = taxonomy.tags[item["tag"]]
    add = item["suggested"] == "positive"
    verb = "add" if add else "remove"
    guide = tag.guideline_text() or "(no guideline written for this tag yet)"
    return (
        f"<div class='item'><span class='{verb}'>#{int(item['rank'])} {verb} "
        f"<b>{html.escape(tag.name())}</b></span> ({html.escape(item['kind'])}; now "
        f"{html.escape(item['current'])}) <span class='why'>- {html.escape(item['reasons'])}"
        f"</span><div class='guide'>Guideline: {html.escape(guide)}</div></div>"
    )


# ---- Label Studio ------------------------------------------------------------------------------


def label_studio_config() -> str:
    """The Label Studio labeling config (XML) the tasks of `label_studio_tasks` expect."""
    return f"""<View>
  <Header value="Which of these tags are in the photo? Follow each tag's guideline."/>
  <Image name="{LS_TO_NAME}" value="$image" maxWidth="800px"/>
  <Text name="current_tags" value="$current_tags"/>
  <Choices name="{LS_FROM_NAME}" toName="{LS_TO_NAME}" choice="multiple" value="$review_tags"/>
  <HyperText name="guidelines" value="$guidelines"/>
</View>
"""


def label_studio_tasks(
    queue: pd.DataFrame,
    manifest: pd.DataFrame,
    taxonomy: Taxonomy,
    manifest_sha256: str,
    *,
    image_url: str = DEFAULT_IMAGE_URL,
    image_root: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Basic Label Studio JSON tasks, one per image in the queue, with our suggestion as a
    prediction.

    image_url: a template with `{path}` (the image path relative to `image_root`, or to "/"
    without one) and `{image_id}`; the default serves files through Label Studio's local-files
    storage (start Label Studio with LOCAL_FILES_SERVING_ENABLED=true and
    LOCAL_FILES_DOCUMENT_ROOT set to `image_root`, or "/").
    """
    rows = _lookup(manifest)
    tasks = []
    for image_id, items in _images(queue):
        row = rows.get(image_id)
        if row is None:
            raise ValueError(f"Label Studio export: image {image_id!r} is not in the manifest")
        path = Path(row["path"])
        # Label Studio's local-files storage takes paths relative to its document root
        # (LOCAL_FILES_DOCUMENT_ROOT): relative to `image_root`, else to "/"
        shown = _relative(path, Path(image_root)) if image_root else path.as_posix().lstrip("/")
        review = items.to_dict("records")
        present = [i["tag"] for i in review if i["suggested"] == "positive"]
        guidelines = "".join(
            f"<p><b>{html.escape(taxonomy.tags[i['tag']].name())}</b> ({i['tag']}): "
            f"{html.escape(taxonomy.tags[i['tag']].guideline_text() or 'no guideline yet')}"
            f"<br/><i>suggested: {'add' if i['suggested'] == 'positive' else 'remove'} - "
            f"{html.escape(i['reasons'])}</i></p>"
            for i in review
        )
        tasks.append(
            {
                "data": {
                    "image": image_url.format(path=shown, image_id=image_id),
                    "image_id": image_id,
                    "manifest_sha256": manifest_sha256,
                    "current_tags": "Current tags: "
                    + (", ".join(taxonomy.tags[t].name() for t in row["tags"]) or "(none)"),
                    "review_tags": [
                        {"value": i["tag"], "html": html.escape(taxonomy.tags[i["tag"]].name())}
                        for i in review
                    ],
                    "guidelines": guidelines,
                    "queue_ranks": [int(i["rank"]) for i in review],
                },
                "predictions": [
                    {
                        "model_version": LS_MODEL_VERSION,
                        "score": float(items["priority"].max()),
                        "result": [
                            {
                                "id": f"{image_id[:8]}-{LS_FROM_NAME}",
                                "from_name": LS_FROM_NAME,
                                "to_name": LS_TO_NAME,
                                "type": "choices",
                                "value": {"choices": present},
                            }
                        ],
                    }
                ],
            }
        )
    return tasks


def write_label_studio(tasks: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `label_studio_tasks.json` and `label_studio_config.xml`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks_path = out_dir / "label_studio_tasks.json"
    tasks_path.write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    config_path = out_dir / "label_studio_config.xml"
    config_path.write_text(label_studio_config(), encoding="utf-8")
    return tasks_path, config_path
