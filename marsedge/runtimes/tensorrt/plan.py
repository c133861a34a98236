"""What a TensorRT build will do, decided without TensorRT: the ONNX's facts, the options, the
bindings' capabilities (read from their enums: TensorRT 10.x and 11.x differ) and the plan they give.

Kept apart from the loader (`build`) and the runner so that every decision is tested on any
machine, with Polygraphy's objects and small stand-ins for the tensorrt module's enums.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from marsedge.edge.onnx_meta import QUANTIZATION
from marsedge.errors import ConfigError, ModelError

# ONNX Runtime's QOperator layout (the CPU target): TensorRT's parser knows none of these
QOPERATOR_OPS = frozenset({"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QGemm", "QAttention"})
FLOAT16 = 10  # onnx.TensorProto.FLOAT16


@dataclass(frozen=True)
class Capabilities:
    """What the installed TensorRT bindings can do, read from their enums (10.x and 11.x differ)."""

    version: str
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
    precision_flags: bool      # BuilderFlag.FP16 and BuilderFlag.INT8 exist (gone in 11.x)
    dla: bool                  # DeviceType.DLA exists (10.x; 11.4+ again)
    gpu_fallback: bool         # BuilderFlag.GPU_FALLBACK exists

    @classmethod
    def of(cls, trt) -> Capabilities:
        flags = getattr(trt, "BuilderFlag", None)
        return cls(version=str(trt.__version__),
                   strongly_typed_flag=hasattr(getattr(trt, "NetworkDefinitionCreationFlag", None),
                                               "STRONGLY_TYPED"),
                   precision_flags=hasattr(flags, "FP16") and hasattr(flags, "INT8"),
                   dla=hasattr(getattr(trt, "DeviceType", None), "DLA"),
                   gpu_fallback=hasattr(flags, "GPU_FALLBACK"))

    @property
    def always_strongly_typed(self) -> bool:
        """No precision flags: the network's own types are the only precision there is."""
        return not self.precision_flags


# ---------------------------------------------------------------- what the ONNX says


@dataclass(frozen=True)
class OnnxFacts:
    """What the build needs to know about an ONNX file, from one load (no TensorRT)."""

    input_name: str
    input_shape: tuple[int | None, ...]  # None: a dynamic (symbolic or unset) dimension
    ops: frozenset[str]
    reduced_precision: bool  # FP16 tensors or casts: an AutoCast/FP16 export
    props: dict[str, str]    # metadata_props
    quantization: dict

    @property
    def qdq(self) -> bool:
        return bool({"QuantizeLinear", "DequantizeLinear"} & self.ops)

    @property
    def qoperator_ops(self) -> list[str]:
        return sorted(op for op in self.ops if op.startswith("QLinear") or op in QOPERATOR_OPS)


def inspect_onnx(onnx_path: Path) -> OnnxFacts:
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{onnx_path}: not a readable ONNX model ({exc})") from None
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if not inputs:
        raise ModelError(f"{onnx_path}: the graph has no input")
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in inputs[0].type.tensor_type.shape.dim)
    casts_to_fp16 = (n for n in graph.node if n.op_type == "Cast"
                     and any(a.name == "to" and a.i == FLOAT16 for a in n.attribute))
    reduced = any(i.data_type == FLOAT16 for i in graph.initializer) or any(casts_to_fp16)
    props = {p.key: p.value for p in model.metadata_props}
    try:
        quant = json.loads(props[QUANTIZATION]) if QUANTIZATION in props else {}
    except json.JSONDecodeError:
        raise ModelError(f"{onnx_path}: metadata {QUANTIZATION} is not valid JSON") from None
    return OnnxFacts(inputs[0].name, dims, frozenset(n.op_type for n in graph.node), reduced, props,
                     quant if isinstance(quant, dict) else {})


def refuse_cpu_target(onnx_path: Path, facts: OnnxFacts) -> None:
    """A model quantized for ONNX Runtime on the CPU fails inside TensorRT's parser: say so first."""
    reason = None
    if facts.qoperator_ops:
        reason = f"QOperator nodes {', '.join(facts.qoperator_ops[:3])}"
    elif facts.quantization.get("target") == "cpu":
        reason = "its metadata says quantization.target is 'cpu'"
    if reason:
        raise ModelError(f"{onnx_path} is INT8 for ONNX Runtime on the CPU ({reason}), not for TensorRT: "
                         f"quantize the FP32 ONNX with `marsedge quantize FP32.onnx --calib DIR --target "
                         f"tensorrt`, or build the FP32 ONNX with --precision fp16")


# ---------------------------------------------------------------- options and the build plan

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_MIB_PER_UNIT = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 ** 2}


def parse_size_mib(text: str | int, key: str = "--workspace") -> int:
    """`1024` (MiB, as before), `512M`, `1G`, `1.5GiB` -> MiB; a bad size is a ConfigError naming `key`."""
    match = _SIZE.match(str(text))
    mib = float(match.group(1)) * _MIB_PER_UNIT[match.group(2).upper()] if match else 0.0
    if mib < 1:
        raise ConfigError(f"{key}: {text!r} is not a size (a number of MiB, or with a unit: 512M, 1G)")
    return int(mib)


def parse_mem_pool(text: str) -> int:
    """trtexec's `--memPoolSize workspace:1G` -> MiB (only the workspace pool is configurable here)."""
    mib = None
    for item in filter(None, (s.strip() for s in text.split(","))):
        pool, _, size = item.partition(":")
        if pool.strip().lower() != "workspace" or not size:
            raise ConfigError(f"--memPoolSize: only workspace:SIZE is supported, got {item!r}")
        mib = parse_size_mib(size, "--memPoolSize")
    if mib is None:
        raise ConfigError(f"--memPoolSize: expected workspace:SIZE, got {text!r}")
    return mib


@dataclass
class BuildOptions:
    precision: str = "fp16"
    dla_core: int | None = None
    gpu_fallback: bool = False
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    max_batch: int = 8        # dynamic-batch ONNX: the profile's max ...
    opt_batch: int = 1        # ... and the batch TensorRT tunes for (the rover runs one frame at a time)


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built, decided from the ONNX, the options and the bindings' capabilities."""

    reduce_to_fp16: bool       # parse an AutoCast FP16 copy of the ONNX
    strongly_typed: bool       # the network's types are its precision (recorded in the sidecar)
    strongly_typed_flag: bool  # pass STRONGLY_TYPED when creating the network
    fp16_flag: bool
    int8_flag: bool
    dla_core: int | None
    gpu_fallback: bool


def plan_build(onnx_path: Path, facts: OnnxFacts, options: BuildOptions, caps: Capabilities) -> BuildPlan:
    precision = options.precision
    if precision == "int8" and not facts.qdq:
        raise ModelError(f"{onnx_path}: INT8 engines are built from a QDQ model; run "
                         f"`marsedge quantize {onnx_path} --calib DIR --target tensorrt` first")
    if precision != "int8" and facts.qdq:
        raise ModelError(f"{onnx_path} is quantized (QDQ): build it with --precision int8")
    if precision == "fp32" and facts.reduced_precision:
        raise ModelError(f"{onnx_path} holds FP16 tensors: build it with --precision fp16")
    dla = options.dla_core
    if options.gpu_fallback and dla is None:
        raise ConfigError("--gpu-fallback applies to DLA builds only: add --dla N")
    if dla is not None:
        if not caps.dla:
            raise ModelError(f"TensorRT {caps.version} has no DLA (its bindings lack DeviceType.DLA): "
                             "build without --dla")
        if precision == "fp32":
            raise ModelError("DLA runs FP16 or INT8 only: pass --precision fp16 or int8")
        if options.gpu_fallback and not caps.gpu_fallback:
            raise ModelError(f"TensorRT {caps.version} has no BuilderFlag.GPU_FALLBACK: "
                             "build without --gpu-fallback")
    weak_dla = dla is not None and caps.precision_flags  # 10.x DLA: weak typing with precision flags
    weak = weak_dla or not (caps.strongly_typed_flag or caps.always_strongly_typed)
    if weak:
        return BuildPlan(reduce_to_fp16=False, strongly_typed=False, strongly_typed_flag=False,
                         fp16_flag=precision in ("fp16", "int8"), int8_flag=precision == "int8",
                         dla_core=dla, gpu_fallback=options.gpu_fallback)
    return BuildPlan(reduce_to_fp16=precision == "fp16" and not facts.reduced_precision, strongly_typed=True,
                     strongly_typed_flag=caps.strongly_typed_flag, fp16_flag=False, int8_flag=False,
                     dla_core=dla, gpu_fallback=options.gpu_fallback)


def batch_profile(onnx_path: Path, facts: OnnxFacts, options: BuildOptions):
    """(min, opt, max) input shapes for a dynamic-batch ONNX, None for a static one."""
    batch, *rest = facts.input_shape
    if any(d is None for d in rest):
        raise ModelError(f"{onnx_path}: input {facts.input_name} has dynamic dimensions besides the batch "
                         f"{facts.input_shape}; export it with a fixed size (`marsedge export --size`)")
    if batch is not None:
        return None
    if not 1 <= options.opt_batch <= options.max_batch:
        raise ConfigError(f"--opt-batch {options.opt_batch} must be between 1 and "
                          f"--max-batch {options.max_batch}")
    return tuple((n, *rest) for n in (1, options.opt_batch, options.max_batch))


def apply_dla(trt, config, plan: BuildPlan) -> None:
    """Put a builder config on DLA core N: device type, core, and GPU fallback, nothing else (the
    precision is the network's on 11.x, the FP16/INT8 flags' on 10.x)."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(plan.dla_core)
    if plan.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def options_from_args(args) -> BuildOptions:
    """`marsedge build`'s flags, trtexec's spellings included, -> BuildOptions: `--int8`/`--fp16`
    name a precision (both, as trtexec users often type: int8), `--memPoolSize workspace:1G` wins
    over `--workspace`, sizes take units (a plain number is MiB)."""
    implied = "int8" if args.int8 else "fp16" if args.fp16 else None
    if args.precision and implied and args.precision != implied:
        raise ConfigError(f"--precision {args.precision} contradicts --{implied}")
    workspace = (parse_mem_pool(args.mem_pool_size) if args.mem_pool_size
                 else parse_size_mib(args.workspace))
    return BuildOptions(precision=args.precision or implied or "fp16", dla_core=args.dla,
                        gpu_fallback=args.gpu_fallback, workspace_mib=workspace,
                        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
                        max_batch=args.max_batch, opt_batch=args.opt_batch)
