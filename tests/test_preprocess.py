"""THE preprocessing: determinism, shapes, gain and clipping, nearest-neighbour labels, spec round trip."""

from __future__ import annotations

import cv2
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
        (GREY[:, :, None], 3, (3, 48, 80)),
    ],
)
def test_shapes_for_grey_and_colour(image, channels, shape):
    out = preprocess(image, PreprocessSpec(48, 80, channels=channels))
    assert out.shape == shape and out.min() >= 0.0 and out.max() <= 1.0
    if (image.ndim == 2 or image.shape[2] == 1) and channels == 3:  # grey: three equal channels
        np.testing.assert_array_equal(out[0], out[2])
        np.testing.assert_array_equal(out[0], preprocess(GREY, PreprocessSpec(48, 80))[0])


def test_gain_scales_and_clips():
    image = np.array([[0, 100, 200, 255]], np.uint8)
    out = preprocess(image, PreprocessSpec(1, 4, gain=1.5))[0, 0]
    np.testing.assert_allclose(out, [0.0, 100 / 255 * 1.5, 1.0, 1.0], rtol=1e-6)
    out16 = preprocess(np.array([[0, 32768]], np.uint16), PreprocessSpec(1, 2, gain=1.0))[0, 0]
    np.testing.assert_allclose(out16, [0.0, 32768 / 65535], rtol=1e-6)


@pytest.mark.parametrize("gain", [1.0, 1.5, 0.7, 2.3])
@pytest.mark.parametrize("channels", [1, 3])
def test_uint8_frames_get_the_bits_of_the_arithmetic(gain, channels):
    """The lookup table a uint8 frame goes through gives float32(v) / 255 * gain clipped to [0, 1],
    bit for bit, for every value, at the model size and after a resize, grey or colour, also for a
    strided view (a camera frame cropped in place)."""
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    frames = [every, GREY, COLOUR, COLOUR[::2, 1::2], np.dstack([every] * 3)]
    for frame in frames:
        spec = PreprocessSpec(frame.shape[0], frame.shape[1], channels=channels, gain=gain)
        for size in (spec, PreprocessSpec(40, 24, channels=channels, gain=gain)):
            out = preprocess(frame, size)
            grey = frame if channels == 3 or frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            if (grey.shape[0], grey.shape[1]) != size.size:
                interp = cv2.INTER_AREA if grey.shape[0] * grey.shape[1] > 40 * 24 else cv2.INTER_LINEAR
                grey = cv2.resize(np.ascontiguousarray(grey), (size.width, size.height), interpolation=interp)
            if channels == 3 and grey.ndim == 2:
                grey = np.dstack([grey] * 3)
            want = np.clip(grey.astype(np.float32) / np.float32(255) * np.float32(gain), 0, 1)
            want = want[None] if want.ndim == 2 else want.transpose(2, 0, 1)
            assert out.dtype == np.float32 and out.flags.c_contiguous
            np.testing.assert_array_equal(out, want)


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


OLD_SPEC = {"height": 48, "width": 80, "channels": 1, "gain": 1.5}  # a spec dict from before the mapping


def test_old_spec_dicts_load_with_todays_behaviour():
    spec = PreprocessSpec.from_dict(OLD_SPEC)
    assert spec.bit_depth_mapping == "linear" and spec.colour_to_grey == "bt601"
    reference = np.clip(
        cv2.resize(cv2.cvtColor(COLOUR, cv2.COLOR_RGB2GRAY), (80, 48), interpolation=cv2.INTER_AREA)
        / np.float32(255)
        * np.float32(1.5),
        0,
        1,
    )
    np.testing.assert_array_equal(preprocess(COLOUR, spec)[0], reference.astype(np.float32))
    full = PreprocessSpec(
        64, 64, bit_depth_mapping="percentile", percentile_low=2, percentile_high=98, colour_to_grey="bt709"
    )
    assert PreprocessSpec.from_dict(full.to_dict()) == full
    with pytest.raises(ConfigError, match="unknown preprocess key.*stretch"):
        PreprocessSpec.from_dict({**OLD_SPEC, "stretch": 1})


def test_percentile_stretch_maps_the_named_percentiles_to_0_and_1():
    dark = np.tile(np.arange(20, 120, dtype=np.uint8), (4, 1))  # a dark frame, values 20..119
    linear = preprocess(dark, PreprocessSpec(4, 100, gain=1.0))[0]
    assert linear.max() == pytest.approx(119 / 255)
    spec = PreprocessSpec(
        4, 100, gain=1.0, bit_depth_mapping="percentile", percentile_low=0, percentile_high=100
    )
    stretched = preprocess(dark, spec)[0]
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    np.testing.assert_allclose(stretched[0], (np.arange(100)) / 99, atol=1e-6)
    clipped = preprocess(dark, PreprocessSpec(4, 100, gain=1.0, bit_depth_mapping="percentile"))[0]
    assert (clipped == 0).sum() >= 1 and (clipped == 1).sum() >= 1  # 0.5/99.5 percentiles clip the ends
    flat = preprocess(
        np.full((4, 4), 77, np.uint8), PreprocessSpec(4, 4, gain=1.0, bit_depth_mapping="percentile")
    )
    np.testing.assert_allclose(flat, 77 / 255)
    with pytest.raises(ConfigError, match="bit_depth_mapping"):
        PreprocessSpec(8, 8, bit_depth_mapping="log")
    with pytest.raises(ConfigError, match="percentile_low/percentile_high"):
        PreprocessSpec(8, 8, percentile_low=60, percentile_high=50)


def test_named_luminance_for_grey_models_on_colour_frames():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    assert int(to_grey(rgb, "bt601")[0, 0]) == round(0.299 * 200)
    assert int(to_grey(rgb, "bt709")[0, 0]) == round(0.2126 * 200)
    assert int(to_grey(rgb, "mean")[0, 0]) == round(200 / 3)
    out = preprocess(rgb, PreprocessSpec(1, 1, gain=1.0, colour_to_grey="bt709"))
    assert out[0, 0, 0] == pytest.approx(round(0.2126 * 200) / 255)
    with pytest.raises(ConfigError, match="colour_to_grey"):
        PreprocessSpec(8, 8, colour_to_grey="lab")
