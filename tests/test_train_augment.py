"""Joint image + label augmentation: labels move with their pixels, randomness is per (seed, epoch,
frame), and the training tensors come out of THE preprocessing."""

from __future__ import annotations

import numpy as np
import torch

from marsedge.data.ai4mars import AI4MarsDataset
from marsedge.data.augment import JointAugmentConfig, geometric, hflip, photometric, sample_rng, scale_crop
from marsedge.data.preprocess import PreprocessSpec, preprocess, resize_label
from marsedge.train.supervised import SegmentationFrames


def coded_frame(h=40, w=60):
    """A label and an image that encodes it (image = 50 * label), so alignment is checkable."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(h, w)).astype(np.uint8)
    return (label * 50).astype(np.uint8), label


def test_hflip_moves_image_and_label_together():
    image, label = coded_frame()
    fi, fl = hflip(image, label)
    assert np.array_equal(fi[:, 0], image[:, -1]) and np.array_equal(fl, label[:, ::-1])


def test_zoom_out_pads_image_black_and_label_ignore():
    image, label = coded_frame()
    out_i, out_l = scale_crop(image, label, 0.5, np.random.default_rng(1))
    assert out_i.shape == (80, 120) and out_l.shape == (80, 120)
    pad = out_l == 255
    assert pad.sum() == 80 * 120 - 40 * 60 and np.all(out_i[pad] == 0)


def test_geometric_keeps_labels_aligned_with_pixels():
    image, label = coded_frame()
    cfg = JointAugmentConfig(hflip=0.5, scale=(0.6, 1.8))
    for seed in range(20):
        out_i, out_l = geometric(image, label, cfg, np.random.default_rng(seed))
        keep = out_l != 255
        assert np.array_equal(out_i[keep], out_l[keep].astype(np.uint8) * 50)


def test_photometric_stays_in_range_and_is_seeded():
    x = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    cfg = JointAugmentConfig(blur_prob=1.0, noise_prob=1.0, brightness=0.5, contrast=0.5)
    a = photometric(x, cfg, sample_rng(0, 1, 2))
    b = photometric(x, cfg, sample_rng(0, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, x)
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.dtype == np.float32


def test_frames_are_deterministic_per_epoch_and_use_the_preprocessing(tiny_ai4mars):
    source = AI4MarsDataset(tiny_ai4mars, "train")
    spec = PreprocessSpec(64, 64)
    frames = SegmentationFrames(source, spec, JointAugmentConfig(), seed=5)
    first = frames[3]
    assert torch.equal(first["image"], frames[3]["image"])  # any worker, any time: same frame
    frames.set_epoch(1)
    assert not torch.equal(first["image"], frames[3]["image"])  # a new epoch, a new draw
    assert first["image"].shape == (1, 64, 64) and first["label"].dtype == torch.int64
    plain = SegmentationFrames(source, spec)[3]
    sample = source[3]
    assert np.array_equal(plain["image"].numpy(), preprocess(sample.image, spec))
    assert np.array_equal(plain["label"].numpy(), resize_label(sample.label, 64, 64))
