"""The JSON sidecar of a TensorRT engine: what it was built for, parsed once into a typed record.

A serialized TensorRT engine is only valid for the exact TensorRT version and GPU it was built on;
trtexec and jetson-inference cache engines by file name alone, so after a JetPack upgrade or a
model change they either fail with an opaque deserialization error or silently run a stale model.
Here every `model.<precision>[.dla0].engine` has a sidecar `model.<precision>[.dla0].json`:

    {"format": 1, "tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7",
     "precision": "int8", "dla_core": null, "gpu_fallback": false, "onnx": "student.qdq.onnx",
     "onnx_sha256": "...", "input_shape": [-1, 1, 512, 512], "max_batch": 8,
     "strongly_typed": true, "build_seconds": 41.2, "built_at": "...", "metadata": {...}}

`read_sidecar` is the one parse (a malformed sidecar, or one holding NaN or an infinite number
(`metadata.preprocess.gain`), is one ModelError naming the file and the key);
`check_sidecar` compares it with the machine and the ONNX file beside it and lists what differs.
Torch-, TensorRT- and NumPy-free (`cuda_device` too, so scripts/gpu_check.py can ask for a GPU with
any Python): it runs, and is tested, on any machine.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from marsedge.errors import ModelError
from marsedge.io import atomic_write_json, non_finite, sha256_file

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



@dataclass(frozen=True)
class EngineSidecar:
    """One engine's sidecar. The first seven fields are required (they decide whether the engine
    may run); the rest describe the build and default when an older sidecar lacks them."""

    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    dla_core: int | None
    onnx: str
    onnx_sha256: str
    gpu_fallback: bool = False
    strongly_typed: bool = True
    input_shape: list[int] = field(default_factory=list)
    max_batch: int | None = None  # the profile's max for a dynamic-batch engine, else None
    build_seconds: float | None = None
    built_at: str | None = None
    metadata: dict = field(default_factory=dict)
    format: int = SIDECAR_FORMAT

    @property
    def platform(self) -> Platform:
        return Platform(self.tensorrt, self.gpu, self.compute_capability)

    def onnx_path(self, engine: str | Path) -> Path:
        """The source ONNX (relative names are beside the engine, so the folder moves as a whole)."""
        return Path(engine).parent / self.onnx

    def to_dict(self) -> dict:
        return asdict(self)


REQUIRED = tuple(f.name for f in fields(EngineSidecar)[:7])
_TYPES = {"tensorrt": str, "gpu": str, "compute_capability": str, "precision": str, "onnx": str,
          "onnx_sha256": str, "gpu_fallback": bool, "strongly_typed": bool, "input_shape": list,
          "metadata": dict, "format": int}


def sidecar_path(engine: str | Path) -> Path:
    return Path(engine).with_suffix(".json")


def engine_path(onnx_path: str | Path, precision: str, dla_core: int | None = None) -> Path:
    """`model.onnx` -> `model.fp16.engine`, `model.int8.dla0.engine` (a quantized
    `model.int8.onnx` does not become `model.int8.int8.engine`)."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    if stem.endswith(f".{precision}"):
        stem = stem[: -len(precision) - 1]
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return onnx_path.with_name(f"{stem}.{precision}{dla}.engine")


def parse_sidecar(data: object, source: str | Path) -> EngineSidecar:
    """Validate a sidecar's JSON data into the record; any fault is one line naming `source`."""
    if not isinstance(data, dict):
        raise ModelError(f"{source}: sidecar is not a JSON object")
    where = non_finite(data)  # Python's JSON reads NaN, Infinity and 1e999 as numbers, as for ONNX
    if where is not None:
        raise ModelError(f"{source}: sidecar key {where[1:]} is not a finite number")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ModelError(f"{source}: sidecar lacks {', '.join(missing)}")
    known = {f.name for f in fields(EngineSidecar)}
    values = {k: v for k, v in data.items() if k in known}
    for key, kind in _TYPES.items():
        if key in values and not isinstance(values[key], kind):
            raise ModelError(f"{source}: sidecar key {key!r} should be {kind.__name__}, got {values[key]!r}")
    for key in ("dla_core", "max_batch"):
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ModelError(f"{source}: sidecar key {key!r} should be a non-negative integer or null, "
                             f"got {value!r}")
    if values["precision"] not in PRECISIONS:
        raise ModelError(f"{source}: sidecar precision {values['precision']!r} is not one of "
                         f"{', '.join(PRECISIONS)}")
    return EngineSidecar(**values)


def read_sidecar(engine: str | Path) -> EngineSidecar:
    """The sidecar of an engine; ModelError naming the file when it is missing or malformed."""
    side = sidecar_path(engine)
    try:
        text = side.read_text()
    except FileNotFoundError:
        raise ModelError(f"{side}: no sidecar beside {Path(engine).name} "
                         "(engine of unknown origin)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{side}: sidecar cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{side}: sidecar is not valid JSON ({exc})") from None
    return parse_sidecar(data, side)


def write_sidecar(engine: str | Path, record: EngineSidecar) -> Path:
    return atomic_write_json(sidecar_path(engine), record.to_dict())


def check_sidecar(engine: str | Path, platform: Platform) -> list[str]:
    """What differs between an engine's sidecar and this machine / its source ONNX (empty: usable).
    A missing or malformed sidecar is itself the one problem listed."""
    try:
        info = read_sidecar(engine)
    except ModelError as exc:
        return [str(exc)]
    return sidecar_problems(info, engine, platform)


def sidecar_problems(info: EngineSidecar, engine: str | Path, platform: Platform) -> list[str]:
    problems = []
    for key, now in (("tensorrt", platform.tensorrt), ("gpu", platform.gpu),
                     ("compute_capability", platform.compute_capability)):
        if getattr(info, key) != now:
            problems.append(f"built for {key} {getattr(info, key)!r}, this machine has {now!r}")
    onnx = info.onnx_path(engine)
    if info.onnx and onnx.is_file() and sha256_file(onnx) != info.onnx_sha256:
        problems.append(f"{onnx.name} changed since the engine was built (sha256 differs)")
    return problems


def rebuild_hint(engine: str | Path) -> str:
    """The command that rebuilds an engine from the ONNX its sidecar names."""
    try:
        info = read_sidecar(engine)
    except ModelError:
        return "rebuild it with `marsedge build MODEL.onnx --precision ...`"
    dla = f" --dla {info.dla_core}" if info.dla_core is not None else ""
    return (f"rebuild with `marsedge build {info.onnx_path(engine)} "
            f"--precision {info.precision}{dla}` or run edge-run with --rebuild-stale")
