"""Latency of one model: warm-up, then timed frames split into preprocess, infer and postprocess.

One timed iteration is what the rover does with one frame, batch 1:

    preprocess   uint8 frame -> float32 1xCxHxW        (marsedge.data.preprocess, THE preprocessing)
    infer        backend.infer(batch) -> logits         ("backend-only" latency)
    postprocess  argmax + nearest resize to the frame   (marsedge.edge.predict.logits_to_mask;
                 a classifier's: softmax over its logits)

"End-to-end" is the sum of the three for the same frame. Frames cycle through the given list so
caches see real, varying images. Percentiles use numpy's default linear interpolation, so a
reader can reproduce them from the raw times with `np.percentile`.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.predict import logits_to_mask, softmax

STAGES = ("preprocess", "infer", "postprocess")
PERCENTILES = (50, 90, 99)


def summarize(samples_ms: Sequence[float]) -> dict:
    """mean, std, p50, p90, p99, min, max of a list of times (milliseconds)."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latency samples to summarize")
    out = {"mean": float(x.mean()), "std": float(x.std())}
    for q, value in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=True):
        out[f"p{q}"] = float(value)
    out["min"] = float(x.min())
    out["max"] = float(x.max())
    return out


@dataclass
class StageTimes:
    """Raw per-iteration times in milliseconds, one list per stage."""

    preprocess: list[float] = field(default_factory=list)
    infer: list[float] = field(default_factory=list)
    postprocess: list[float] = field(default_factory=list)

    def end_to_end(self) -> list[float]:
        return [a + b + c for a, b, c in zip(self.preprocess, self.infer, self.postprocess, strict=True)]

    def __len__(self) -> int:
        return len(self.infer)


def run_frame(backend, frame: np.ndarray, spec: PreprocessSpec,
              times: StageTimes | None = None) -> np.ndarray:
    """One frame through the three stages; the stage times are appended to `times` when given."""
    t0 = time.perf_counter_ns()
    batch = preprocess(frame, spec)[None]
    t1 = time.perf_counter_ns()
    logits = backend.infer(batch)
    t2 = time.perf_counter_ns()
    # what edge-run does next: a mask at the frame's size, or a classifier's class probabilities
    mask = softmax(logits) if logits.ndim == 2 else logits_to_mask(logits, frame.shape[:2])[0]
    t3 = time.perf_counter_ns()
    if times is not None:
        times.preprocess.append((t1 - t0) / 1e6)
        times.infer.append((t2 - t1) / 1e6)
        times.postprocess.append((t3 - t2) / 1e6)
    return mask


def time_frames(backend, frames: Sequence[np.ndarray], spec: PreprocessSpec, warmup: int = 10,
                iters: int | None = None, duration: float | None = 10.0) -> tuple[StageTimes, float, int]:
    """Warm up, then time frames until `iters` frames or `duration` seconds (whichever is given;
    `iters` wins when both are). In duration mode the warm-up also stops after `duration` seconds
    (a model at seconds per frame needs no ten warm-up frames). Returns the stage times, the wall
    seconds of the timed part and the warm-up frames run."""
    if not frames:
        raise ValueError("no frames to time")
    if iters is None and duration is None:
        raise ValueError("give iters or duration")
    start = time.perf_counter()
    warmed = 0
    while warmed < warmup:
        run_frame(backend, frames[warmed % len(frames)], spec)
        warmed += 1
        if iters is None and time.perf_counter() - start >= duration:
            break
    times = StageTimes()
    start = time.perf_counter()
    i = 0
    while True:
        run_frame(backend, frames[i % len(frames)], spec, times)
        i += 1
        if iters is not None:
            if i >= iters:
                break
        elif time.perf_counter() - start >= duration:
            break
    return times, time.perf_counter() - start, warmed


def latency_report(times: StageTimes, seconds: float, warmup: int) -> dict:
    """The `latency` block of a results row."""
    return {
        "warmup": warmup,
        "iters": len(times),
        "seconds": seconds,
        "throughput_fps": len(times) / seconds if seconds > 0 else None,
        "end_to_end": summarize(times.end_to_end()),
        "backend_only": summarize(times.infer),
        "stages": {name: summarize(getattr(times, name)) for name in STAGES},
    }


def _proc_status_mb(field: str) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return None


def reset_peak_rss() -> float:
    """Start a new peak-RSS window (Linux: clear_refs 5 resets VmHWM) and return the current RSS (MiB).

    Without it a child's peak would include what it inherited or briefly used while importing."""
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak covers the process life
        Path("/proc/self/clear_refs").write_text("5")
    current = _proc_status_mb("VmRSS")
    return current if current is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size (MiB) since the last reset_peak_rss (Linux) or process start."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
