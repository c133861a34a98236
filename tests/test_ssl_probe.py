"""Pretraining's dense feature probe (marsedge.ssl.probe): its decisions against scikit-learn's
nearest-neighbour classifiers, its scores on features that carry the label (mIoU 1) and on constant
features (one class everywhere), and `pretrain.probe` end to end on the tiny synthetic tree: the
probe's eval records in metrics.jsonl, a resume that reads as one run, selection only when asked,
and the one-line refusals of a probe with no labelled data."""

import json

import numpy as np
import pytest
import torch
from pretrain_support import write_pretrain_config
from sklearn.neighbors import KNeighborsClassifier
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from marsedge.cli import main
from marsedge.metrics import segmentation_metrics
from marsedge.models.checkpoints import load_checkpoint
from marsedge.ssl.probe import PixelProbe, ProbeEvaluator, grid_labels, labelled_pixels
from marsedge.terrain import IGNORE_INDEX

K = 4  # classes in the synthetic cases


def clustered_pixels(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features around one random direction per class (the same for every seed), and
    their classes."""
    centres = np.random.default_rng(99).normal(size=(K, dim))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    features = centres[labels] + rng.normal(scale=1.5, size=(n, dim))
    return F.normalize(torch.from_numpy(features).float(), dim=1), torch.from_numpy(labels)


def test_grid_labels_take_each_cells_most_frequent_labelled_class():
    ig = IGNORE_INDEX
    label = torch.tensor([[[0, 1, 2, 2],
                           [1, 1, 2, ig],
                           [ig, ig, 3, 0],
                           [ig, ig, 0, 3]]])
    # cells: 3 ones beat a zero; ignore pixels do not vote; nothing labelled -> ignore; a 2-2 tie -> 0
    assert grid_labels(label, 2, 2, K).tolist() == [[[1, 2], [ig, 0]]]
    assert grid_labels(torch.tensor([[[7, 7], [7, 1]]]), 1, 1, K).tolist() == [[[1]]]  # 7: not a class


def test_centroid_probe_is_the_nearest_normalised_class_mean():
    train_f, train_y = clustered_pixels(600, 8, seed=0)
    val_f, val_y = clustered_pixels(300, 8, seed=1)
    ours = PixelProbe(K, "centroid").fit(train_f, train_y).predict(val_f).numpy()
    # reference: class means in numpy, normalised; for unit vectors the largest dot product is the
    # smallest Euclidean distance, so 1-NN over the prototypes decides the same
    x, y = train_f.numpy().astype(np.float64), train_y.numpy()
    means = np.stack([x[y == c].mean(axis=0) for c in range(K)])
    prototypes = means / np.linalg.norm(means, axis=1, keepdims=True)
    reference = KNeighborsClassifier(n_neighbors=1).fit(prototypes, np.arange(K)).predict(val_f.numpy())
    np.testing.assert_array_equal(ours, reference)
    assert 0.3 < (ours == val_y.numpy()).mean() < 1  # a real, imperfect probe


@pytest.mark.parametrize("k", [1, 7])
def test_knn_probe_matches_scikit_learn(k):
    train_f, train_y = clustered_pixels(400, 6, seed=2)
    val_f, _ = clustered_pixels(200, 6, seed=3)
    ours = PixelProbe(K, "knn", k=k, bank=10_000).fit(train_f, train_y).predict(val_f).numpy()
    knn = KNeighborsClassifier(n_neighbors=k).fit(train_f.numpy(), train_y.numpy())
    reference = knn.predict(val_f.numpy())
    np.testing.assert_array_equal(ours, reference)
    # the bank is a seeded sample: the same seed, the same predictions
    sampled = [PixelProbe(K, "knn", k=k, bank=50, seed=5).fit(train_f, train_y) for _ in range(2)]
    assert len(sampled[0].bank_labels) == 50
    assert torch.equal(sampled[0].predict(val_f), sampled[1].predict(val_f))


class LabelPictures(Dataset):
    """Frames whose image is the one-hot picture of their label (K x 8 x 8), labels constant over
    each 2 x 2 cell, so a stride-2 average pool of the image is the one-hot label of each cell."""

    def __init__(self, seed: int, n: int = 6) -> None:
        rng = np.random.default_rng(seed)
        cells = torch.from_numpy(rng.integers(0, K, (n, 4, 4)))
        self.labels = cells.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": F.one_hot(self.labels[i], K).permute(2, 0, 1).float(), "label": self.labels[i]}


class PooledPixels(nn.Module):
    """A stand-in backbone (stride 2): `out` is the image average-pooled, or a constant."""

    def __init__(self, constant: bool) -> None:
        super().__init__()
        self.constant = constant

    def forward(self, x: torch.Tensor) -> dict:
        pooled = F.avg_pool2d(x, 2)
        return {"out": torch.ones_like(pooled) if self.constant else pooled}


class Holder(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


class State:
    device = torch.device("cpu")


@pytest.mark.parametrize("method", ["centroid", "knn"])
def test_features_that_carry_the_label_score_one_and_constant_features_the_trivial_value(method):
    train, val = LabelPictures(seed=0), LabelPictures(seed=1)
    probe = ProbeEvaluator(train, val, K, method, k=5, bank=1000, seed=0, batch_size=4)
    perfect = probe(Holder(PooledPixels(constant=False)), State())
    assert perfect["miou"] == perfect["pixel_accuracy"] == 1.0
    assert perfect["probe_train_pixels"] == 6 * 16
    trivial = probe(Holder(PooledPixels(constant=True)), State())
    # every cell alike: every val cell is called the same class (for the centroids, a tie of all
    # prototypes: the smallest id)
    called_columns = np.flatnonzero(np.asarray(trivial["val/confusion"]).sum(axis=0))
    assert len(called_columns) == 1
    called = int(called_columns[0])
    assert method == "knn" or called == 0
    truth = val.labels[:, ::2, ::2].reshape(-1)
    matrix = np.zeros((K, K), dtype=np.int64)
    np.add.at(matrix, (truth.numpy(), called), 1)
    expected = segmentation_metrics(matrix)
    assert trivial["miou"] == pytest.approx(expected["miou"])
    assert trivial["pixel_accuracy"] == pytest.approx(float((truth == called).float().mean()))
    assert trivial["val/confusion"] == matrix.tolist()


def test_labelled_pixels_skip_ignore_cells():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    labels = torch.full((2, 4, 4), IGNORE_INDEX)
    labels[0, :2, :2] = 1
    labels[1, 2:, 2:] = 3
    features, classes = labelled_pixels(maps, labels, K)
    assert classes.tolist() == [1, 3]
    np.testing.assert_allclose(features.norm(dim=1).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(features[1].numpy(), F.normalize(maps[1, :, 1, 1], dim=0).numpy(), rtol=1e-6)


def test_the_probe_evaluation_line_names_the_probe_and_no_best_pt():
    from marsedge.train.engine.progress import eval_line

    record = {"miou": 0.25, "probe_train_pixels": 96, "ema/miou": 0.3}
    line = eval_line("p", 3, 10, 30, "miou", record, "raw", (None, -1, None), written=None)
    assert line == "[p] eval epoch 3/10 step 30: val probe miou 0.2500 (ema 0.3000)"  # no best.pt
    assert "best.pt kept" in eval_line("p", 3, 10, 30, "miou", {"miou": 0.25}, "raw", (0.3, 2, None), False)


# ---- pretrain.probe end to end -------------------------------------------------------------------

OVERRIDES = ["model.backbone=r18_0.25x_sk0", "data.preprocess.height=64", "data.preprocess.width=64",
             "num_workers=0", "run.progress=false", "run.device=cpu", "run.log_every=1", "seed=1",
             "run.eval_every=1", "pretrain.probe.frames=6"]


def pretrain_config(folder, root) -> str:
    return str(write_pretrain_config(folder, root, "simclr"))


def eval_records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "eval"]


def test_pretraining_logs_the_probe_every_epoch_and_resumes_as_one_run(tiny_ai4mars, tmp_path, capsys):
    config = pretrain_config(tmp_path, tiny_ai4mars)
    common = [*OVERRIDES, f"run.out_dir={tmp_path}"]
    assert main(["train", "--config", config, *common]) == 0
    assert main(["train", "--config", config, "--resume", *common, "epochs=2"]) == 0
    run_dir = tmp_path / "simclr"
    records = eval_records(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert 0.0 <= record["miou"] <= 1.0 and 0.0 <= record["pixel_accuracy"] <= 1.0
        assert record["probe_train_pixels"] > 0 and "val/confusion" in record
    out = capsys.readouterr().out
    assert "centroid probe, val miou:" in out and "the probe watches, selects nothing" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["probe"]["first"] == {"epoch": 1, "value": records[0]["miou"]}
    assert summary["probe"]["last"] == {"epoch": 2, "value": records[1]["miou"]}
    # the probe watches: best.pt is the final weights, as without a probe
    assert load_checkpoint(run_dir / "best.pt").extra["selected_on"]["split"] is None


def test_a_resume_may_turn_the_probe_on(tiny_ai4mars, tmp_path):
    config = pretrain_config(tmp_path, tiny_ai4mars)
    common = [*OVERRIDES, f"run.out_dir={tmp_path}"]
    assert main(["train", "--config", config, *common, "pretrain.probe.frames=0"]) == 0
    assert main(["train", "--config", config, "--resume", *common, "epochs=2"]) == 0
    run_dir = tmp_path / "simclr"
    assert [r["epoch"] for r in eval_records(run_dir)] == [2]
    history = json.loads((run_dir / "config_history.jsonl").read_text())
    assert history["changed"]["pretrain.probe.frames"] == {"from": 0, "to": 6}


def test_a_selecting_probe_chooses_best_pt_on_val(tiny_ai4mars, tmp_path):
    config = pretrain_config(tmp_path, tiny_ai4mars)
    assert main(["train", "--config", config, *OVERRIDES, f"run.out_dir={tmp_path}", "epochs=2",
                 "pretrain.probe.method=knn", "pretrain.probe.select=true", "pretrain.probe.height=96",
                 "pretrain.probe.width=96"]) == 0
    run_dir = tmp_path / "simclr"
    records = eval_records(run_dir)
    assert records[0]["probe_train_pixels"] > 6 * 4  # 96 px frames: 3 x 3 cells at stride 32, not 2 x 2
    chosen = load_checkpoint(run_dir / "best.pt").extra["selected_on"]
    assert chosen["split"] == "val" and chosen["metric"] == "miou"
    assert records[chosen["epoch"] - 1]["miou"] == max(r["miou"] for r in records)


@pytest.mark.parametrize("change, key", [
    (["data.val_fraction=0"], "data.val_fraction"),
    (["run.early_stop_patience=2"], "run.early_stop_patience"),
    ("empty root", "pretrain.probe.frames"),
])
def test_a_probe_without_labelled_data_is_a_one_line_refusal(tiny_ai4mars, tmp_path, capsys, change, key):
    config = pretrain_config(tmp_path, tiny_ai4mars)
    if change == "empty root":  # frames to pretrain on, but no labelled tree under data.root
        (tmp_path / "empty").mkdir()
        change = [f"data.root={tmp_path / 'empty'}"]
    assert main(["train", "--config", config, *OVERRIDES, f"run.out_dir={tmp_path}", *change]) == 2
    error = capsys.readouterr().err.strip()
    assert f"'{key}'" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "simclr" / "metrics.jsonl").exists()
