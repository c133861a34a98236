"""Ward et al.'s linear evaluation protocol, checked so that a broken protocol fails: features that a
linear map separates must reach > 0.9 test accuracy, and the same features with shuffled training
labels must not (a protocol that trains on the test split, scores the training split, misaligns
features and labels or never trains passes one of the two but not both).

The mode runs end to end (val split by spacecraft clock, label fraction, training loop, best.pt on
val, test scored once) on hand-made "backbone features": the backbone and its feature extraction
are replaced, everything after them is the mode's own code.
"""

import numpy as np
import pytest

from marsedge.train.modes import linear_eval, resolve_mode

CLASSES = ["bedrock", "sand", "soil"]
DIM = 12


def blobs(n_per_class: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Three Gaussian blobs 6 standard deviations apart along their own axis: linearly separable."""
    rng = np.random.default_rng(seed)
    feats, targets = [], []
    for c in range(len(CLASSES)):
        centre = np.zeros(DIM, dtype=np.float32)
        centre[c] = 6.0
        feats.append(centre + rng.standard_normal((n_per_class, DIM)).astype(np.float32))
        targets += [c] * n_per_class
    return np.concatenate(feats), targets


def crop_paths(n: int, part: str):
    """MSL-style crop names (`<frame>_<row>_<col>`), one frame per crop, ten minutes apart."""
    from pathlib import Path

    return [Path(f"{part}/NLA_{397000000 + 600 * i}EDR_F0020000AUT_04096M1_0_0.png") for i in range(n)]


def run_protocol(monkeypatch, tmp_path, shuffle_train_labels: bool) -> dict:
    train_x, train_y = blobs(60, seed=0)
    test_x, test_y = blobs(30, seed=1)
    if shuffle_train_labels:
        train_y = np.random.default_rng(2).permutation(train_y).tolist()
    features = {"train": (train_x, train_y), "test": (test_x, test_y)}

    def precompute(cfg, backbone, part, device, classes=None):
        x, y = features[part]
        return x, list(y), list(CLASSES), crop_paths(len(y), part)

    monkeypatch.setattr(linear_eval, "load_backbone", lambda *a, **k: (None, None))
    monkeypatch.setattr(linear_eval, "precompute", precompute)
    mode = resolve_mode("linear_eval")
    cfg = mode.config()
    cfg.name, cfg.epochs, cfg.batch_size, cfg.num_workers, cfg.seed = "probe", 10, 32, 0, 0
    cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.schedule = "adamw", 0.01, 0.0, "constant"
    cfg.data.val_fraction = 0.2
    cfg.run.out_dir, cfg.run.device, cfg.run.progress, cfg.run.eval_every = str(tmp_path), "cpu", False, 2
    cfg.validate()
    summary = mode.run(cfg)
    assert summary["val_images"] > 0 and summary["test_images"] == len(test_y)
    return summary["test_metrics"]


def test_separable_features_reach_high_test_accuracy(monkeypatch, tmp_path):
    metrics = run_protocol(monkeypatch, tmp_path, shuffle_train_labels=False)
    assert metrics["accuracy"] > 0.9 and metrics["balanced_accuracy"] > 0.9


def test_shuffled_training_labels_stay_near_chance(monkeypatch, tmp_path):
    metrics = run_protocol(monkeypatch, tmp_path, shuffle_train_labels=True)
    assert metrics["accuracy"] < 0.6  # chance is 1/3


def test_label_fraction_is_stratified_and_seeded():
    targets = [0] * 50 + [1] * 10 + [2] * 2
    keep = linear_eval.stratified_fraction(targets, 0.1, seed=0)
    counts = np.bincount([targets[i] for i in keep], minlength=3).tolist()
    assert counts == [5, 1, 1]  # at least one per class
    assert keep == linear_eval.stratified_fraction(targets, 0.1, seed=0)
    with pytest.raises(Exception, match="label_fraction"):
        linear_eval.stratified_fraction(targets, 0.0, seed=0)
