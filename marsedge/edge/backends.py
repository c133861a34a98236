"""Inference backends: one contract, four runtimes, chosen by the model file's suffix.

    backend = open_backend("student.onnx", threads=2)
    logits = backend.infer(batch)          # float32 N,C,H,W -> float32 N,K,H,W

`TorchBackend` (.pt, the workstation), `OnnxBackend` (.onnx, ONNX Runtime with the TensorRT, CUDA
and CPU providers in that order where available), `TensorRTBackend` (.engine, in
`marsedge.edge.tensorrt`), `OpenVinoBackend` (`--backend openvino`, or an OpenVINO IR .xml; in
`marsedge.edge.openvino`). An .onnx file runs on the runtime its metadata names (`marsedge.runtime`:
the one `marsedge quantize --target cpu` gated and timed it on and chose), unless `backend` says
otherwise; `--backend auto` on a file that names none times ONNX Runtime against OpenVINO and keeps
the faster. What each runtime opens and serves is described once, in `marsedge.edge.runtimes`.
Each subclasses `BaseBackend` (one input check, one batch split) and
exposes the model's own description (`.metadata`, `.spec`), so the caller preprocesses frames
exactly as training did without any other file. The CPU runtimes also serve `streams` calls at
once (`open_backend(..., streams=2)`: the threads split between them; edge-run's default on a CPU).

Nothing here imports torch at module level: the rover runs ONNX Runtime, OpenVINO or TensorRT.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from marsedge.data.preprocess import PreprocessSpec
from marsedge.edge.onnx_meta import ModelMetadata, parse_props, recorded_runtime
from marsedge.edge.runtimes import RUNTIMES, known_suffixes, runtime_for_suffix
from marsedge.errors import ModelError
from marsedge.io import sha256_file

# Preference order; ONNX Runtime builds list only the providers they were compiled with.
ONNX_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Backend(Protocol):
    name: str
    precision: str
    metadata: dict
    spec: PreprocessSpec

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class BaseBackend:
    """What every backend shares, as Polygraphy's BaseRunner.infer / infer_impl: `infer` checks the
    input once against the model's own spec and splits a batch to the model's fixed batch, then
    calls the subclass's `infer_impl` with a C-contiguous float32 array of exactly that batch.

    A subclass's __init__ sets `self.path` (the model file, named by every error),
    `self.model_metadata` (a ModelMetadata), and, where they differ from the defaults,
    `self.precision` and `self.engine_batch` (the batch the graph/engine was built for; None: any).
    `metadata` and `spec` derive from `model_metadata`.
    """

    name = "base"
    precision = "fp32"
    engine_batch: int | None = None
    streams = 1  # frames `infer` may be called with at once, from as many threads (see `split_threads`)
    path: Path
    model_metadata: ModelMetadata

    @property
    def metadata(self) -> dict:
        return self.model_metadata.to_dict()

    @property
    def spec(self) -> PreprocessSpec:
        return self.model_metadata.preprocess

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 N,C,H,W (THE preprocessing's output) -> float32 logits N,K,H,W."""
        batch = self.check_input(batch)
        step = self.engine_batch
        if step is None or batch.shape[0] == step:
            return self.infer_impl(batch)
        outputs = []
        for start in range(0, batch.shape[0], step):  # a fixed-batch model still serves N frames
            chunk = batch[start:start + step]
            if chunk.shape[0] < step:  # the last, short chunk: padded, and the padding dropped
                pad = np.zeros((step - chunk.shape[0], *chunk.shape[1:]), np.float32)
                outputs.append(self.infer_impl(np.concatenate([chunk, pad]))[:chunk.shape[0]])
            else:
                outputs.append(self.infer_impl(np.ascontiguousarray(chunk)))
        return np.concatenate(outputs)

    def check_input(self, batch: np.ndarray) -> np.ndarray:
        """The one input check: a floating N,C,H,W array of the spec's size (a raw uint8 frame is
        the usual mistake: it must go through marsedge.data.preprocess first)."""
        spec = self.spec
        expected = (spec.channels, spec.height, spec.width)
        if not isinstance(batch, np.ndarray) or not np.issubdtype(batch.dtype, np.floating):
            kind = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ModelError(f"{self.path}: expects preprocessed float32 input "
                             f"(marsedge.data.preprocess), got {kind}")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected or batch.shape[0] == 0:
            shape = "x".join(map(str, expected))
            raise ModelError(f"{self.path}: expects N x {shape} input, got {batch.shape}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the runtime's resources (idempotent)."""


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_streams(streams: int, path: str | Path) -> None:
    if streams < 1:
        raise ModelError(f"{path}: streams must be at least 1, got {streams}")


def streams_of(backend) -> int:
    """How many `infer` calls a backend takes at once (1 for a backend that does not say)."""
    return max(1, int(getattr(backend, "streams", 1)))


def split_threads(threads: int | None, streams: int, path: Path) -> int | None:
    """The threads of one stream when `streams` frames run at once: the cores divided between them
    (`threads`, else all of them), at least one each. A frame on one thread never waits at a
    barrier for a sibling thread that another stage preempted, which is why two streams of one
    thread keep the speed of the 2-core machine under load better than one stream of two."""
    check_streams(streams, path)
    if streams == 1:
        return threads
    return max(1, (threads or available_cores()) // streams)


def default_streams(model_path: str | Path, backend: str | None, threads: int | None) -> int:
    """edge-run's stream count when none is asked: 2 where the model runs on a CPU runtime with two
    cores or more (two frames at once, one thread each: end to end 45.4 -> 52.0 FPS with ONNX Runtime
    and 56.1 -> 63.3 with OpenVINO for the INT8 student at 512 px on 2 cores, default outputs,
    benchmarks/results/edge_writer_study.md), else 1 (TensorRT, torch, and ONNX Runtime
    where a GPU provider is installed: the GPU is the one device)."""
    name = backend_for(model_path, backend)
    cpu = name == "auto" or RUNTIMES[name].cpu_streams
    if not cpu or (threads or available_cores()) < 2:
        return 1
    if name in ("onnxruntime", "auto"):  # auto may keep ONNX Runtime, on its GPU provider
        import onnxruntime as ort

        if set(ort.get_available_providers()) & {"TensorrtExecutionProvider", "CUDAExecutionProvider"}:
            return 1
    return 2


class OnnxBackend(BaseBackend):
    """ONNX Runtime session over an exported (or quantized) marsedge ONNX model. With `streams`
    > 1 the session's threads are split between that many concurrent `infer` calls (ONNX Runtime's
    `run` is thread-safe, and with one intra-op thread it computes on the calling thread)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None,
                 providers: list[str] | None = None, streams: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        available = ort.get_available_providers()
        wanted = providers or [p for p in ONNX_PROVIDERS if p in available]
        unknown = [p for p in wanted if p not in available]
        if unknown:
            raise ModelError(f"{self.path}: provider(s) {unknown} not in this ONNX Runtime ({available})")
        options = ort.SessionOptions()
        threads = split_threads(threads, streams, self.path)
        self.streams = streams
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as exc:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            raise ModelError(f"{self.path}: ONNX Runtime cannot load it: {exc}") from None
        self.providers = self.session.get_providers()
        self.model_metadata = parse_props(self.session.get_modelmeta().custom_metadata_map, self.path)
        quant = self.model_metadata.quantization or {}
        self.precision = str(quant.get("precision", "int8")) if quant else "fp32"
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.engine_batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None


class TorchBackend(BaseBackend):
    """PyTorch eager on a marsedge checkpoint (.pt); torch and the model zoo are imported lazily."""

    name = "torch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import torch

        from marsedge.models.checkpoints import load_model

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such checkpoint")
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.model, checkpoint = load_model(self.path, map_location="cpu")
        self.model.eval()
        self.model_metadata = ModelMetadata.from_checkpoint(checkpoint, self.path, sha256_file(self.path))

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(batch)).float().numpy()

    def close(self) -> None:
        self.model = None


def _one_stream(name: str, path: Path, streams: int) -> None:
    if streams != 1:
        raise ModelError(f"{path}: the {name} backend runs one frame at a time (streams {streams} asked); "
                         "streams are for the CPU runtimes, onnxruntime and openvino")


def _open_torch(path: Path, threads: int | None, rebuild_stale: bool, streams: int) -> Backend:
    _one_stream("torch", path, streams)
    return TorchBackend(path, threads=threads)


def _open_tensorrt(path: Path, threads: int | None, rebuild_stale: bool, streams: int) -> Backend:
    from marsedge.edge.tensorrt import TensorRTBackend

    _one_stream("tensorrt", path, streams)  # one execution context, one CUDA stream
    return TensorRTBackend(path, rebuild_stale=rebuild_stale)


def _open_openvino(path: Path, threads: int | None, rebuild_stale: bool, streams: int) -> Backend:
    from marsedge.edge.openvino import OpenVinoBackend

    return OpenVinoBackend(path, threads=threads, streams=streams)


def _open_fastest(path: Path, threads: int | None, rebuild_stale: bool, streams: int) -> Backend:
    """`--backend auto` on a file whose metadata names no runtime (`backend_for` sends the others
    there): for an ONNX file, ONNX Runtime and OpenVINO (where installed and able to load it) are
    timed on this machine (marsedge.timing, a zero frame) and the faster is kept, so
    OpenVINO is chosen only where it measures faster; any other file goes by its suffix."""
    if Path(path).suffix.lower() != ".onnx":
        return BACKENDS[backend_for(path)](path, threads, rebuild_stale, streams)
    from marsedge.timing import alternating_medians

    opened = {"onnxruntime": OnnxBackend(path, threads=threads, streams=streams)}
    try:
        opened["openvino"] = _open_openvino(path, threads, rebuild_stale, streams)
    except ModelError:  # not installed, or a layout it cannot run (QOperator)
        return opened["onnxruntime"]
    spec = opened["onnxruntime"].spec
    frame = np.zeros((1, spec.channels, spec.height, spec.width), np.float32)
    try:
        ms = alternating_medians({k: (lambda b=b: b.infer(frame)) for k, b in opened.items()}, blocks=2,
                                 per_block=3)
    except Exception:  # OpenVINO loaded the file but cannot run it: ONNX Runtime, the default
        opened["openvino"].close()
        return opened["onnxruntime"]
    best = min(ms, key=ms.get)
    for name, backend in opened.items():
        if name != best:
            backend.close()
    opened[best].measured_ms = {k: round(v, 2) for k, v in ms.items()}  # why it was chosen
    return opened[best]


# name -> opener(path, threads, rebuild_stale, streams) (suffixes: marsedge.edge.runtimes)
BACKENDS: dict[str, Callable[[Path, int | None, bool, int], Backend]] = {
    "torch": _open_torch,
    "onnxruntime": lambda p, t, _r, s: OnnxBackend(p, threads=t, streams=s),
    "tensorrt": _open_tensorrt,
    "openvino": _open_openvino,  # marsedge.edge.openvino (pip install .[openvino])
    "auto": _open_fastest,
}


def backend_for(path: str | Path, backend: str | None = None) -> str:
    """The backend name for a model file: the explicit choice; else, for an .onnx file, the runtime its
    metadata names (where installed here; `auto` too defers to it, the choice quantize measured on the
    gate's frames); else `auto`, or the file's suffix."""
    if backend and backend != "auto":
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
        return backend
    suffix = Path(path).suffix.lower()
    recorded = recorded_runtime(path) if suffix == ".onnx" else None
    runtime = RUNTIMES.get(recorded or "")
    if runtime and runtime.int8_formats and runtime.available():  # a runtime that opens ONNX files
        return recorded
    if recorded:  # a rover without that runtime still runs the file, on the suffix's, and says so
        warnings.warn(f"{path}: its metadata names runtime {recorded!r}, which is not installed here; "
                      f"running it on {runtime_for_suffix(suffix)} (--backend chooses)", RuntimeWarning,
                      stacklevel=1)  # one location: edge-run asks twice (streams, open), warns once
    if backend == "auto":
        return backend
    if runtime_for_suffix(suffix) is None:
        raise ModelError(f"{path}: cannot tell the backend from suffix {suffix!r} "
                         f"(known: {', '.join(known_suffixes())}); pass --backend")
    return runtime_for_suffix(suffix)


def open_backend(model_path: str | Path, backend: str | None = None, threads: int | None = None,
                 rebuild_stale: bool = False, streams: int = 1) -> Backend:
    """Open a model file with the backend `backend_for` names (explicit, recorded, or by suffix); its
    metadata is checked against its graph (`marsedge.edge.model_check`) before anyone runs it.
    `streams` > 1 (CPU runtimes only): that many `infer` calls may run at once, the `threads` split
    between them."""
    from marsedge.edge.model_check import check_model

    path = Path(os.fspath(model_path))
    opened = BACKENDS[backend_for(path, backend)](path, threads, rebuild_stale, streams)
    check_model(opened, path)
    return opened
