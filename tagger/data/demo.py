"""A demo data set the project draws itself, written in the real source formats.

Scenes are coloured primitives on a background (sky over grass, beach, snow, a room), with
objects of different sizes (an apple is ~12% of the image side, a car up to half of it) whose
frequencies fall off in a long tail. Every class has its own shape and a colour no other class
or background uses, so a tiny model at 64 px can learn them. The images are split over five
sources that exercise five readers and the three ways a source gives known negatives:

- `coco/instances.json` (COCO instances JSON, exhaustive over the COCO categories drawn),
- `voc/Annotations/*.xml` (VOC XML, small objects sometimes `difficult`),
- `openimages/labels.csv` + `boxes.csv` (Open Images: positives and verified negatives, also
  for parent classes such as Animal or Vehicle when the image shows none),
- `keywords/<keyword>/*.jpg` (crawled keyword folders: positives only),
- `internal/tags.csv` (internal `path,tags` annotations with every drawn tag; the assembly
  config declares it exhaustive over `demo_known_tags()`, the drawn tags and their ancestors,
  so a scene without animals is a known negative for animal, dog, cat, ...),

plus a few exact duplicates across sources (merged by assembly) and one truncated JPEG (reported
and left out). Deterministic for a seed; ~320 images at 160 px take well under a second.
"""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from label_system.taxonomy import Taxonomy, load_default_taxonomy

Box = tuple[float, float, float, float]  # pixels: x0, y0, x1, y1
Painter = Callable[[ImageDraw.ImageDraw, Box], None]


# ---- what is drawn --------------------------------------------------------------------------


def _car(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.rectangle((x0 + 0.25 * w, y0, x1 - 0.2 * w, y0 + 0.45 * h), fill=(150, 20, 20))
    d.rectangle((x0 + 0.32 * w, y0 + 0.08 * h, x1 - 0.27 * w, y0 + 0.35 * h), fill=(200, 230, 250))
    d.rectangle((x0, y0 + 0.4 * h, x1, y1 - 0.2 * h), fill=(220, 30, 30))
    r = 0.18 * w
    for cx in (x0 + 0.25 * w, x1 - 0.25 * w):
        d.ellipse((cx - r, y1 - 2 * r, cx + r, y1), fill=(15, 15, 15))


def _dog(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    for lx in (0.15, 0.3, 0.55, 0.7):
        d.rectangle((x0 + lx * w, y0 + 0.6 * h, x0 + (lx + 0.08) * w, y1), fill=(90, 55, 20))
    d.ellipse((x0, y0 + 0.3 * h, x0 + 0.8 * w, y0 + 0.75 * h), fill=(140, 85, 35))
    d.ellipse((x0 + 0.6 * w, y0, x1, y0 + 0.45 * h), fill=(110, 65, 25))


def _cat(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.ellipse((x0 + 0.1 * w, y0 + 0.45 * h, x1 - 0.1 * w, y1), fill=(120, 120, 130))
    d.ellipse((x0 + 0.2 * w, y0 + 0.15 * h, x1 - 0.2 * w, y0 + 0.6 * h), fill=(150, 150, 160))
    d.polygon(
        [(x0 + 0.2 * w, y0 + 0.3 * h), (x0 + 0.3 * w, y0), (x0 + 0.45 * w, y0 + 0.2 * h)],
        fill=(150, 150, 160),
    )
    d.polygon(
        [(x1 - 0.2 * w, y0 + 0.3 * h), (x1 - 0.3 * w, y0), (x1 - 0.45 * w, y0 + 0.2 * h)],
        fill=(150, 150, 160),
    )


def _bird(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.polygon(
        [(x0, y0), (x0 + 0.5 * w, y0 + 0.6 * h), (x1, y0), (x0 + 0.5 * w, y1)], fill=(25, 25, 30)
    )
    d.polygon(
        [
            (x0 + 0.45 * w, y0 + 0.55 * h),
            (x0 + 0.55 * w, y0 + 0.55 * h),
            (x0 + 0.5 * w, y0 + 0.8 * h),
        ],
        fill=(250, 200, 0),
    )


def _boat(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.polygon(
        [(x0 + 0.5 * w, y0), (x0 + 0.5 * w, y0 + 0.65 * h), (x0 + 0.1 * w, y0 + 0.65 * h)],
        fill=(245, 245, 245),
    )
    d.polygon(
        [(x0, y0 + 0.7 * h), (x1, y0 + 0.7 * h), (x1 - 0.15 * w, y1), (x0 + 0.15 * w, y1)],
        fill=(250, 210, 20),
    )


def _bottle(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.rectangle((x0 + 0.35 * w, y0, x1 - 0.35 * w, y0 + 0.3 * h), fill=(80, 20, 110))
    d.rectangle((x0, y0 + 0.3 * h, x1, y1), fill=(120, 40, 170))


def _apple(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.ellipse((x0, y0 + 0.15 * h, x1, y1), fill=(170, 235, 40), outline=(60, 90, 10))
    d.rectangle((x0 + 0.45 * w, y0, x0 + 0.58 * w, y0 + 0.3 * h), fill=(90, 50, 20))


def _orange(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.ellipse(b, fill=(255, 140, 0), outline=(170, 80, 0), width=2)


def _ball(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.ellipse(b, fill=(250, 250, 250), outline=(0, 0, 0), width=2)
    d.ellipse((x0 + 0.35 * w, y0 + 0.35 * h, x1 - 0.35 * w, y1 - 0.35 * h), fill=(0, 0, 0))


def _tree(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.rectangle((x0 + 0.42 * w, y0 + 0.55 * h, x1 - 0.42 * w, y1), fill=(100, 60, 20))
    d.ellipse((x0, y0, x1, y0 + 0.7 * h), fill=(10, 75, 25))


def _flower(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    r = 0.22 * w
    for cx, cy in ((0.3, 0.3), (0.7, 0.3), (0.3, 0.7), (0.7, 0.7)):
        d.ellipse(
            (x0 + cx * w - r, y0 + cy * h - r, x0 + cx * w + r, y0 + cy * h + r),
            fill=(240, 100, 200),
        )
    d.ellipse((x0 + 0.38 * w, y0 + 0.38 * h, x1 - 0.38 * w, y1 - 0.38 * h), fill=(250, 230, 0))


@dataclass(frozen=True)
class DemoClass:
    """One drawn object class and its name in each source vocabulary (None: not in it)."""

    tag: str
    coco: str | None
    voc: str | None
    openimages: str | None  # MID
    keyword: str | None
    rate: float  # probability that an image shows it (the long tail)
    size: tuple[float, float]  # min, max box side as a fraction of the image side
    aspect: float  # width / height
    paint: Painter


DEMO_CLASSES: tuple[DemoClass, ...] = (
    DemoClass("car", "car", "car", "/m/0k4j", "cars", 0.40, (0.30, 0.50), 1.8, _car),
    DemoClass("dog", "dog", "dog", "/m/0bt9lr", "dogs", 0.30, (0.25, 0.45), 1.3, _dog),
    DemoClass("tree", None, None, "/m/07j7r", "trees", 0.26, (0.30, 0.50), 0.8, _tree),
    DemoClass("bird", "bird", "bird", "/m/015p6", "birds", 0.20, (0.14, 0.22), 1.5, _bird),
    DemoClass("cat", "cat", "cat", "/m/01yrx", "cats", 0.16, (0.22, 0.34), 1.0, _cat),
    DemoClass("boat", "boat", "boat", "/m/019jd", "boats", 0.13, (0.25, 0.40), 1.2, _boat),
    DemoClass("bottle", "bottle", "bottle", "/m/04dr76w", None, 0.11, (0.16, 0.26), 0.45, _bottle),
    DemoClass("apple", "apple", None, "/m/014j1m", "apples", 0.10, (0.11, 0.15), 1.0, _apple),
    DemoClass("flower", None, None, "/m/0c9ph5", "flowers", 0.09, (0.12, 0.17), 1.0, _flower),
    DemoClass("orange", "orange", None, "/m/0cyhj_", "oranges", 0.08, (0.10, 0.14), 1.0, _orange),
    DemoClass("sports_ball", "sports ball", None, "/m/018xm", None, 0.07, (0.08, 0.12), 1.0, _ball),
)
# Open Images parent classes the demo gives verified negatives for (image shows none of them)
PARENT_MIDS = {"/m/0jbk": "animal", "/m/07yv9": "vehicle", "/m/05s2s": "plant",
               "/m/02wbm": "food", "/m/02xwb": "fruit"}  # fmt: skip
COCO_IDS = {"car": 3, "boat": 9, "bird": 16, "cat": 17, "dog": 18, "sports ball": 37,
            "bottle": 44, "apple": 53, "orange": 55}  # fmt: skip


@dataclass(frozen=True)
class Background:
    """A scene: horizontal bands (top fraction, colour) and the tags it shows."""

    name: str
    bands: tuple[tuple[float, tuple[int, int, int]], ...]
    tags: tuple[str, ...]
    keyword: str | None
    rate: float


BACKGROUNDS: tuple[Background, ...] = (
    Background(
        "meadow",
        ((0.0, (120, 180, 240)), (0.55, (70, 160, 60))),
        ("sky", "grass", "outdoor"),
        "sky",
        0.40,
    ),
    Background(
        "room", ((0.0, (225, 210, 180)), (0.7, (80, 130, 135))), ("indoor",), "interior", 0.28
    ),
    Background(
        "beach",
        ((0.0, (120, 180, 240)), (0.45, (20, 80, 170)), (0.7, (235, 215, 150))),
        ("beach", "sea", "sky"),
        "beach",
        0.18,
    ),
    Background(
        "snow",
        ((0.0, (150, 190, 230)), (0.6, (250, 250, 252))),
        ("sky", "snow", "outdoor"),
        "snow",
        0.14,
    ),
)


@dataclass(frozen=True)
class DemoObject:
    """One drawn object: its class and pixel box."""

    cls: DemoClass
    box: Box


@dataclass(frozen=True)
class DemoScene:
    """One drawn image: background, objects (drawing order), width and height in pixels."""

    background: Background
    objects: tuple[DemoObject, ...]
    width: int
    height: int
    shift: float = 0.0  # horizon offset, fraction of the height (every image differs)
    tint: tuple[int, int, int] = (0, 0, 0)  # added to the background colours

    @property
    def tags(self) -> list[str]:
        """Every tag the scene shows (objects then background), without repeats."""
        return list(dict.fromkeys([*(o.cls.tag for o in self.objects), *self.background.tags]))


class DemoConfig(BaseModel):
    """Size of the demo set; images per source sum to about 320. The internal source is the
    largest: it is the one that gives known negatives for scene and parent tags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    size: int = Field(default=160, ge=32, description="image width in pixels (height 3/4)")
    coco: int = Field(default=70, ge=0)
    voc: int = Field(default=40, ge=0)
    openimages: int = Field(default=60, ge=0)
    keywords: int = Field(default=40, ge=0)
    internal: int = Field(default=110, ge=0)
    duplicates: int = Field(default=3, ge=0, description="COCO images copied into other sources")
    truncated: int = Field(default=1, ge=0, description="broken JPEGs among the keyword folders")
    negatives_per_image: int = Field(default=3, ge=0, description="Open Images verified negatives")
    quality: int = Field(default=92, ge=50, le=100)


def demo_known_tags(taxonomy: Taxonomy | None = None) -> list[str]:
    """Every tag a demo scene can show (classes, backgrounds) plus its ancestors, in taxonomy
    order: the tags the internal source is exhaustive over (absent = known negative)."""
    tax = taxonomy or load_default_taxonomy()
    drawn = [*(c.tag for c in DEMO_CLASSES), *(t for b in BACKGROUNDS for t in b.tags)]
    return tax.with_ancestors(drawn)


def draw_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    required: DemoClass | Background | None = None,
) -> DemoScene:
    """Pick a background and objects (long-tailed rates; `required` always shown)."""
    rates = np.array([b.rate for b in BACKGROUNDS])
    background = BACKGROUNDS[int(rng.choice(len(BACKGROUNDS), p=rates / rates.sum()))]
    if isinstance(required, Background):
        background = required
    present = [c for c in DEMO_CLASSES if rng.random() < c.rate or c is required]
    objects = []
    for cls in sorted(present, key=lambda c: -c.size[1]):  # large first, small on top
        side = rng.uniform(*cls.size) * min(width, height) * 1.3
        w = min(width - 2, side * np.sqrt(cls.aspect))
        h = min(height - 2, side / np.sqrt(cls.aspect))
        x0 = rng.uniform(1, width - w - 1)
        y0 = rng.uniform(1, height - h - 1)
        objects.append(
            DemoObject(cls, (round(x0, 1), round(y0, 1), round(x0 + w, 1), round(y0 + h, 1)))
        )
    shift = round(float(rng.uniform(-0.08, 0.08)), 3)
    tint = (int(rng.integers(-12, 13)), int(rng.integers(-12, 13)), int(rng.integers(-12, 13)))
    return DemoScene(background, tuple(objects), width, height, shift, tint)


def render_scene(scene: DemoScene) -> Image.Image:
    """The scene as an RGB image."""
    image = Image.new("RGB", (scene.width, scene.height))
    d = ImageDraw.Draw(image)
    bands = scene.background.bands
    for i, (top, colour) in enumerate(bands):
        y0 = 0.0 if i == 0 else (top + scene.shift) * scene.height
        y1 = (bands[i + 1][0] + scene.shift) * scene.height if i + 1 < len(bands) else scene.height
        fill = tuple(min(255, max(0, c + t)) for c, t in zip(colour, scene.tint, strict=True))
        d.rectangle((0, y0, scene.width, y1), fill=fill)
    for obj in scene.objects:
        obj.cls.paint(d, obj.box)
    return image


# ---- writing the sources ----------------------------------------------------------------------


@dataclass
class DemoData:
    """What `write_demo_data` wrote: the folder, the assembly config and the scenes by file."""

    root: Path
    config: Path
    scenes: dict[str, DemoScene]  # path relative to root -> scene
    problems: list[str]  # relative paths written broken on purpose


def _save(scene: DemoScene, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    render_scene(scene).save(path, format="JPEG", quality=quality)


def _scenes(rng: np.random.Generator, n: int, cfg: DemoConfig) -> list[DemoScene]:
    return [draw_scene(rng, cfg.size, cfg.size * 3 // 4) for _ in range(n)]


def _write_coco(root: Path, scenes: list[DemoScene], cfg: DemoConfig) -> dict[str, DemoScene]:
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    out: dict[str, DemoScene] = {}
    for i, scene in enumerate(scenes):
        name = f"coco_{i:04d}.jpg"
        _save(scene, root / "coco" / "images" / name, cfg.quality)
        out[f"coco/images/{name}"] = scene
        images.append(
            {"id": i + 1, "file_name": name, "width": scene.width, "height": scene.height}
        )
        for obj in scene.objects:
            if obj.cls.coco is None:
                continue
            x0, y0, x1, y1 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": COCO_IDS[obj.cls.coco],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": cid, "name": name, "supercategory": "demo"}
        for name, cid in sorted(COCO_IDS.items(), key=lambda kv: kv[1])
    ]
    path = root / "coco" / "instances.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}),
        encoding="utf-8",
    )
    return out


def _write_voc(
    root: Path, scenes: list[DemoScene], cfg: DemoConfig, rng: np.random.Generator
) -> dict[str, DemoScene]:
    out: dict[str, DemoScene] = {}
    (root / "voc" / "Annotations").mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        stem = f"voc_{i:04d}"
        _save(scene, root / "voc" / "JPEGImages" / f"{stem}.jpg", cfg.quality)
        out[f"voc/JPEGImages/{stem}.jpg"] = scene
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = f"{stem}.jpg"
        size = ET.SubElement(ann, "size")
        for key, value in (("width", scene.width), ("height", scene.height), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        for obj in scene.objects:
            if obj.cls.voc is None:
                continue
            node = ET.SubElement(ann, "object")
            ET.SubElement(node, "name").text = obj.cls.voc
            small = obj.box[2] - obj.box[0] < 0.15 * scene.width
            ET.SubElement(node, "difficult").text = str(int(small and rng.random() < 0.3))
            box = ET.SubElement(node, "bndbox")
            x0, y0, x1, y1 = obj.box  # VOC: 1-based inclusive pixels
            for key, pixel in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
                ET.SubElement(box, key).text = str(round(pixel))
        ET.ElementTree(ann).write(root / "voc" / "Annotations" / f"{stem}.xml")
    return out


def _write_openimages(
    root: Path,
    scenes: list[DemoScene],
    cfg: DemoConfig,
    rng: np.random.Generator,
    taxonomy: Taxonomy,
) -> dict[str, DemoScene]:
    out, labels, boxes = {}, [], []
    with_mid = [c for c in DEMO_CLASSES if c.openimages]
    for scene in scenes:
        image_id = f"{rng.integers(0, 2**63):016x}"
        _save(scene, root / "openimages" / "images" / f"{image_id}.jpg", cfg.quality)
        out[f"openimages/images/{image_id}.jpg"] = scene
        shown = {o.cls.tag for o in scene.objects}
        for obj in scene.objects:
            if obj.cls.openimages is None:
                continue
            x0, y0, x1, y1 = obj.box
            boxes.append(
                [
                    image_id,
                    "xclick",
                    obj.cls.openimages,
                    1,
                    x0 / scene.width,
                    x1 / scene.width,
                    y0 / scene.height,
                    y1 / scene.height,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]
            )
        for mid in dict.fromkeys(o.cls.openimages for o in scene.objects if o.cls.openimages):
            labels.append([image_id, "verification", mid, 1])
        absent = [c for c in with_mid if c.tag not in shown]
        picks = rng.permutation(len(absent))[: cfg.negatives_per_image]
        labels.extend([image_id, "verification", absent[j].openimages, 0] for j in picks)
        shown_all = set(taxonomy.with_ancestors(scene.tags))  # grass is a plant
        labels.extend(
            [image_id, "verification", mid, 0]
            for mid, tag in PARENT_MIDS.items()
            if tag not in shown_all
        )
    _write_csv(
        root / "openimages" / "labels.csv", ["ImageID", "Source", "LabelName", "Confidence"], labels
    )
    _write_csv(
        root / "openimages" / "boxes.csv",
        [
            "ImageID",
            "Source",
            "LabelName",
            "Confidence",
            "XMin",
            "XMax",
            "YMin",
            "YMax",
            "IsOccluded",
            "IsTruncated",
            "IsGroupOf",
            "IsDepiction",
            "IsInside",
        ],
        boxes,
    )
    return out


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([f"{v:.6f}" if isinstance(v, float) else v for v in r] for r in rows)


def _keyword_targets() -> list[DemoClass | Background]:
    return [*(c for c in DEMO_CLASSES if c.keyword), *(b for b in BACKGROUNDS if b.keyword)]


def _write_keywords(
    root: Path, n: int, cfg: DemoConfig, rng: np.random.Generator
) -> dict[str, DemoScene]:
    targets = _keyword_targets()
    out: dict[str, DemoScene] = {}
    for i in range(n):
        target = targets[i % len(targets)]
        scene = draw_scene(rng, cfg.size, cfg.size * 3 // 4, required=target)
        rel = f"keywords/{target.keyword}/kw_{i:04d}.jpg"
        _save(scene, root / rel, cfg.quality)
        out[rel] = scene
    return out


def _write_internal(
    root: Path, scenes: list[DemoScene], cfg: DemoConfig, extra: dict[str, DemoScene]
) -> dict[str, DemoScene]:
    out, rows = {}, []
    for i, scene in enumerate(scenes):
        rel = f"images/int_{i:04d}.jpg"
        _save(scene, root / "internal" / rel, cfg.quality)
        out[f"internal/{rel}"] = scene
        rows.append([rel, "|".join(scene.tags)])
    for rel, scene in extra.items():  # duplicates: the same file listed by path
        rows.append([f"../{rel}", "|".join(scene.tags)])
    _write_csv(root / "internal" / "tags.csv", ["path", "tags"], rows)
    return out


def write_demo_data(out_dir: str | Path, config: DemoConfig | None = None) -> DemoData:
    """Draw the demo set into `out_dir` (replacing a previous one) plus `assemble.yaml`."""
    cfg = config or DemoConfig()
    root = Path(out_dir)
    for sub in ("coco", "voc", "openimages", "keywords", "internal"):
        shutil.rmtree(root / sub, ignore_errors=True)
    rng = np.random.default_rng(cfg.seed)
    taxonomy = load_default_taxonomy()
    scenes: dict[str, DemoScene] = {}
    coco = _write_coco(root, _scenes(rng, cfg.coco, cfg), cfg)
    scenes |= coco
    scenes |= _write_voc(root, _scenes(rng, cfg.voc, cfg), cfg, rng)
    scenes |= _write_openimages(root, _scenes(rng, cfg.openimages, cfg), cfg, rng, taxonomy)
    scenes |= _write_keywords(root, cfg.keywords, cfg, rng)
    copies = _write_duplicates(root, coco, cfg.duplicates)
    scenes |= copies
    internal_extra = dict(list(coco.items())[: min(1, cfg.duplicates)])
    scenes |= _write_internal(root, _scenes(rng, cfg.internal, cfg), cfg, internal_extra)
    broken = _write_truncated(root, cfg, rng)
    config_path = write_demo_config(root / "assemble.yaml", taxonomy=taxonomy)
    return DemoData(root, config_path, scenes, broken)


def _write_duplicates(root: Path, coco: dict[str, DemoScene], n: int) -> dict[str, DemoScene]:
    """Copy COCO images that show a keyword class into that keyword's folder."""
    out: dict[str, DemoScene] = {}
    for rel, scene in coco.items():
        if len(out) >= n:
            break
        keyword = next((o.cls.keyword for o in scene.objects if o.cls.keyword), None)
        if keyword is None:
            continue
        copy = f"keywords/{keyword}/copy_{Path(rel).name}"
        (root / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, root / copy)
        out[copy] = scene
    return out


def _write_truncated(root: Path, cfg: DemoConfig, rng: np.random.Generator) -> list[str]:
    out = []
    for i in range(cfg.truncated):
        scene = draw_scene(rng, cfg.size, cfg.size * 3 // 4, required=DEMO_CLASSES[0])
        rel = f"keywords/{DEMO_CLASSES[0].keyword}/broken_{i:02d}.jpg"
        _save(scene, root / rel, cfg.quality)
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: len(data) // 2])
        out.append(rel)
    return out


def demo_sources(taxonomy: Taxonomy | None = None) -> list[dict[str, Any]]:
    """The `sources` of an assembly config for the demo folder (paths relative to it).

    The internal CSV lists every drawn tag, so it is declared exhaustive over
    `demo_known_tags()`: its images are the known negatives of scene and parent tags.
    """
    return [
        {
            "name": "demo_coco",
            "format": "coco",
            "paths": {"instances_json": "coco/instances.json", "images_dir": "coco/images"},
        },
        {
            "name": "demo_voc",
            "format": "voc",
            "paths": {"annotations_dir": "voc/Annotations", "images_dir": "voc/JPEGImages"},
            "options": {"difficult": "ignore"},
        },
        {
            "name": "demo_openimages",
            "format": "openimages",
            "paths": {
                "labels_csv": "openimages/labels.csv",
                "boxes_csv": "openimages/boxes.csv",
                "images_dir": "openimages/images",
            },
        },
        {"name": "demo_keywords", "format": "keyword_folders", "paths": {"root": "keywords"}},
        {
            "name": "demo_internal",
            "format": "internal_csv",
            "paths": {"csv_path": "internal/tags.csv"},
            "negatives": "exhaustive",
            "known_tags": demo_known_tags(taxonomy),
        },
    ]


def demo_config_dict(
    data_root: str = ".", output_dir: str = "assembled", taxonomy: Taxonomy | None = None
) -> dict[str, Any]:
    """An assembly config (plain data) for the demo folder.

    The cache is built in this process (workers 0): for ~320 small images that is faster than
    starting worker processes.
    """
    return {
        "data_root": data_root,
        "output_dir": output_dir,
        "min_count": 5,
        "folds": {"k": 5, "seed": 0},
        "cache": {"enabled": True, "size": 128, "workers": 0},
        "sources": demo_sources(taxonomy),
    }


def write_demo_config(
    path: str | Path,
    data_root: str = ".",
    output_dir: str = "assembled",
    taxonomy: Taxonomy | None = None,
) -> Path:
    """Write the demo assembly config YAML (paths relative to its own folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `tagger demo-data`; run: tagger assemble <this file>\n"
    body = yaml.safe_dump(demo_config_dict(data_root, output_dir, taxonomy), sort_keys=False)
    path.write_text(header + body, encoding="utf-8")
    return path
