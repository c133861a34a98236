"""TensorRT's runner: a serialized engine run through Polygraphy's TrtRunner, only where its sidecar
(`sidecar`) says it belongs. A foreign or stale engine is refused with the list of differences and
the command that rebuilds it (or, with `rebuild_stale=True`, rebuilt by the loader, `build`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.edge.onnx_meta import ModelMetadata
from marsedge.errors import MarsedgeError, ModelError
from marsedge.runtimes.base import BaseBackend
from marsedge.runtimes.tensorrt.plan import BuildOptions
from marsedge.runtimes.tensorrt.sidecar import (
    Platform,
    check_sidecar,
    cuda_device,
    read_sidecar,
    rebuild_hint,
    sidecar_path,
)


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise ModelError("the tensorrt Python package is not installed (JetPack ships it; on a "
                         "workstation `pip install tensorrt`)") from None
    return tensorrt


def current_platform() -> Platform:
    trt = import_tensorrt()
    gpu, capability = cuda_device()
    return Platform(tensorrt=trt.__version__, gpu=gpu, compute_capability=capability)


def static_batch(shape) -> int | None:
    """The fixed batch of an engine input, None when dynamic: Polygraphy reports a dynamic dimension
    as -1 (ONNX-side tools as None or a name), none of which is a batch size."""
    dim = shape[0] if len(shape) else None
    if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim > 0:
        return int(dim)
    return None


class TensorRTBackend(BaseBackend):
    """Runs a checked engine through Polygraphy's TrtRunner (it owns the CUDA buffers and stream)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, rebuild_stale: bool = False) -> None:
        self.path = Path(path)
        self.runner = None
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such engine")
        platform = current_platform()
        problems = check_sidecar(self.path, platform)
        if problems and rebuild_stale:
            self._rebuild()
            problems = check_sidecar(self.path, platform)
        if problems:
            raise ModelError(f"{self.path} cannot run here: {'; '.join(problems)}; {rebuild_hint(self.path)}")
        info = read_sidecar(self.path)
        self.precision = info.precision
        try:
            self.model_metadata = ModelMetadata.from_dict(info.metadata)
        except (KeyError, TypeError, ValueError, MarsedgeError) as exc:
            raise ModelError(f"{sidecar_path(self.path)}: sidecar metadata is not a model "
                             f"description ({exc})") from None

        from polygraphy.backend.trt import TrtRunner, engine_from_bytes

        self.runner = TrtRunner(engine_from_bytes(self.path.read_bytes()))
        self.runner.activate()
        self.input_name, meta = next(iter(self.runner.get_input_metadata().items()))
        self.engine_batch = static_batch(meta.shape)
        self._input_shape = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else None
                             for d in meta.shape]
        self.max_batch = info.max_batch if self.engine_batch is None else None

    def _rebuild(self) -> None:
        info = read_sidecar(self.path)
        onnx = info.onnx_path(self.path)
        if not onnx.is_file():
            raise ModelError(f"{self.path}: cannot rebuild, its sidecar's source ONNX {onnx} is missing")
        options = BuildOptions(precision=info.precision, dla_core=info.dla_core,
                               gpu_fallback=info.gpu_fallback)
        if info.max_batch:
            options.max_batch = info.max_batch
        from marsedge.runtimes.tensorrt.build import build_engine

        print(f"rebuilding stale engine {self.path} from {onnx}", flush=True)
        build_engine(onnx, options, out=self.path)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        step = self.max_batch
        if step and batch.shape[0] > step:  # a dynamic engine serves any N, max_batch at a time
            return np.concatenate([self.infer_impl(batch[i:i + step])
                                   for i in range(0, batch.shape[0], step)])
        outputs = self.runner.infer({self.input_name: batch})
        return np.array(next(iter(outputs.values())), dtype=np.float32)  # a copy: Polygraphy reuses buffers

    def input_shape(self) -> list[int | None]:
        return self._input_shape

    def close(self) -> None:
        if getattr(self, "runner", None) is not None:
            self.runner.deactivate()
            self.runner = None
