"""ONNX Runtime's runner: an exported (or quantized) marsedge ONNX model in an InferenceSession, with
the TensorRT, CUDA and CPU providers in that order where this build has them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.edge.onnx_meta import parse_props
from marsedge.errors import ModelError
from marsedge.runtimes.base import BaseBackend, split_threads

# Preference order; ONNX Runtime builds list only the providers they were compiled with.
ONNX_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


def has_gpu_provider() -> bool:
    """Whether this ONNX Runtime build would run models on a GPU."""
    import onnxruntime as ort

    return bool(set(ort.get_available_providers()) & GPU_PROVIDERS)


def _dims(shape) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]  # symbolic names: dynamic


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

    def input_shape(self) -> list[int | None]:
        return _dims(self.session.get_inputs()[0].shape)

    def output_shape(self) -> list[int | None]:
        return _dims(self.session.get_outputs()[0].shape)

    def close(self) -> None:
        self.session = None
