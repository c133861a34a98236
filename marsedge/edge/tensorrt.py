"""TensorRT engines that say what they were built for, and refuse to run anywhere else.

A serialized TensorRT engine is only valid for the exact TensorRT version and GPU it was built on;
trtexec and jetson-inference cache engines by file name alone, so after a JetPack upgrade or a
model change they either fail with an opaque deserialization error or silently run a stale model.
Here every `model.<precision>[.dla0].engine` has a JSON sidecar beside it:

    {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "precision": "int8",
     "dla_core": null, "onnx": "student.int8.onnx", "onnx_sha256": "...", "input_shape": [...],
     "strongly_typed": true, "build_seconds": 41.2, "built_at": "...", "metadata": {...}}

`check_sidecar` compares it with the machine and the ONNX file beside it and lists what differs;
`TensorRTBackend` refuses a foreign or stale engine with that list and the command that rebuilds
it (or rebuilds it itself with `rebuild_stale=True`, `edge-run --rebuild-stale`).

Precision lives in the ONNX, not in builder flags (TensorRT 11 removed BuilderFlag.FP16/INT8 and the
implicit INT8 calibrators): INT8 engines are built from a QDQ model (`marsedge quantize --target
tensorrt`), FP16 engines from an FP16 ONNX made with ModelOpt AutoCast, and every network is
strongly typed where the flag exists (TensorRT >= 10; 11 ignores it, strong typing is always on).
DLA engines (TensorRT 10, Jetson Orin) are the exception: DLA wants the weakly typed FP16/INT8 flags.
Only the sidecar logic runs without TensorRT; it is tested on any machine.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from marsedge.edge.onnx_meta import ModelMetadata, parse_props
from marsedge.errors import ModelError
from marsedge.io import atomic_write_bytes, atomic_write_json, sha256_file

PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_FORMAT = 1


@dataclass(frozen=True)
class Platform:
    """The facts an engine is bound to: TensorRT version and GPU."""

    tensorrt: str
    gpu: str
    compute_capability: str


def cuda_device(index: int = 0) -> tuple[str, str]:
    """(name, "major.minor") of a CUDA device via the driver API (libcuda, on desktops and Jetsons)."""
    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        raise ModelError("no CUDA driver (libcuda.so.1) on this machine: TensorRT engines need a GPU")
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), index) != 0:
        raise ModelError(f"CUDA device {index} is not available")
    cuda.cuDeviceGetName(name, 256, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


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


# ---------------------------------------------------------------- names, sidecars, staleness


def engine_path(onnx_path: str | Path, precision: str, dla_core: int | None = None) -> Path:
    """`model.onnx` -> `model.fp16.engine`, `model.int8.dla0.engine` (a quantized
    `model.int8.onnx` does not become `model.int8.int8.engine`)."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    if stem.endswith(f".{precision}"):
        stem = stem[: -len(precision) - 1]
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return onnx_path.with_name(f"{stem}.{precision}{dla}.engine")


def sidecar_path(engine: str | Path) -> Path:
    return Path(engine).with_suffix(".json")


def check_sidecar(engine: str | Path, platform: Platform) -> list[str]:
    """What differs between an engine's sidecar and this machine / its source ONNX (empty: usable)."""
    engine = Path(engine)
    side = sidecar_path(engine)
    if not side.is_file():
        return [f"no sidecar {side.name} (engine of unknown origin)"]
    try:
        info = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        return [f"sidecar {side.name} is not valid JSON ({exc})"]
    problems = []
    for key, now in (("tensorrt", platform.tensorrt), ("gpu", platform.gpu),
                     ("compute_capability", platform.compute_capability)):
        if info.get(key) != now:
            problems.append(f"built for {key} {info.get(key)!r}, this machine has {now!r}")
    onnx = engine.parent / str(info.get("onnx", ""))
    if info.get("onnx") and onnx.is_file() and sha256_file(onnx) != info.get("onnx_sha256"):
        problems.append(f"{onnx.name} changed since the engine was built (sha256 differs)")
    return problems


def rebuild_hint(engine: str | Path) -> str:
    """The command that rebuilds an engine from the ONNX its sidecar names."""
    engine = Path(engine)
    try:
        info = json.loads(sidecar_path(engine).read_text())
    except (OSError, json.JSONDecodeError):
        return "rebuild it with `marsedge build MODEL.onnx --precision ...`"
    dla = f" --dla {info['dla_core']}" if info.get("dla_core") is not None else ""
    return (f"rebuild with `marsedge build {engine.parent / str(info.get('onnx'))} "
            f"--precision {info.get('precision')}{dla}` or run edge-run with --rebuild-stale")


# ---------------------------------------------------------------- building


@dataclass
class BuildOptions:
    precision: str = "fp16"
    dla_core: int | None = None
    gpu_fallback: bool = False
    workspace_mib: int = 1024
    timing_cache: Path | None = None


def onnx_is_quantized(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


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


def _network_source(onnx_path: Path, options: BuildOptions, trt_major: int) -> tuple[Path, bool]:
    """(ONNX to parse, strongly typed?) for the requested precision."""
    quantized = onnx_is_quantized(onnx_path)
    if options.precision == "int8" and not quantized:
        raise ModelError(f"{onnx_path}: INT8 engines are built from a QDQ model; run "
                         f"`marsedge quantize {onnx_path} --calib DIR --target tensorrt` first")
    if options.precision != "int8" and quantized:
        raise ModelError(f"{onnx_path} is quantized (QDQ): build it with --precision int8")
    if options.dla_core is not None:
        if trt_major >= 11:
            raise ModelError("DLA engines need TensorRT 10 (JetPack 6); TensorRT 11 has no DLA support")
        if options.precision == "fp32":
            raise ModelError("DLA runs FP16 or INT8 only: pass --precision fp16 or int8")
        return onnx_path, False
    if options.precision == "fp16":
        return fp16_onnx(onnx_path), True
    return onnx_path, True


def build_engine(onnx_path: str | Path, options: BuildOptions, out: str | Path | None = None) -> Path:
    """Parse the ONNX, build a serialized engine, write it and its sidecar atomically."""
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: no such ONNX file")
    if options.precision not in PRECISIONS:
        raise ModelError(f"unknown precision {options.precision!r} (choose from {', '.join(PRECISIONS)})")
    platform = current_platform()
    major = int(trt.__version__.split(".")[0])
    source, strongly_typed = _network_source(onnx_path, options, major)
    out = Path(out) if out else engine_path(onnx_path, options.precision, options.dla_core)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{source}: TensorRT cannot parse it: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if not strongly_typed:  # DLA on TensorRT 10: weak typing with precision flags
        config.set_flag(trt.BuilderFlag.FP16)
        if options.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache = None
    if options.timing_cache:
        cache = _timing_cache(config, Path(options.timing_cache))

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{source}: TensorRT failed to build a {options.precision} engine (see log above)")
    seconds = time.perf_counter() - start
    atomic_write_bytes(out, bytes(serialized))
    if cache is not None:
        atomic_write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()))

    props = _onnx_props(onnx_path)
    sidecar = {
        "format": SIDECAR_FORMAT,
        **asdict(platform),
        "precision": options.precision,
        "dla_core": options.dla_core,
        "gpu_fallback": options.gpu_fallback,
        "strongly_typed": strongly_typed,
        # relative when side by side, so a folder of model + engine can be moved as a whole
        "onnx": onnx_path.name if onnx_path.parent.resolve() == out.parent.resolve()
        else str(onnx_path.resolve()),
        "onnx_sha256": sha256_file(onnx_path),
        "input_shape": list(network.get_input(0).shape),
        "build_seconds": round(seconds, 2),
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metadata": parse_props(props, onnx_path).to_dict(),
    }
    atomic_write_json(sidecar_path(out), sidecar)
    return out


def _timing_cache(config, path: Path):
    """Load a timing cache (tactic timings: rebuilds take seconds, not minutes); a cache from another
    TensorRT version or GPU is not trusted: start a fresh one and say so."""
    blob = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(blob)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise ValueError("rejected by this TensorRT")
    except (RuntimeError, TypeError, ValueError) as exc:
        print(f"timing cache {path} not usable here ({exc}); starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _onnx_props(onnx_path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


# ---------------------------------------------------------------- running


class TensorRTBackend:
    """Runs a checked engine through Polygraphy's TrtRunner (it owns the CUDA buffers and stream)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, rebuild_stale: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such engine")
        platform = current_platform()
        problems = check_sidecar(self.path, platform)
        if problems and rebuild_stale:
            self._rebuild()
            problems = check_sidecar(self.path, platform)
        if problems:
            raise ModelError(f"{self.path} cannot run here: {'; '.join(problems)}; {rebuild_hint(self.path)}")
        info = json.loads(sidecar_path(self.path).read_text())
        self.precision = info["precision"]
        self.model_metadata = ModelMetadata.from_dict(info["metadata"])
        self.metadata = self.model_metadata.to_dict()
        self.spec = self.model_metadata.preprocess

        from polygraphy.backend.trt import TrtRunner, engine_from_bytes

        self.runner = TrtRunner(engine_from_bytes(self.path.read_bytes()))
        self.runner.activate()
        self.input_name, meta = next(iter(self.runner.get_input_metadata().items()))
        self.engine_batch = int(meta.shape[0]) if isinstance(meta.shape[0], int) else None

    def _rebuild(self) -> None:
        info = json.loads(sidecar_path(self.path).read_text()) if sidecar_path(self.path).is_file() else {}
        onnx = self.path.parent / str(info.get("onnx", ""))
        if not info.get("onnx") or not onnx.is_file():
            raise ModelError(f"{self.path}: cannot rebuild, the source ONNX named by its sidecar is missing")
        options = BuildOptions(precision=info["precision"], dla_core=info.get("dla_core"),
                               gpu_fallback=bool(info.get("gpu_fallback")))
        print(f"rebuilding stale engine {self.path} from {onnx}", flush=True)
        build_engine(onnx, options, out=self.path)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.engine_batch is not None and batch.shape[0] != self.engine_batch:
            # a static batch-1 engine serves N frames one by one
            return np.concatenate([self.infer(batch[i:i + 1]) for i in range(batch.shape[0])])
        outputs = self.runner.infer({self.input_name: batch})
        return np.asarray(next(iter(outputs.values())), dtype=np.float32)

    def close(self) -> None:
        if getattr(self, "runner", None) is not None:
            self.runner.deactivate()
            self.runner = None

