"""Latency maths against numpy and hand-worked values; the timed loop on a real ONNX Runtime session."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from bench_support import numpy_logits, write_tiny_onnx

from marsedge.bench.latency import (
    StageTimes,
    latency_report,
    peak_rss_mb,
    reset_peak_rss,
    run_frame,
    summarize,
    time_frames,
)
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.timing import alternating_medians


def test_percentiles_hand_worked():
    # linear interpolation between order statistics: p at rank (n-1)*q/100
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s["p50"] == pytest.approx(2.5)
    assert s["p90"] == pytest.approx(3.7)
    assert s["p99"] == pytest.approx(3.97)
    assert (s["min"], s["max"], s["mean"]) == (1.0, 4.0, 2.5)
    assert s["std"] == pytest.approx(np.sqrt(1.25))


def test_percentiles_match_numpy_on_skewed_samples():
    rng = np.random.default_rng(3)
    samples = rng.lognormal(mean=1.0, sigma=0.6, size=997)  # a latency-like long right tail
    s = summarize(samples.tolist())
    for q in (50, 90, 99):
        assert s[f"p{q}"] == pytest.approx(np.percentile(samples, q), rel=1e-12)
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["mean"] == pytest.approx(samples.mean())


def test_summarize_refuses_nothing():
    with pytest.raises(ValueError):
        summarize([])


def test_end_to_end_is_the_sum_of_stages_and_report_is_consistent():
    times = StageTimes(preprocess=[1.0, 2.0], infer=[10.0, 20.0], postprocess=[0.5, 0.5])
    assert times.end_to_end() == [11.5, 22.5]
    report = latency_report(times, seconds=2.0, warmup=3)
    assert report["iters"] == 2 and report["warmup"] == 3
    assert report["throughput_fps"] == pytest.approx(1.0)
    assert report["backend_only"] == report["stages"]["infer"]
    assert report["end_to_end"]["max"] == pytest.approx(22.5)


class OrtBackend:
    """The Backend contract over a real ONNX Runtime session (used where marsedge.edge may not be built)."""

    name, precision = "onnxruntime", "fp32"

    def __init__(self, path, size):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.spec = PreprocessSpec(size, size, 1, 1.5)
        self.metadata = {}
        self.calls = 0

    def infer(self, batch):
        self.calls += 1
        return self.session.run(None, {"image": batch})[0]

    def close(self):
        self.session = None


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory):
    path = write_tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx", size=32)
    return OrtBackend(path, 32)


def test_run_frame_mask_matches_numpy(tiny_backend):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(48, 40), dtype=np.uint8)
    times = StageTimes()
    mask = run_frame(tiny_backend, frame, tiny_backend.spec, times)
    assert mask.shape == (48, 40)  # back at the frame's size
    logits = numpy_logits(preprocess(frame, tiny_backend.spec)[None])
    expected_small = logits.argmax(axis=1)[0].astype(np.uint8)
    expected = cv2.resize(expected_small, (40, 48), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(mask, expected)
    assert len(times) == 1 and all(t >= 0 for t in times.end_to_end())


def test_time_frames_counts_iterations_and_warmup(tiny_backend):
    frames = [np.full((32, 32), v, np.uint8) for v in (10, 120, 250)]
    before = tiny_backend.calls
    times, seconds, warmed = time_frames(tiny_backend, frames, tiny_backend.spec, warmup=4, iters=25,
                                         duration=None)
    assert len(times) == 25 and warmed == 4
    assert tiny_backend.calls - before == 29  # warm-up frames are run but not timed
    assert seconds > 0
    report = latency_report(times, seconds, 4)
    assert report["end_to_end"]["p50"] >= report["backend_only"]["p50"]


def test_time_frames_by_duration_stops(tiny_backend):
    frames = [np.zeros((32, 32), np.uint8)]
    times, seconds, warmed = time_frames(tiny_backend, frames, tiny_backend.spec, warmup=0, iters=None,
                                         duration=0.2)
    assert seconds >= 0.2 and len(times) >= 1 and warmed == 0


class SlowBackend(OrtBackend):
    def infer(self, batch):
        time.sleep(0.05)
        return super().infer(batch)


def test_warmup_is_capped_by_the_duration(tmp_path):
    slow = SlowBackend(write_tiny_onnx(tmp_path / "slow.onnx", size=32), 32)
    frames = [np.zeros((32, 32), np.uint8)]
    times, seconds, warmed = time_frames(slow, frames, slow.spec, warmup=100, iters=None, duration=0.2)
    assert 1 <= warmed <= 6  # 100 asked, but 0.2 s of warm-up at 50 ms a frame is about 4
    assert 1 <= len(times) <= 6


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak-RSS reset needs Linux /proc")
def test_peak_rss_window_sees_an_allocation_after_the_reset():
    baseline = reset_peak_rss()
    block = np.ones(96 * 2**20, dtype=np.uint8)  # 96 MiB, every page touched
    peak = peak_rss_mb()
    del block
    assert peak - baseline >= 90
    after_reset = reset_peak_rss()
    assert peak_rss_mb() - after_reset < 50  # the old peak is forgotten


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM needs Linux /proc")
def test_a_child_process_peak_is_its_own_not_its_parents():
    """ru_maxrss keeps the RSS of the parent a process was forked from (the fuzz harness, run from a
    1 GB pytest, read 1057 MB before its first frame); peak_rss_mb reads the process's own VmHWM."""
    child = ("import resource; from marsedge.bench.latency import peak_rss_mb; "
             "print(peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    block = np.ones(400 * 2**20, dtype=np.uint8)  # 400 MiB touched in this (the parent) process
    own, inherited = map(float, subprocess.run([sys.executable, "-c", child], capture_output=True,
                                               text=True, check=True).stdout.split())
    del block
    assert own < 300, (own, inherited)  # the import of numpy + marsedge.bench, not the parent's 400 MiB


def test_alternating_medians_time_blocks_after_a_settle_call():
    """A model called right after another one pays a switch penalty (the other runtime's threads
    still spin); the settle call absorbs it, so each median is the model's own steady cost."""
    now = [0.0]
    calls: list[str] = []

    def model(name: str, cost_s: float):
        def run() -> None:
            switched = bool(calls) and calls[-1] != name
            now[0] += cost_s + (0.050 if switched else 0.0)
            calls.append(name)
        return run

    ms = alternating_medians({"fp32": model("fp32", 0.010), "int8": model("int8", 0.004)}, blocks=3,
                             per_block=4, clock=lambda: now[0])
    assert ms == pytest.approx({"fp32": 10.0, "int8": 4.0})
    assert calls == (["fp32"] * 5 + ["int8"] * 5) * 3  # blocks alternate; 1 settle + 4 timed each
