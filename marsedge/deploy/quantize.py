"""FP32 ONNX -> INT8 ONNX, calibrated on real frames and gated on accuracy and on speed.

    marsedge quantize student.onnx --calib data/ai4mars --eval data/ai4mars --target cpu

One loop for every target. The calibration frames are read and preprocessed once and the FP32
reference of the gate is scored once; then the target's quantizer (`marsedge.deploy.quantizers`:
each runtime's package registers its own: `cpu` is ONNX Runtime's)
writes each candidate recipe (`--recipe auto`: the quantizer's `auto` list) on those same frames,
and for the CPU target ONNX Runtime's calibration ranges are computed once and shared by every
candidate (`calibration_cache_path`). Where the target runs on this machine (`measure_latency`),
FP32 and every candidate are timed together in alternating blocks (`marsedge.timing`); each
candidate is gated on accuracy (`marsedge.deploy.gate`), and the fastest that passes is kept.

Two gates, one reason line each, nothing written unless `--force`:
- accuracy: the one INT8 verdict (`marsedge.edge.verdict`, the rule bench and the report apply too):
  mIoU drop <= `--tolerance` (a fraction, 0.01 = one point); when every candidate fails, the last of the list
  (the one that keeps the most layers FP32) is the one reported (and written with --force);
- speed (measured targets): INT8 at least `--min-speedup` (1.0) times as fast as FP32 here. A
  64-128 px model is often too small for INT8 to pay; export at the deployment size.
Every candidate is recorded in the metadata (`tried`: recipe, runtime, ms, speed-up, mIoU drop, verdict).
Runtimes (`--target cpu`): every installed CPU runtime with INT8 layouts (`marsedge.runtimes`) makes
its layouts candidates, gated and timed on it, and the chosen runtime is recorded in the file for
`open_backend` to follow (`marsedge.deploy.runtime_choice`; `--runtime` keeps one runtime's only).

Defaults, for a quantize in about a minute (`benchmarks/results/cpu_runtimes_amd-epyc-zen5.md`, 512 px,
2 cores, machine loaded to load average ~14): 64 calibration frames and min-max
calibration (not entropy). ORT's entropy histograms cost ~3 s a frame here: calibrating 64 frames
took 212 s, against 116 s for the whole `quantize --target cpu` with min-max (three candidates,
gate and timing included; each further candidate costs ~2.5 s on the shared ranges). Accuracy
cost on the trained benchmark student (a weak one: FP32 mIoU 0.093 on 30 gold-min1 frames): mIoU
drop 0.00004 with min-max/64 frames, 0.0001 with entropy/64, pixel agreement >= 0.9998 both; use
`--method entropy --n 500` where a model's activations have long tails the gate rejects.
The targets' layouts are described with their quantizers (`marsedge.runtimes.<runtime>.quantize`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from marsedge.deploy.quantizers import CPU_TARGET, QuantizeJob, QuantizeOptions, load_quantizers
from marsedge.errors import ConfigError, ModelError
from marsedge.metrics import HEADLINE
from marsedge.ownership import refuse_existing, refuse_same_path


def quantize_model(src: str | Path, calib: str, out: str | Path | None, eval_root: str | None,
                   options: QuantizeOptions, calib_split: str = "train-val",
                   eval_split: str = "val") -> tuple[Path, dict]:
    """Calibrate, quantize, gate; writes OUT (metadata included) only when both gates pass or --force.
    The gate's FP32 reference and the recipe choice are tuned on `val` (the training run's val split)
    and calibration reads `train-val`, disjoint from it; test splits stay for `marsedge bench`."""
    import onnx

    from marsedge.data.labelled import open_labelled
    from marsedge.deploy import calibration as C
    from marsedge.deploy import gate as G
    from marsedge.deploy import runtime_choice as RC
    from marsedge.edge.onnx_meta import QUANTIZATION, RUNTIME, parse_props, set_props
    from marsedge.io import atomic_write, sha256_file

    options.validate()
    quantizer = load_quantizers()[options.target]
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
        # the runtime chosen, for open_backend to follow
        runtime = {RUNTIME: chosen["runtime"]} if options.target == CPU_TARGET else {}
        set_props(quantized, {QUANTIZATION: json.dumps(record), **runtime})
        atomic_write(out, lambda p: onnx.save(quantized, str(p)), replace=options.overwrite)
    finally:
        if "workdir" in job.shared:
            shutil.rmtree(job.shared["workdir"], ignore_errors=True)
    return out, record
