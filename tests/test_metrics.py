"""Metrics from one confusion matrix, checked against matrices computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.metrics import ConfusionMatrix, plot_confusion, segmentation_metrics

# 8 pixels, one ignored. Pairs (truth, pred): (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,0)
TARGET = np.array([0, 0, 0, 1, 1, 2, 255, 2], np.uint8)
PRED = np.array([0, 0, 1, 1, 2, 2, 0, 0], np.uint8)
BY_HAND = np.array([[2, 1, 0], [0, 1, 1], [1, 0, 1]])


def test_matrix_by_hand_and_ignore_dropped():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    np.testing.assert_array_equal(cm.matrix, BY_HAND)


def test_metrics_by_hand():
    m = segmentation_metrics(BY_HAND, ["a", "b", "c"])
    assert m["pixels"] == 7
    assert m["pixel_accuracy"] == pytest.approx(4 / 7)
    assert m["iou"] == pytest.approx({"a": 2 / 4, "b": 1 / 3, "c": 1 / 3})
    assert m["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)
    assert m["recall"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1 / 2})
    assert m["precision"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1 / 2})
    assert m["macc"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    # FW-IoU: freq (3/7, 2/7, 2/7) times IoU (1/2, 1/3, 1/3) = 9/42 + 4/42 + 4/42
    assert m["fwiou"] == pytest.approx(17 / 42)
    assert m["facc"] == m["fwiou"]


def test_fwiou_by_hand_differs_from_pixel_accuracy():
    # truth rows, prediction columns; class c is never true but predicted once
    matrix = np.array([[6, 2, 0],
                       [1, 3, 1],
                       [0, 0, 0]])
    # 13 labelled pixels; truth 8, 5, 0; predicted 7, 5, 1; TP 6, 3, 0
    # IoU a = 6 / (8 + 7 - 6) = 2/3, b = 3 / (5 + 5 - 3) = 3/7, c = 0 / (0 + 1 - 0) = 0
    # freq = 8/13, 5/13, 0 -> FW-IoU = 16/39 + 15/91 = 157/273 (~0.575); pixel accuracy 9/13 (~0.692)
    m = segmentation_metrics(matrix, ["a", "b", "c"])
    assert m["iou"] == pytest.approx({"a": 2 / 3, "b": 3 / 7, "c": 0.0})
    assert m["fwiou"] == pytest.approx(157 / 273)
    assert m["facc"] == pytest.approx(157 / 273)
    assert m["pixel_accuracy"] == pytest.approx(9 / 13)
    assert abs(m["fwiou"] - m["pixel_accuracy"]) > 0.1


def test_absent_classes_are_excluded_from_the_means():
    matrix = np.zeros((4, 4), int)
    matrix[:3, :3] = BY_HAND  # class 3 never true, never predicted
    m = segmentation_metrics(matrix)
    assert m["iou"]["big rock"] is None and m["recall"]["big rock"] is None and m["f1"]["big rock"] is None
    assert m["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)
    assert m["macc"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)


def test_class_missed_or_hallucinated_counts_as_zero():
    # truth (0, 1), prediction (0, 0): class 1 is present but never predicted
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0]), np.array([0, 1]))
    m = cm.compute(["a", "b"])
    assert m["iou"] == pytest.approx({"a": 0.5, "b": 0.0})
    assert m["miou"] == pytest.approx(0.25)
    assert m["f1"]["a"] == pytest.approx(2 / 3) and m["f1"]["b"] == 0.0
    assert m["macro_f1"] == pytest.approx(1 / 3)
    assert m["precision"]["b"] is None and m["recall"]["b"] == 0.0
    # the reverse: class 1 predicted but never true
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 1]), np.array([0, 0]))
    m = cm.compute(["a", "b"])
    assert m["iou"]["b"] == 0.0 and m["f1"]["b"] == 0.0 and m["recall"]["b"] is None
    assert m["macc"] == pytest.approx(0.5)  # only class a has truth: recall 1/2


def test_merge_across_batches_equals_one_pass():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, (4, 16, 16)).astype(np.uint8)
    target[rng.random(target.shape) < 0.2] = 255
    pred = rng.integers(0, 6, (4, 16, 16)).astype(np.uint8)
    whole = ConfusionMatrix(6)
    whole.update(pred, target)
    parts = [ConfusionMatrix(6) for _ in range(4)]
    for i, part in enumerate(parts):
        part.update(pred[i], target[i])
    merged = parts[0] + parts[1] + parts[2] + parts[3]
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    assert merged.compute() == whole.compute()
    assert merged.matrix.sum() == int((target != 255).sum())


def test_bad_input_is_refused():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="pixels"):
        cm.update(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="class id outside"):
        cm.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match="different sizes"):
        ConfusionMatrix(3) + ConfusionMatrix(4)


def test_empty_matrix_gives_nan_not_errors():
    m = ConfusionMatrix(3).compute()
    assert np.isnan(m["pixel_accuracy"]) and np.isnan(m["miou"]) and m["pixels"] == 0
    assert np.isnan(m["fwiou"]) and np.isnan(m["facc"])


def test_plot_confusion_rows_normalised(tmp_path):
    path = plot_confusion(BY_HAND, tmp_path / "cm.png", ["a", "b", "c"])
    assert path.read_bytes()[:4] == b"\x89PNG"
