"""FP32 ONNX -> INT8 ONNX, calibrated on real frames and gated on accuracy and on speed.

    marsedge quantize student.onnx --calib data/ai4mars --eval data/ai4mars --target cpu

One loop for every target. The calibration frames are read and preprocessed once and the FP32
reference of the gate is scored once; then the target's quantizer (the `QUANTIZERS` registry)
writes each candidate recipe (`--recipe auto`: the quantizer's `auto` list) on those same frames,
and for the CPU target ONNX Runtime's calibration ranges are computed once and shared by every
candidate (`calibration_cache_path`). Where the target runs on this machine (`measure_latency`),
FP32 and every candidate are timed together in alternating blocks (`marsedge.timing`); each
candidate is gated on accuracy (`marsedge.edge.gate`), and the fastest that passes is kept.

Two gates, one reason line each, nothing written unless `--force`:
- accuracy: the one INT8 verdict (`marsedge.edge.verdict`, the rule bench and the report apply too):
  mIoU drop <= `--tolerance` (a fraction, 0.01 = one point); when every candidate fails, the last of the list
  (the one that keeps the most layers FP32) is the one reported (and written with --force);
- speed (measured targets): INT8 at least `--min-speedup` (1.0) times as fast as FP32 here. A
  64-128 px model is often too small for INT8 to pay; export at the deployment size.
Every candidate is recorded in the metadata (`tried`: recipe, runtime, ms, speed-up, mIoU drop, verdict).
Runtimes (`--target cpu`): where OpenVINO is installed, its QDQ layouts are candidates too, gated and
timed on OpenVINO, and the chosen runtime is recorded in the file for `open_backend` to follow
(`marsedge.edge.runtime_choice`; `--runtime` keeps one runtime's candidates only).

Defaults, for a quantize in about a minute (`benchmarks/results/cpu_runtimes.md`, 512 px,
2 cores, machine loaded to load average ~14): 64 calibration frames and min-max
calibration (not entropy). ORT's entropy histograms cost ~3 s a frame here: calibrating 64 frames
took 212 s, against 116 s for the whole `quantize --target cpu` with min-max (three candidates,
gate and timing included; each further candidate costs ~2.5 s on the shared ranges). Accuracy
cost on the trained benchmark student (a weak one: FP32 mIoU 0.093 on 30 gold-min1 frames): mIoU
drop 0.00004 with min-max/64 frames, 0.0001 with entropy/64, pixel agreement >= 0.9998 both; use
`--method entropy --n 500` where a model's activations have long tails the gate rejects.

- `--target cpu` (output MODEL.int8.onnx): ONNX Runtime's own quantizer in the layouts its CPU
  kernels fuse (`CPU_RECIPES`; `benchmarks/edge_int8_layouts.py` and `benchmarks/cpu_runtimes.py`
  measure them). u8 activations x s8 weights (MLAS's VNNI GEMMs are u8 x s8; S8 activations miss
  them). Resize stays FP32 in every recipe: ORT's uint8 Resize kernel took 6.2 ms of a 22.9 ms
  512 px run (two nodes) where the FP32 one takes 1.3-1.9 ms (ONNX Runtime's profile). `qop-*` are
  QOperator files (QLinearConv & co., explicit in the file); `qdq-*` are QuantizeLinear /
  DequantizeLinear files that ONNX Runtime fuses at load and OpenVINO runs natively as INT8
  (it cannot load QOperator files). `qdq-s8s8-sym` (symmetric int8 activations and weights, the
  layout TensorRT's explicit quantization takes) is the one file meant for both TensorRT and
  OpenVINO; `--target tensorrt --recipe qdq-s8s8-sym` writes it in seconds, without modelopt.
- `--target tensorrt` (output MODEL.qdq.onnx): nvidia-modelopt ONNX PTQ writes a QDQ model for
  TensorRT's explicit quantization (the only INT8 path left in TensorRT 11). Non-quantized layers
  stay FP32 so the gate can evaluate it on ONNX Runtime CPU. modelopt runs in a child process
  (`marsedge.edge.modelopt_ptq`: it patches ONNX Runtime for the whole process); its per-node
  calibration (`calibrate_per_node`, bounded memory, about a minute per frame at 512 px on 2
  cores) runs only with `--per-node`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from marsedge.edge.cpu_recipes import (
    AUTO_CPU_RECIPES,
    CPU_RECIPES,
    excluded_convs,
    quantized_op_types,
)
from marsedge.edge.runtimes import RUNTIMES as RUNTIME_REGISTRY
from marsedge.edge.verdict import DEFAULT_TOLERANCE, check_tolerance
from marsedge.errors import ConfigError, ModelError
from marsedge.metrics import HEADLINE
from marsedge.ownership import refuse_existing, refuse_same_path

if TYPE_CHECKING:  # kept out of the import, so `marsedge --help` and the CLI choices stay light
    from marsedge.data.preprocess import PreprocessSpec
    from marsedge.edge.calibration import CalibrationSet

# where the gate and the timer run (--target cpu): auto, or one CPU runtime of marsedge.edge.runtimes
RUNTIMES = ("auto", *(name for name, r in RUNTIME_REGISTRY.items() if r.auto_recipes))
METHODS = ("max", "entropy")  # max (min-max) first: the default (entropy: ~10x slower to calibrate)
DEFAULT_FRAMES = 64  # calibration frames by default (bounded: quantize in about a minute at 512 px;
# calibration.WARN_FRAMES warns below the same count)


@dataclass
class QuantizeOptions:
    target: str = "cpu"  # a key of QUANTIZERS
    method: str = METHODS[0]
    n: int = DEFAULT_FRAMES
    min_frames: int = 32
    tolerance: float = DEFAULT_TOLERANCE  # mIoU drop as a fraction (marsedge.edge.verdict)
    min_speedup: float = 1.0  # INT8 vs FP32 on this machine (targets that measure latency); 0: off
    force: bool = False
    overwrite: bool = False  # replace an existing OUT
    dla: bool = False
    per_node: bool = False  # modelopt's calibrate_per_node (tensorrt target)
    threads: int | None = None
    seed: int = 0
    recipe: str = "auto"  # "auto" (the quantizer's `auto` list) or one of the quantizer's recipes
    runtime: str = "auto"  # auto: every installed CPU runtime's candidates (marsedge.edge.runtime_choice)
    progress: bool = True

    def validate(self) -> None:
        """Every option check, in one place: the CLI calls it before any work, quantize_model too."""
        if self.target not in QUANTIZERS:
            raise ConfigError(f"--target must be one of {tuple(QUANTIZERS)}, got {self.target!r}")
        quantizer = QUANTIZERS[self.target]
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {METHODS}, got {self.method!r}")
        for flag, on, allowed in (("--dla", self.dla, "dla"), ("--per-node", self.per_node, "per_node")):
            if on and not getattr(quantizer, allowed):
                names = ", ".join(name for name, q in QUANTIZERS.items() if getattr(q, allowed))
                raise ConfigError(f"{flag} applies to --target {names} only")
        if self.recipe != "auto" and self.recipe not in quantizer.recipes:
            raise ConfigError(f"--recipe must be auto or one of {', '.join(quantizer.recipes)} for --target "
                              f"{self.target}, got {self.recipe!r}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"--runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.runtime == "openvino":
            if self.target != "cpu":
                raise ConfigError("--runtime openvino applies to --target cpu only")
            if self.recipe != "auto" and not self.recipe.startswith("qdq-"):
                raise ConfigError(f"--recipe {self.recipe} writes a QOperator file, which OpenVINO cannot "
                                  "load: choose a qdq-* recipe or auto with --runtime openvino")
            if not RUNTIME_REGISTRY["openvino"].available():
                raise ConfigError("--runtime openvino needs OpenVINO: pip install .[openvino]")
        if self.n < 1 or self.min_frames < 1:
            raise ConfigError(f"--n and --min-frames must be positive, got {self.n} and {self.min_frames}")
        check_tolerance(self.tolerance)
        if self.min_speedup < 0:
            raise ConfigError(f"--min-speedup must be >= 0, got {self.min_speedup}")


@dataclass
class QuantizeJob:
    """What a quantizer is given: the FP32 source, where to write the candidate, the calibration
    frames, and `shared` (a folder + dict every candidate of one quantize shares: the prepared
    model, the calibration ranges)."""

    src: Path
    dst: Path
    calib: CalibrationSet
    spec: PreprocessSpec
    input_name: str
    options: QuantizeOptions
    shared: dict = field(default_factory=dict)

    def workdir(self) -> Path:
        """A scratch folder shared by the job's candidates (removed by `quantize_model`)."""
        if "workdir" not in self.shared:
            self.shared["workdir"] = Path(tempfile.mkdtemp(prefix=".quantize-", dir=self.dst.parent))
        return self.shared["workdir"]


@dataclass(frozen=True)
class Quantizer:
    """One target: `quantize(job, recipe)` writes a candidate to `job.dst` and returns its record."""

    name: str
    quantize: Callable[[QuantizeJob, str], dict]
    recipes: tuple[str, ...]  # what --recipe may name
    auto: tuple[str, ...]  # `--recipe auto`: every one is made, the fastest passing is kept
    suffix: str  # default output: MODEL<suffix>
    measure_latency: bool = False  # INT8 vs FP32 on ONNX Runtime CPU (meaningful where it runs)
    dla: bool = False  # accepts --dla
    per_node: bool = False  # accepts --per-node

    def recipes_for(self, options: QuantizeOptions) -> tuple[str, ...]:
        """The files to make: --recipe, or for auto the `auto` lists of the runtimes candidates run on
        (`runtime_choice.plan`: OpenVINO cannot load QOperator files, and ranks layouts differently)."""
        from marsedge.edge.runtime_choice import plan

        candidates = plan(options.target, options.runtime, options.recipe, self.auto)
        return tuple(dict.fromkeys(recipe for recipe, _ in candidates))

    def candidates(self, job: QuantizeJob) -> Iterator[tuple[Path, dict]]:
        """Each candidate in turn, each in its own file of the job's work folder."""
        recipes = self.recipes_for(job.options)
        for i, recipe in enumerate(recipes, 1):
            if len(recipes) > 1:
                print(f"candidate {i}/{len(recipes)}: {recipe}", flush=True)
            dst = job.workdir() / f"{recipe}.onnx"
            yield dst, self.quantize(replace(job, dst=dst), recipe)


QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(name: str, recipes: tuple[str, ...], auto: tuple[str, ...], suffix: str,
                       measure_latency: bool = False, dla: bool = False, per_node: bool = False):
    """Decorator: `fn(job, recipe) -> record` becomes the quantizer of target `name`."""

    def wrap(fn: Callable[[QuantizeJob, str], dict]) -> Callable[[QuantizeJob, str], dict]:
        QUANTIZERS[name] = Quantizer(name, fn, recipes, auto, suffix, measure_latency, dla, per_node)
        return fn

    return wrap


def recipe_choices() -> list[str]:
    """Every value --recipe accepts, over all targets (the CLI's choices)."""
    return ["auto", *dict.fromkeys(r for q in QUANTIZERS.values() for r in q.recipes)]


def keep_metadata(src: Path, dst: Path) -> None:
    """Copy the source model's metadata_props onto a quantizer's output (modelopt drops them)."""
    import onnx

    from marsedge.edge.onnx_meta import set_props

    source = onnx.load(str(src), load_external_data=False)
    model = onnx.load(str(dst))
    set_props(model, {p.key: p.value for p in source.metadata_props})
    onnx.save(model, str(dst))


# ---------------------------------------------------------------- the quantizers


def _prepared(job: QuantizeJob) -> Path:
    """ORT's pre-processing (shape inference, graph optimisation) of the source, once per job."""
    if "prepared" not in job.shared:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = job.workdir() / "prepared.onnx"
        quant_pre_process(str(job.src), str(prepared), skip_symbolic_shape=True)
        job.shared["prepared"] = prepared
    return job.shared["prepared"]


def _calibration_method(job: QuantizeJob):
    from onnxruntime.quantization import CalibrationMethod

    return CalibrationMethod.Entropy if job.options.method == "entropy" else CalibrationMethod.MinMax


def _ranges(job: QuantizeJob) -> Path:
    """ONNX Runtime's calibration, once per job: the ranges of the outputs of every op type that
    either format quantizes (Resize included), saved as ORT's calibration cache, which every
    candidate's quantize_static then loads instead of calibrating again (the symmetric recipe
    derives its zero-point-0 parameters from the same ranges)."""
    if "ranges" not in job.shared:
        import onnx
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        from marsedge.edge.calibration import calibration_stride, frame_reader

        prepared = _prepared(job)
        present = dict.fromkeys(n.op_type for n in onnx.load(str(prepared)).graph.node)
        op_types = [op for op in present if op in QLinearOpsRegistry or op in QDQRegistry]
        reader = frame_reader(job.calib, job.spec, job.input_name, job.options.progress)
        stride = calibration_stride(len(reader))
        with tempfile.TemporaryDirectory(dir=job.workdir()) as tmp:
            calibrator = create_calibrator(prepared, op_types, calibrate_method=_calibration_method(job),
                                           augmented_model_path=str(Path(tmp) / "aug.onnx"))
            for start in range(0, len(reader), stride):  # strided: bounded memory (calibration's doc)
                reader.set_range(start, start + stride)
                calibrator.collect_data(reader)
            ranges = calibrator.compute_data()
        job.shared["ranges"] = job.workdir() / "ranges.json"
        save_tensors_data(ranges, job.shared["ranges"])
    return job.shared["ranges"]


def quantize_ort(job: QuantizeJob, recipe: str) -> dict:
    """ONNX Runtime static quantization in one of the CPU_RECIPES layouts (see the module doc),
    on the job's shared calibration ranges."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    layout = CPU_RECIPES[recipe]
    ranges = _ranges(job)
    prepared = _prepared(job)
    model = onnx.load(str(prepared))
    exclude, op_types = excluded_convs(model, layout), quantized_op_types(model, layout)
    quantize_static(
        str(prepared), str(job.dst), None,
        quant_format=QuantFormat.QOperator if layout.format == "QOperator" else QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if layout.activations == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8, per_channel=layout.per_channel, nodes_to_exclude=exclude,
        op_types_to_quantize=op_types,
        calibrate_method=_calibration_method(job), calibration_cache_path=ranges,
        extra_options={"ActivationSymmetric": layout.symmetric, "WeightSymmetric": True},
    )
    keep_metadata(job.src, job.dst)
    return {"tool": "onnxruntime.quantization", "recipe": recipe, "format": layout.format,
            "activations": layout.activations + (" symmetric" if layout.symmetric else ""),
            "weights": "int8 " + ("per-channel" if layout.per_channel else "per-tensor"),
            "excluded_nodes": exclude, "fp32_ops": list(layout.fp32_ops)}


register_quantizer("cpu", tuple(CPU_RECIPES), AUTO_CPU_RECIPES, ".int8.onnx",
                   measure_latency=True)(quantize_ort)


@register_quantizer("tensorrt", ("modelopt-int8", "qdq-s8s8-sym"), ("modelopt-int8",), ".qdq.onnx",
                    dla=True, per_node=True)
def quantize_tensorrt(job: QuantizeJob, recipe: str) -> dict:
    """nvidia-modelopt ONNX PTQ (in a child process) -> QDQ model for TensorRT explicit quantization;
    or `qdq-s8s8-sym`, ONNX Runtime's symmetric QDQ (the file OpenVINO runs too)."""
    if recipe in CPU_RECIPES:
        return {**quantize_ort(job, recipe), "target_dla": job.options.dla}
    from marsedge.edge.modelopt_ptq import quantize_in_child

    quantize_in_child(job.src, job.dst, job.calib, job.spec, job.input_name, job.options.method,
                      job.options.dla, job.options.per_node)
    keep_metadata(job.src, job.dst)
    return {"tool": "nvidia-modelopt", "recipe": recipe, "format": "QDQ", "activations": "int8",
            "weights": "int8", "target_dla": job.options.dla, "calibrate_per_node": job.options.per_node}


# ---------------------------------------------------------------- the command


def quantize_model(src: str | Path, calib: str, out: str | Path | None, eval_root: str | None,
                   options: QuantizeOptions, calib_split: str = "train-val",
                   eval_split: str = "val") -> tuple[Path, dict]:
    """Calibrate, quantize, gate; writes OUT (metadata included) only when both gates pass or --force.
    The gate's FP32 reference and the recipe choice are tuned on `val` (the training run's val split)
    and calibration reads `train-val`, disjoint from it; test splits stay for `marsedge bench`."""
    import onnx

    from marsedge.data.labelled import open_labelled
    from marsedge.edge import calibration as C
    from marsedge.edge import gate as G
    from marsedge.edge import runtime_choice as RC
    from marsedge.edge.onnx_meta import QUANTIZATION, RUNTIME, parse_props, set_props
    from marsedge.io import atomic_write, sha256_file

    options.validate()
    quantizer = QUANTIZERS[options.target]
    src = Path(src)
    source_model = onnx.load(str(src), load_external_data=False)
    meta = parse_props({p.key: p.value for p in source_model.metadata_props}, src)
    if meta.quantization:
        raise ModelError(f"{src} is already quantized; quantize the FP32 export")
    out = Path(out) if out else src.with_name(f"{src.stem}{quantizer.suffix}")
    refuse_same_path(src, out, "quantized model")
    refuse_existing(out, options.overwrite, "the quantized model")
    eval_root = eval_root or (calib if C.is_labelled_root(Path(calib)) else None)
    if eval_root is None:
        raise ConfigError("the accuracy gate needs a labelled tree (AI4Mars, or MSL surface for a "
                          "classifier): pass --eval ROOT")

    calib_set = C.calibration_set(calib, options.n, options.min_frames, calib_split, options.seed)
    C.check_disjoint(calib_set, [it.image for it in open_labelled(eval_root, eval_split).items])
    print(f"calibrating on {len(calib_set.paths)} frames from {calib_set.source} ({options.method})",
          flush=True)
    C.load_frames(calib_set, meta.preprocess, options.progress)  # once, for every candidate
    C.check_usable(calib_set, options.min_frames)
    C.check_finite_outputs(src, calib_set, source_model.graph.input[0].name, options.threads, first=1)
    plan = RC.plan(options.target, options.runtime, options.recipe, quantizer.auto)
    references = {rt: G.gate_reference(src, eval_root, eval_split, options.threads, rt)  # once each, too
                  for rt in dict.fromkeys(rt for _, rt in plan)}

    job = QuantizeJob(src, out, calib_set, meta.preprocess, source_model.graph.input[0].name, options)
    try:
        try:
            made = {how["recipe"]: (path, how) for path, how in quantizer.candidates(job)}
        except AssertionError as exc:  # ONNX Runtime's "scale issue": a calibrated range is not finite
            C.check_finite_outputs(src, calib_set, job.input_name, options.threads)
            raise ModelError(f"{src}: calibration failed ({exc}): a tensor inside the model is not finite "
                             "on the calibration frames") from None
        # ms: FP32's median ms on each runtime (None where the target is not timed here)
        tried, ms = RC.measure_and_gate(src, {r: p for r, (p, _) in made.items()}, plan, references,
                                        options.tolerance, options.threads,
                                        calib_set.frames[0] if quantizer.measure_latency else None)
        chosen = RC.pick(tried, ms is not None)
        path, how = made[chosen["recipe"]]
        gate = chosen["gate"]
        record = {"precision": "int8", "target": options.target, "runtime": chosen["runtime"],
                  "method": options.method, **how,
                  "tried": [{k: v for k, v in t.items() if k != "gate"} for t in tried],
                  "calibration": {"source": calib_set.source, "frames": calib_set.usable,
                                  "skipped": calib_set.skipped},
                  "source_onnx_sha256": sha256_file(src), "gate": gate}
        if ms:
            speedup = chosen["speedup"]  # against FP32 on the chosen runtime
            record["latency"] = {"fp32_ms": ms[chosen["runtime"]], "int8_ms": chosen["ms"],
                                 "speedup": speedup, "threads": options.threads,
                                 "min_speedup": options.min_speedup, "passed": speedup >= options.min_speedup}
            if len(ms) > 1:
                record["latency"]["fp32_ms_by_runtime"] = ms
        print("\n".join([G.format_report(record), *RC.summary(chosen, tried, ms)]))
        if not gate["passed"] and not options.force:
            raise G.GateError(f"{src}: INT8 loses {gate['drop']:.4f} {HEADLINE[gate['metric']]} "
                              f"(> --tolerance {options.tolerance}); not written (use --force to keep it "
                              "anyway)")
        if ms and not record["latency"]["passed"] and not options.force:
            lat = record["latency"]
            raise G.SpeedGateError(
                f"{src}: INT8 ({chosen['recipe']}) runs {lat['int8_ms']:.1f} ms vs FP32 "
                f"{lat['fp32_ms']:.1f} ms on this CPU ({lat['speedup']:.2f}x < --min-speedup "
                f"{options.min_speedup}); not written "
                "(export at a size where INT8 pays, or use --force)")
        quantized = onnx.load(str(path))
        runtime = {RUNTIME: chosen["runtime"]} if options.target == "cpu" else {}  # open_backend follows it
        set_props(quantized, {QUANTIZATION: json.dumps(record), **runtime})
        atomic_write(out, lambda p: onnx.save(quantized, str(p)))
    finally:
        if "workdir" in job.shared:
            shutil.rmtree(job.shared["workdir"], ignore_errors=True)
    return out, record
