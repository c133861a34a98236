"""Open a model file on the right runtime: the one asked, else the one its metadata names, else the
one its suffix belongs to (`marsedge.runtimes.registry`).

    backend = open_backend("student.onnx", threads=2)
    logits = backend.infer(batch)          # float32 N,C,H,W -> float32 N,K,H,W

An .onnx file runs on the runtime its metadata names (`marsedge.runtime`: the one `marsedge quantize
--target cpu` gated and timed it on and chose), unless `backend` says otherwise; `--backend auto` on
a file that names none times every installed runtime that runs .onnx files and keeps the fastest.
The CPU runtimes also serve `streams` calls at once (`open_backend(..., streams=2)`: the threads
split between them; edge-run's default on a CPU).

Nothing here imports torch or a runtime at module level: each runtime's `open` imports its own.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from marsedge.edge.onnx_meta import recorded_runtime
from marsedge.errors import ModelError
from marsedge.runtimes import (
    AUTO,
    DEFAULT_CPU_RUNTIME,
    RUNTIMES,
    OpenOptions,
    backend_names,
    known_suffixes,
    runtime_for_suffix,
)
from marsedge.runtimes.base import Backend, available_cores
from marsedge.runtimes.registry import onnx_runtimes


def default_streams(model_path: str | Path, backend: str | None, threads: int | None) -> int:
    """edge-run's stream count when none is asked: 2 where the model runs on a CPU runtime with two
    cores or more (two frames at once, one thread each: end to end 45.4 -> 52.0 FPS with ONNX Runtime
    for the INT8 student at 512 px on 2 cores, default outputs, benchmarks/results/edge_writer_study.md),
    else 1 (a GPU runtime, torch, and a CPU runtime that
    would run on a GPU here, such as ONNX Runtime with a GPU provider: the GPU is the one device)."""
    name = backend_for(model_path, backend)
    candidates = [RUNTIMES[n] for n in (onnx_runtimes() if name == AUTO else [name])]
    if not all(r.cpu_streams for r in candidates) or (threads or available_cores()) < 2:
        return 1
    if any(r.on_gpu() for r in candidates):  # auto may keep ONNX Runtime, on its GPU provider
        return 1
    return 2


def open_fastest(path: Path, options: OpenOptions) -> Backend:
    """`--backend auto` on an ONNX file whose metadata names no runtime (`backend_for` sends only
    those here): every installed runtime that runs .onnx files (and can load this one) is timed on
    this machine (marsedge.timing, a zero frame) and the fastest is kept, so another runtime than
    the default is chosen only where it measures faster."""
    from marsedge.timing import alternating_medians

    default = RUNTIMES[DEFAULT_CPU_RUNTIME].open(path, options)
    opened = {DEFAULT_CPU_RUNTIME: default}
    for name in onnx_runtimes()[1:]:
        with contextlib.suppress(ModelError):  # a layout it cannot load (a QOperator file on a QDQ-only one)
            opened[name] = RUNTIMES[name].open(path, options)
    if len(opened) == 1:
        return default
    spec = default.spec
    frame = np.zeros((1, spec.channels, spec.height, spec.width), np.float32)
    try:
        ms = alternating_medians({k: (lambda b=b: b.infer(frame)) for k, b in opened.items()}, blocks=2,
                                 per_block=3)
    except Exception:  # a runtime loaded the file but cannot run it: the default runtime
        for name, backend in opened.items():
            if name != DEFAULT_CPU_RUNTIME:
                backend.close()
        return default
    best = min(ms, key=ms.get)
    for name, backend in opened.items():
        if name != best:
            backend.close()
    opened[best].measured_ms = {k: round(v, 2) for k, v in ms.items()}  # why it was chosen
    return opened[best]


def backend_for(path: str | Path, backend: str | None = None) -> str:
    """The backend name for a model file: the explicit choice; else, for an .onnx file, the runtime its
    metadata names (where installed here; `auto` too defers to it, the choice quantize measured on the
    gate's frames); else `auto` for an .onnx file (timed among the runtimes that run .onnx files) or
    the runtime of the file's suffix (`auto` too: an engine or a checkpoint has one runtime)."""
    if backend and backend != AUTO:
        if backend not in RUNTIMES:
            raise ModelError(f"unknown backend {backend!r} (choose from {', '.join(backend_names())})")
        return backend
    suffix = Path(path).suffix.lower()
    recorded = recorded_runtime(path) if suffix == ".onnx" else None
    runtime = RUNTIMES.get(recorded or "")
    if runtime and runtime.opens_onnx and runtime.available():
        return recorded
    if recorded:  # a rover without that runtime still runs the file, on the suffix's, and says so
        warnings.warn(f"{path}: its metadata names runtime {recorded!r}, which is not installed here; "
                      f"running it on {runtime_for_suffix(suffix)} (--backend chooses)", RuntimeWarning,
                      stacklevel=1)  # one location: edge-run asks twice (streams, open), warns once
    if backend == AUTO and suffix == ".onnx":
        return backend
    if runtime_for_suffix(suffix) is None:
        raise ModelError(f"{path}: cannot tell the backend from suffix {suffix!r} "
                         f"(known: {', '.join(known_suffixes())}); pass --backend")
    return runtime_for_suffix(suffix)


def open_backend(model_path: str | Path, backend: str | None = None, threads: int | None = None,
                 rebuild_stale: bool = False, streams: int = 1) -> Backend:
    """Open a model file with the backend `backend_for` names (explicit, recorded, or by suffix); its
    metadata is checked against its graph (`marsedge.runtimes.model_check`) before anyone runs it.
    `streams` > 1 (CPU runtimes only): that many `infer` calls may run at once, the `threads` split
    between them."""
    from marsedge.runtimes.model_check import check_model

    path = Path(os.fspath(model_path))
    options = OpenOptions(threads=threads, streams=streams, rebuild_stale=rebuild_stale)
    name = backend_for(path, backend)
    opened = open_fastest(path, options) if name == AUTO else RUNTIMES[name].open(path, options)
    check_model(opened, path)
    return opened
