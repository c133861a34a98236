"""The TensorRT loader: ONNX -> serialized engine + sidecar, built on Polygraphy's loaders, for
TensorRT 10 and 11 alike (`marsedge build`; a stale engine is rebuilt by its runner on request).

One code path, chosen by what the installed bindings expose (`Capabilities`), never by version
number: TensorRT 11 removed `BuilderFlag.FP16`/`INT8` (precision comes from the network: FP16 from a
reduced-precision ONNX made with ModelOpt AutoCast, INT8 from a QDQ model made by `marsedge quantize
--target tensorrt`) and always builds strongly typed; TensorRT 10 builds strongly typed where
`NetworkDefinitionCreationFlag.STRONGLY_TYPED` exists. DLA (Jetson Orin) is used wherever
`DeviceType.DLA` exists: on bindings with precision flags (10.x) DLA wants a weakly typed network
with FP16/INT8 flags; without them (11.4+, JetPack 7.2.2+) the network stays strongly typed and DLA
sets only the device type, the core and GPU fallback. The decisions live in `plan` (TensorRT-free);
this module runs them.

An ONNX with a dynamic batch axis gets one optimisation profile (min 1, opt/max from the options).
A CPU-target INT8 model (QOperator nodes, or `quantization.target == "cpu"`) is refused before
TensorRT is even looked for.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from pathlib import Path

from marsedge.edge.onnx_meta import parse_props
from marsedge.errors import ModelError
from marsedge.io import atomic_write_bytes, sha256_file
from marsedge.runtimes.tensorrt.plan import (
    BuildOptions,
    Capabilities,
    apply_dla,
    batch_profile,
    inspect_onnx,
    plan_build,
    refuse_cpu_target,
)
from marsedge.runtimes.tensorrt.runner import current_platform, import_tensorrt
from marsedge.runtimes.tensorrt.sidecar import PRECISIONS, EngineSidecar, engine_path, write_sidecar


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
