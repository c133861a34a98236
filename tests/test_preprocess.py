"""THE preprocessing: determinism, shapes, gain and clipping, nearest-neighbour labels, spec round trip."""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.data.preprocess import PreprocessSpec, preprocess, preprocess_batch, resize_label, to_grey
from marsedge.errors import ConfigError, FrameError

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (96, 96), dtype=np.uint8)
COLOUR = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)


def test_deterministic_and_float32():
    spec = PreprocessSpec(64, 64)
    a, b = preprocess(GREY, spec), preprocess(GREY.copy(), spec)
    assert a.dtype == np.float32 and a.shape == (1, 64, 64)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "image, channels, shape",
    [
        (GREY, 1, (1, 48, 80)),
        (GREY, 3, (3, 48, 80)),
        (COLOUR, 1, (1, 48, 80)),
        (COLOUR, 3, (3, 48, 80)),
    ],
)
def test_shapes_for_grey_and_colour(image, channels, shape):
    out = preprocess(image, PreprocessSpec(48, 80, channels=channels))
    assert out.shape == shape and out.min() >= 0.0 and out.max() <= 1.0
    if image.ndim == 2 and channels == 3:  # grey replicated into three equal channels
        np.testing.assert_array_equal(out[0], out[2])


def test_gain_scales_and_clips():
    image = np.array([[0, 100, 200, 255]], np.uint8)
    out = preprocess(image, PreprocessSpec(1, 4, gain=1.5))[0, 0]
    np.testing.assert_allclose(out, [0.0, 100 / 255 * 1.5, 1.0, 1.0], rtol=1e-6)
    out16 = preprocess(np.array([[0, 32768]], np.uint16), PreprocessSpec(1, 2, gain=1.0))[0, 0]
    np.testing.assert_allclose(out16, [0.0, 32768 / 65535], rtol=1e-6)


def test_colour_to_grey_uses_luma():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[..., 1] = 200  # pure green
    assert int(to_grey(rgb)[0, 0]) == round(0.587 * 200)


def test_labels_resize_nearest_keeps_ids():
    label = np.zeros((96, 96), np.uint8)
    label[:, 48:] = 3
    label[::7, ::5] = 255
    small = resize_label(label, 32, 32)
    assert small.shape == (32, 32) and set(np.unique(small)) <= {0, 3, 255}
    big = resize_label(np.array([[0, 5], [255, 2]], np.uint8), 4, 4)
    np.testing.assert_array_equal(big, np.kron([[0, 5], [255, 2]], np.ones((2, 2), np.uint8)))
    assert resize_label(label, 96, 96) is label


def test_batch_matches_single_frames():
    spec = PreprocessSpec(32, 32)
    batch = preprocess_batch([GREY, GREY[::-1]], spec)
    assert batch.shape == (2, 1, 32, 32)
    np.testing.assert_array_equal(batch[1], preprocess(GREY[::-1], spec))


def test_spec_round_trip_and_validation():
    spec = PreprocessSpec(256, 320, channels=3, gain=1.2)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown preprocess key"):
        PreprocessSpec.from_dict({**spec.to_dict(), "mean": 0.5})
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        PreprocessSpec(64, 64, channels=2)
    with pytest.raises(ConfigError, match="gain must be positive"):
        PreprocessSpec(64, 64, gain=0)


def test_bad_frames_are_frame_errors():
    with pytest.raises(FrameError, match="HxW or HxWx3"):
        preprocess(np.zeros((0, 0), np.uint8), PreprocessSpec(8, 8))
    with pytest.raises(FrameError, match="dtype"):
        preprocess(np.zeros((4, 4), np.int64), PreprocessSpec(4, 4))
