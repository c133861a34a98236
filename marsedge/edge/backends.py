"""Inference backends: one contract, three runtimes, chosen by the model file's suffix.

    backend = open_backend("student.onnx", threads=2)
    logits = backend.infer(batch)          # float32 N,C,H,W -> float32 N,K,H,W

`TorchBackend` (.pt, the workstation), `OnnxBackend` (.onnx, ONNX Runtime with the TensorRT, CUDA
and CPU providers in that order where available), `TensorRTBackend` (.engine, in
`marsedge.edge.tensorrt`). Each exposes the model's own description (`.metadata`, `.spec`), so the
caller preprocesses frames exactly as training did without any other file.

Nothing here imports torch at module level: the rover runs ONNX Runtime or TensorRT only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from marsedge.data.preprocess import PreprocessSpec
from marsedge.edge.onnx_meta import ModelMetadata, from_checkpoint_fields, parse_props
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


def _check_batch(batch: np.ndarray, spec: PreprocessSpec, path: Path) -> np.ndarray:
    expected = (spec.channels, spec.height, spec.width)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
        raise ModelError(f"{path}: expects N x {'x'.join(map(str, expected))} input, got {batch.shape}")
    return np.ascontiguousarray(batch, dtype=np.float32)


class OnnxBackend:
    """ONNX Runtime session over an exported (or quantized) marsedge ONNX model."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
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
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as exc:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            raise ModelError(f"{self.path}: ONNX Runtime cannot load it: {exc}") from None
        self.providers = self.session.get_providers()
        self.model_metadata: ModelMetadata = parse_props(
            self.session.get_modelmeta().custom_metadata_map, self.path)
        self.metadata = self.model_metadata.to_dict()
        self.spec = self.model_metadata.preprocess
        quant = self.model_metadata.quantization or {}
        self.precision = str(quant.get("precision", "int8")) if quant else "fp32"
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.static_batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = _check_batch(batch, self.spec, self.path)
        if self.static_batch is not None and batch.shape[0] != self.static_batch:
            # A static batch-1 export still serves N frames, one run each.
            return np.concatenate([self.infer(batch[i:i + 1]) for i in range(batch.shape[0])])
        return self.session.run(None, {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None


class TorchBackend:
    """PyTorch eager on a marsedge checkpoint (.pt); torch and the model zoo are imported lazily."""

    name = "torch"
    precision = "fp32"

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
        self.model_metadata = from_checkpoint_fields(
            checkpoint.class_table, checkpoint.preprocess, checkpoint.model_config, sha256_file(self.path))
        self.metadata = self.model_metadata.to_dict()
        self.spec = self.model_metadata.preprocess

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = _check_batch(batch, self.spec, self.path)
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(batch)).float().numpy()

    def close(self) -> None:
        self.model = None


def _open_tensorrt(path: Path, threads: int | None, rebuild_stale: bool) -> Backend:
    from marsedge.edge.tensorrt import TensorRTBackend

    return TensorRTBackend(path, rebuild_stale=rebuild_stale)


# name -> opener(path, threads, rebuild_stale); suffix -> name
BACKENDS: dict[str, Callable[[Path, int | None, bool], Backend]] = {
    "torch": lambda p, t, _r: TorchBackend(p, threads=t),
    "onnxruntime": lambda p, t, _r: OnnxBackend(p, threads=t),
    "tensorrt": _open_tensorrt,
}
SUFFIXES = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime", ".engine": "tensorrt"}


def backend_for(path: str | Path, backend: str | None = None) -> str:
    """The backend name for a model file: the explicit choice, else the file's suffix."""
    if backend:
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
        return backend
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ModelError(f"{path}: cannot tell the backend from suffix {suffix!r} "
                         f"(known: {', '.join(SUFFIXES)}); pass --backend")
    return SUFFIXES[suffix]


def open_backend(model_path: str | Path, backend: str | None = None, threads: int | None = None,
                 rebuild_stale: bool = False) -> Backend:
    """Open a model file with the backend its suffix (or `backend`) names."""
    path = Path(os.fspath(model_path))
    return BACKENDS[backend_for(path, backend)](path, threads, rebuild_stale)
