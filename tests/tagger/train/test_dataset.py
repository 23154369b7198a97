"""Dataset over the resized cache, transforms, and the loader factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tagger.data.images import ImageError
from tagger.data.manifest import targets_from_manifest
from tagger.train.dataset import (
    AugmentConfig,
    TaggingDataset,
    create_loader,
    eval_transform,
    normalize_images,
    random_crop_box,
    train_transform,
)
from tagger.train.sampling import RepeatFactorSampler, SeededSampler
from tests.tagger.synthetic_training import SyntheticData, make_synthetic_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    return make_synthetic_data(tmp_path_factory.mktemp("data"), n_images=10, cache_size=32)


def _dataset(
    data: SyntheticData, first_path: str | None = None, **kwargs: object
) -> TaggingDataset:
    targets, known = targets_from_manifest(data.manifest, data.taxonomy)
    paths = data.manifest["path"].tolist()
    if first_path is not None:
        paths[0] = first_path
    args: dict[str, object] = {
        "image_size": 24,
        "cache_dir": data.cache_dir,
        "cache_size": data.cache_size,
    } | kwargs
    return TaggingDataset(paths, data.manifest["content_hash"].tolist(), targets, known, **args)  # type: ignore[arg-type]


def test_item_shapes_dtypes_and_labels(data: SyntheticData) -> None:
    ds = _dataset(data)
    image, targets, known = ds[3]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8
    assert targets.dtype == torch.float32 and known.dtype == torch.bool
    expected_t, expected_k = targets_from_manifest(data.manifest, data.taxonomy)
    np.testing.assert_array_equal(targets.numpy(), expected_t[3])
    np.testing.assert_array_equal(known.numpy(), expected_k[3])
    assert not known[-1]  # image 3 comes from the source that does not know the last tags


def test_normalized_output_matches_batch_normalisation(data: SyntheticData) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    raw = _dataset(data)[2][0]
    norm = _dataset(data, normalize=(mean, std))[2][0]
    assert norm.dtype == torch.float32
    torch.testing.assert_close(norm, normalize_images(raw[None], mean, std)[0])
    pixel = raw[:, 0, 0].float() / 255
    torch.testing.assert_close(norm[:, 0, 0], (pixel - torch.tensor(mean)) / torch.tensor(std))


def test_reads_the_cache_and_falls_back_to_the_original(
    data: SyntheticData, tmp_path: Path
) -> None:
    ds = _dataset(data)
    cached = ds[0][0]
    # the cached JPEG (32 px, lossy) differs from a decode of the PNG original
    no_cache = _dataset(data, cache_dir=tmp_path / "empty")
    original = no_cache[0][0]
    assert not torch.equal(cached, original)
    assert (cached.float() - original.float()).abs().mean() < 25  # same picture
    # without the original, the cache alone serves the image
    gone = str(tmp_path / "gone.png")
    assert torch.equal(_dataset(data, first_path=gone)[0][0], cached)
    # neither cached nor on disk: the decoding error names the file
    with pytest.raises(ImageError, match=r"gone\.png"):
        _dataset(data, first_path=gone, cache_dir=tmp_path / "empty")[0]


def test_augmentation_is_a_function_of_the_seed(data: SyntheticData) -> None:
    ds = _dataset(data, augment=AugmentConfig())
    a, b = ds[(4, 11)][0], ds[(4, 11)][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, ds[(4, 12)][0])
    evaluation = _dataset(data)
    assert torch.equal(evaluation[4][0], evaluation[(4, 99)][0])  # no augmentation: seed unused


def test_full_crop_with_flip_is_the_mirrored_eval_view() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    cfg = AugmentConfig(
        min_scale=1.0, max_scale=1.0, min_ratio=40 / 30, max_ratio=40 / 30, hflip=1.0
    )
    out = train_transform(image, 16, cfg, np.random.default_rng(0))
    expected = eval_transform(image, 16, "squash").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


def test_random_crop_box_stays_inside_and_within_scale() -> None:
    cfg = AugmentConfig(min_scale=0.3, max_scale=0.8)
    rng = np.random.default_rng(1)
    for _ in range(200):
        left, top, right, bottom = random_crop_box(50, 30, cfg, rng)
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 30
        area = (right - left) * (bottom - top) / (50 * 30)
        assert 0.25 <= area <= 0.85
    # impossible ratio range falls back to the largest central crop inside the image
    wide = AugmentConfig(min_ratio=3.0, max_ratio=4.0, min_scale=1.0)  # w/h >= 3
    assert random_crop_box(20, 20, wide, rng) == (0, 6, 20, 13)  # 20 x round(20 / 3)


def test_augment_config_rejects_inverted_ranges() -> None:
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        AugmentConfig(min_scale=0.9, max_scale=0.5)


def test_loader_batches_identical_with_and_without_workers(data: SyntheticData) -> None:
    ds = _dataset(data, augment=AugmentConfig())
    batches = []
    for workers in (0, 2):
        sampler = SeededSampler(RepeatFactorSampler(np.full(len(ds), 1.5), seed=4))
        sampler.set_epoch(2)
        loader = create_loader(
            ds, batch_size=4, sampler=sampler, num_workers=workers, drop_last=True, pin_memory=False
        )
        batches.append([b[0] for b in loader])
    assert len(batches[0]) == len(batches[1]) > 0
    for x, y in zip(*batches, strict=True):
        assert x.shape == (4, 3, 24, 24)
        assert torch.equal(x, y)
