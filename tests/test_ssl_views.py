"""Contrastive views, crop labelling for the class folder, and mixed frame sources."""

import numpy as np
import pytest

from marsedge.data.preprocess import PreprocessSpec
from marsedge.data.views import ContrastiveViewConfig, contrastive_view, random_resized_crop_box, view_rng
from marsedge.errors import DataError
from marsedge.ssl.class_folder import crop_class, list_class_folder


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(100, 120, (0.2, 1.0), (3 / 4, 4 / 3), rng)
        assert top >= 0 and left >= 0
        assert top + h <= 100 and left + w <= 120
        assert 0.2 * 12000 * 0.9 <= h * w <= 12000
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_views_are_seeded_differ_and_stay_in_range():
    image = (np.arange(96 * 96) % 251).astype(np.uint8).reshape(96, 96)
    spec = PreprocessSpec(64, 64, channels=1)
    cfg = ContrastiveViewConfig()
    a = contrastive_view(image, spec, cfg, view_rng(0, 0, 5, 0))
    again = contrastive_view(image, spec, cfg, view_rng(0, 0, 5, 0))
    b = contrastive_view(image, spec, cfg, view_rng(0, 0, 5, 1))
    assert a.shape == (1, 64, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, again)  # same (seed, epoch, index, view): same view
    assert not np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_colour_views_can_turn_grey():
    rng_image = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    cfg = ContrastiveViewConfig(grey_prob=1.0, jitter_prob=0.0, blur_prob=0.0)
    view = contrastive_view(rng_image, PreprocessSpec(32, 32, channels=3), cfg, view_rng(0, 0, 0, 0))
    assert view.shape == (3, 32, 32)
    np.testing.assert_allclose(view[0], view[1], atol=1e-6)
    np.testing.assert_allclose(view[1], view[2], atol=1e-6)


def test_crop_class_majority_and_thresholds():
    label = np.full((10, 10), 1, np.uint8)
    label[:3] = 2  # 70 % bedrock
    assert crop_class(label, 0.5, 0.6) == 1
    assert crop_class(label, 0.5, 0.8) is None  # no class holds 80 %
    label[:6] = 255  # 40 % labelled
    assert crop_class(label, 0.5, 0.6) is None


def test_list_class_folder_maps_test_classes_to_train_indices(tmp_path):
    import cv2

    for part, classes in (("train", ["sand", "soil", "bedrock"]), ("test", ["soil", "sand"])):
        for name in classes:
            (tmp_path / part / name).mkdir(parents=True)
            cv2.imwrite(str(tmp_path / part / name / "a.png"), np.zeros((8, 8), np.uint8))
    _, targets, classes = list_class_folder(tmp_path / "train")
    assert classes == ["bedrock", "sand", "soil"] and targets == [0, 1, 2]
    _, test_targets, _ = list_class_folder(tmp_path / "test", classes)
    assert test_targets == [1, 2]
    (tmp_path / "test" / "rover").mkdir()
    cv2.imwrite(str(tmp_path / "test" / "rover" / "b.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="rover"):
        list_class_folder(tmp_path / "test", classes)
