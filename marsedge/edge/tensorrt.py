"""TensorRT engines built on Polygraphy's loaders, for TensorRT 10 and 11 alike, and run only where
their sidecar (`marsedge.edge.engine_sidecar`) says they belong.

One code path, chosen by what the installed bindings expose (`Capabilities`), never by version
number: TensorRT 11 removed `BuilderFlag.FP16`/`INT8` (precision comes from the network: FP16 from a
reduced-precision ONNX made with ModelOpt AutoCast, INT8 from a QDQ model made by `marsedge quantize
--target tensorrt`) and always builds strongly typed; TensorRT 10 builds strongly typed where
`NetworkDefinitionCreationFlag.STRONGLY_TYPED` exists. DLA (Jetson Orin) is used wherever
`DeviceType.DLA` exists: on bindings with precision flags (10.x) DLA wants a weakly typed network
with FP16/INT8 flags; without them (11.4+, JetPack 7.2.2+) the network stays strongly typed and DLA
sets only the device type, the core and GPU fallback. The decisions live in
`marsedge.edge.trt_plan` (TensorRT-free); this module runs them.

An ONNX with a dynamic batch axis gets one optimisation profile (min 1, opt/max from the options).
A CPU-target INT8 model (QOperator nodes, or `quantization.target == "cpu"`) is refused before
TensorRT is even looked for. `TensorRTBackend` refuses a foreign or stale engine with the list of
differences and the command that rebuilds it (or rebuilds it with `rebuild_stale=True`).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from marsedge.edge.backends import BaseBackend
from marsedge.edge.engine_sidecar import (
    PRECISIONS,
    EngineSidecar,
    Platform,
    check_sidecar,
    cuda_device,
    engine_path,
    read_sidecar,
    rebuild_hint,
    sidecar_path,
    write_sidecar,
)
from marsedge.edge.onnx_meta import ModelMetadata, parse_props
from marsedge.edge.trt_plan import (
    BuildOptions,
    Capabilities,
    apply_dla,
    batch_profile,
    inspect_onnx,
    plan_build,
    refuse_cpu_target,
)
from marsedge.errors import MarsedgeError, ModelError
from marsedge.io import atomic_write_bytes, sha256_file

__all__ = ["PRECISIONS", "BuildOptions", "Platform", "TensorRTBackend", "build_engine", "check_sidecar",
           "cuda_device", "engine_path", "rebuild_hint", "sidecar_path"]


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


# ---------------------------------------------------------------- building


def fp16_onnx(onnx_path: Path) -> Path:
    """An FP16 copy of an FP32 ONNX via ModelOpt AutoCast (keeps FP32 inputs/outputs and the
    metadata), for strongly typed FP16 engines. Reused while it is newer than its source."""
    out = onnx_path.with_name(f"{onnx_path.stem}.fp16.onnx")
    if out.is_file() and out.stat().st_mtime >= onnx_path.stat().st_mtime:
        return out
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    model = convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16",
                                       keep_io_types=True)
    source = onnx.load(str(onnx_path), load_external_data=False)
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    atomic_write_bytes(out, model.SerializeToString())
    return out


def build_engine(onnx_path: str | Path, options: BuildOptions, out: str | Path | None = None) -> Path:
    """Parse the ONNX, build a serialized engine, write it and its sidecar atomically."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: no such ONNX file")
    if options.precision not in PRECISIONS:
        raise ModelError(f"unknown precision {options.precision!r} (choose from {', '.join(PRECISIONS)})")
    facts = inspect_onnx(onnx_path)
    refuse_cpu_target(onnx_path, facts)  # before TensorRT: the mistake is named on any machine
    shapes = batch_profile(onnx_path, facts, options)
    trt = import_tensorrt()
    plan = plan_build(onnx_path, facts, options, Capabilities.of(trt))
    platform = current_platform()
    source = fp16_onnx(onnx_path) if plan.reduce_to_fp16 else onnx_path
    out = Path(out) if out else engine_path(onnx_path, options.precision, options.dla_core)

    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )
    from polygraphy.exception import PolygraphyException

    cache = str(options.timing_cache) if options.timing_cache else None
    config = CreateConfig(fp16=plan.fp16_flag, int8=plan.int8_flag,
                          profiles=[Profile().add(facts.input_name, *shapes)] if shapes else None,
                          memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(options.workspace_mib) << 20},
                          load_timing_cache=cache)
    if plan.dla_core is not None:
        config = PostprocessConfig(config, lambda _builder, _network, cfg: apply_dla(trt, cfg, plan))
    network = NetworkFromOnnxPath(str(source), strongly_typed=plan.strongly_typed_flag)
    start = time.perf_counter()
    try:
        serialized = EngineBytesFromNetwork(network, config=config, save_timing_cache=cache)()
    except PolygraphyException as exc:
        first = (str(exc).strip().splitlines() or ["see the log above"])[0]
        raise ModelError(f"{source}: TensorRT could not build a {options.precision} engine: "
                         f"{first}") from None
    seconds = time.perf_counter() - start
    atomic_write_bytes(out, bytes(serialized))

    side_by_side = onnx_path.parent.resolve() == out.parent.resolve()
    record = EngineSidecar(
        **asdict(platform), precision=options.precision, dla_core=options.dla_core,
        # relative when side by side, so a folder of model + engine can be moved as a whole
        onnx=onnx_path.name if side_by_side else str(onnx_path.resolve()),
        onnx_sha256=sha256_file(onnx_path), gpu_fallback=options.gpu_fallback,
        strongly_typed=plan.strongly_typed, input_shape=[-1 if d is None else d for d in facts.input_shape],
        max_batch=options.max_batch if shapes else None, build_seconds=round(seconds, 2),
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        metadata=parse_props(facts.props, onnx_path).to_dict())
    write_sidecar(out, record)
    return out


# ---------------------------------------------------------------- running


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
        print(f"rebuilding stale engine {self.path} from {onnx}", flush=True)
        build_engine(onnx, options, out=self.path)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        step = self.max_batch
        if step and batch.shape[0] > step:  # a dynamic engine serves any N, max_batch at a time
            return np.concatenate([self.infer_impl(batch[i:i + step])
                                   for i in range(0, batch.shape[0], step)])
        outputs = self.runner.infer({self.input_name: batch})
        return np.array(next(iter(outputs.values())), dtype=np.float32)  # a copy: Polygraphy reuses buffers

    def close(self) -> None:
        if getattr(self, "runner", None) is not None:
            self.runner.deactivate()
            self.runner = None
