"""The teacher-logit cache: round trip, atomic float16 files, stale caches refused, resumable filling."""

import numpy as np
import pytest

from marsedge.data.preprocess import PreprocessSpec
from marsedge.distill.cache import LogitCache, fill_cache
from marsedge.errors import DataError, ModelError
from marsedge.io import sha256_file

SPEC = PreprocessSpec(height=8, width=8)


def test_round_trip_stores_float16_per_frame(tmp_path):
    cache = LogitCache(tmp_path, "a" * 64, SPEC, num_classes=3)
    logits = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32) * 10
    path = cache.put("NLA_1EDR", logits)
    assert path.suffix == ".npy" and path.parent == tmp_path
    assert "NLA_1EDR" in cache and "NLA_2EDR" not in cache
    back = cache.get("NLA_1EDR")
    assert back.dtype == np.float16
    np.testing.assert_allclose(back.astype(np.float32), logits, rtol=1e-3, atol=1e-2)
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_names_that_sanitise_alike_do_not_collide(tmp_path):
    cache = LogitCache(tmp_path, "a" * 64, SPEC, num_classes=1)
    cache.put("a b", np.zeros((1, 8, 8)))
    cache.put("a_b", np.ones((1, 8, 8)))
    assert cache.get("a b").max() == 0 and cache.get("a_b").min() == 1
    assert cache.path("../../etc/passwd").parent == tmp_path  # names from data never escape


def test_cache_for_another_teacher_or_spec_is_refused(tmp_path):
    LogitCache(tmp_path, "a" * 64, SPEC, num_classes=3)
    with pytest.raises(ModelError, match="stale.*teacher_sha256"):
        LogitCache(tmp_path, "b" * 64, SPEC, num_classes=3)
    with pytest.raises(ModelError, match="preprocess"):
        LogitCache(tmp_path, "a" * 64, PreprocessSpec(height=16, width=16), num_classes=3)
    LogitCache(tmp_path, "a" * 64, SPEC, num_classes=3)  # the same key opens fine


def test_wrong_shape_and_corrupt_files_are_named(tmp_path):
    cache = LogitCache(tmp_path, "a" * 64, SPEC, num_classes=3)
    with pytest.raises(ValueError, match="frame1"):
        cache.put("frame1", np.zeros((3, 4, 4)))
    cache.path("frame2").write_bytes(b"not a npy file")
    with pytest.raises(DataError, match="corrupt"):
        cache.get("frame2")
    with pytest.raises(DataError, match="no cached teacher logits"):
        cache.get("frame3")


def test_fill_computes_only_missing_frames(tmp_path):
    cache = LogitCache(tmp_path, "a" * 64, SPEC, num_classes=2)
    names = [f"f{i}" for i in range(5)]
    calls = []

    def teacher(batch):
        calls.append(len(batch))
        return np.concatenate([batch, -batch], axis=1)  # 1 channel in -> 2 "classes" out

    def load(i):
        return np.full((1, 8, 8), float(i), dtype=np.float32)

    cache.put("f1", np.zeros((2, 8, 8)))  # already there: a resumed fill must skip it
    assert fill_cache(cache, names, load, teacher, batch_size=2, progress=False) == 4
    assert calls == [2, 2]
    assert cache.get("f3")[0, 0, 0] == 3 and cache.get("f3")[1, 0, 0] == -3
    assert cache.get("f1").max() == 0  # not recomputed
    assert fill_cache(cache, names, load, teacher, progress=False) == 0


def test_sha256_file(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_rewritten_frame_gets_a_new_cache_key(tmp_path):
    import os

    from marsedge.distill.data import frame_key

    frame = tmp_path / "f.png"
    frame.write_bytes(b"first")
    before = frame_key(frame)
    frame.write_bytes(b"secnd")  # same size: only the modification time tells the two apart
    os.utime(frame, ns=(1, 1))
    assert frame_key(frame) != before and frame_key(frame) == frame_key(str(frame))
