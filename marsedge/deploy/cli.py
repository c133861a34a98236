"""`marsedge export | quantize | build | inspect`: the way from a checkpoint to the rover.

    marsedge export runs/student/best.pt -o student.onnx --size 512 --frames data/msl/images/edr
    marsedge quantize student.onnx --calib data/ai4mars --eval data/ai4mars --target cpu
    marsedge build student.int8.onnx --precision int8 --timing-cache trt.cache     (on the target)
    marsedge inspect student.int8.onnx

`edge-run` (marsedge.edge.run) runs the result. `build` comes from the runtime whose engines it
builds (a runtime's package may add commands: `marsedge.runtimes`). Nothing heavy is imported at
module level (the quantize registry names its targets and recipes without importing onnx or ONNX
Runtime).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math

from marsedge.deploy.quantizers import DEFAULT_FRAMES, METHODS, load_quantizers, recipe_choices
from marsedge.edge.verdict import DEFAULT_TOLERANCE
from marsedge.runtimes import DEFAULT_CPU_RUNTIME, RUNTIMES, runtime_for_suffix
from marsedge.runtimes.registry import quantize_runtime_names


def non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def register(subparsers) -> None:
    exp = subparsers.add_parser("export", help="checkpoint -> verified ONNX with metadata")
    exp.add_argument("checkpoint", help="marsedge checkpoint (.pt)")
    exp.add_argument("-o", "--out", default=None, help="output .onnx (default: beside the checkpoint)")
    exp.add_argument("--size", type=int, default=None,
                     help="square input size (default: the trained size); another size is recorded in "
                          "the metadata as marsedge.trained_size")
    exp.add_argument("--opset", type=int, default=17)
    exp.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis instead of 1")
    exp.add_argument("--frames", default=None,
                     help="frames to verify on (folder/glob); default: procedural NAVCAM scenes")
    exp.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    exp.set_defaults(func=run_export)

    quantizers = load_quantizers()
    runtimes = quantize_runtime_names()
    q = subparsers.add_parser("quantize", help="FP32 ONNX -> INT8, calibrated on real frames, gated")
    q.add_argument("model", help="FP32 ONNX from `marsedge export`")
    q.add_argument("--calib", required=True, help="calibration frames: folder, glob, AI4Mars root "
                   "(or MSL surface root for a classifier)")
    q.add_argument("--calib-split", default="train-val",
                   help="split when --calib is an AI4Mars root (default: train minus val; an "
                        "MSL surface root: train)")
    q.add_argument("--eval", default=None,
                   help="labelled AI4Mars root for the gate, MSL surface root for a classifier "
                        "(default: --calib)")
    q.add_argument("--eval-split", default="val",
                   help="the gate's and --recipe auto's split (default: val, what training tunes on; "
                        "a test split here is tuning on the test set)")
    q.add_argument("-o", "--out", default=None,
                   help="output (default: " + ", ".join(f"MODEL{q.suffix} for --target {name}"
                                                        for name, q in quantizers.items()) + ")")
    q.add_argument("--n", type=int, default=DEFAULT_FRAMES,
                   help=f"calibration frames to use (default {DEFAULT_FRAMES}: see marsedge.deploy.quantize)")
    q.add_argument("--min-frames", type=int, default=32, help="refuse fewer calibration frames")
    q.add_argument("--method", choices=METHODS, default=METHODS[0],
                   help="calibration: max (min-max, default) or entropy (ORT's histograms: ~3 s a frame at "
                        "512 px on 2 loaded cores; see marsedge.deploy.quantize)")
    q.add_argument("--target", choices=tuple(quantizers), default="cpu")
    takes = {flag: ", ".join(name for name, q in quantizers.items() if getattr(q, flag))
             for flag in ("dla", "per_node")}
    q.add_argument("--dla", action="store_true", help=f"--target {takes['dla']}: quantize for DLA")
    q.add_argument("--per-node", action="store_true",
                   help=f"--target {takes['per_node']}: modelopt's per-node calibration (bounded memory, "
                        "~1 min a frame)")
    q.add_argument("--recipe", default="auto", choices=recipe_choices(),
                   help="the target's layout (" + "; ".join(f"{name}: {', '.join(quantizer.recipes)}"
                                                            for name, quantizer in quantizers.items())
                        + "), or auto: the fastest that passes the gate (default)")
    q.add_argument("--runtime", choices=runtimes, default=runtimes[0],
                   help="--target cpu: the runtimes whose INT8 layouts are candidates, each gated and timed "
                        f"on its runtime; auto (default): every installed one of {', '.join(runtimes[1:])}; "
                        "the chosen runtime is recorded in the model for edge-run and bench "
                        "(docs/cpu-runtime-choice.md)")
    q.add_argument("--tolerance", type=non_negative, default=DEFAULT_TOLERANCE,
                   help=f"the INT8 verdict: max mIoU drop as a fraction (default {DEFAULT_TOLERANCE}: "
                        "one point)")
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--min-speedup", type=float, default=1.0,
                   help="speed gate (targets timed here): INT8 at least this many times as fast as FP32 "
                        "(default 1.0; 0 turns it off)")
    q.add_argument("--force", action="store_true", help="write the model even if a gate fails")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=run_quantize)

    for runtime in RUNTIMES.values():  # a runtime's own commands (an engine build)
        if runtime.commands:
            importlib.import_module(runtime.commands).register(subparsers)

    i = subparsers.add_parser("inspect", help="print what a model file says about itself")
    i.add_argument("model", help=".onnx or .engine")
    i.set_defaults(func=run_inspect)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marsedge.deploy.export import export
    from marsedge.ownership import refuse_existing, refuse_same_path

    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")  # export's default
    refuse_same_path(args.checkpoint, out, "ONNX model")
    refuse_existing(out, args.overwrite, "the ONNX model")
    out, _ = export(args.checkpoint, out, size=args.size, opset=args.opset,
                    dynamic_batch=args.dynamic_batch, frames=args.frames, simplify=not args.no_simplify,
                    overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from marsedge.deploy.quantize import QuantizeOptions, quantize_model

    options = QuantizeOptions(target=args.target, method=args.method, n=args.n, min_frames=args.min_frames,
                              tolerance=args.tolerance, min_speedup=args.min_speedup, force=args.force,
                              dla=args.dla, per_node=args.per_node, threads=args.threads, recipe=args.recipe,
                              runtime=args.runtime, progress=not args.quiet, overwrite=args.overwrite)
    options.validate()
    out, record = quantize_model(args.model, args.calib, args.out, args.eval, options,
                                 calib_split=args.calib_split, eval_split=args.eval_split)
    if not record["gate"]["passed"]:
        print("warning: the accuracy gate failed; written anyway because of --force")
    if not record.get("latency", {}).get("passed", True):
        print("warning: INT8 is slower than --min-speedup allows; written anyway because of --force")
    chose = len({t["runtime"] for t in record["tried"]}) > 1 or record["runtime"] != DEFAULT_CPU_RUNTIME
    print(f"wrote {out}" + (f" (runs on {record['runtime']}: recorded in its metadata)" if chose else ""))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    path = Path(args.model)
    runtime = RUNTIMES.get(runtime_for_suffix(path.suffix.lower()) or "")
    if runtime and runtime.describe:  # a runtime's own file (an engine: its sidecar)
        print(runtime.describe(path))
        return 0
    from marsedge.edge.onnx_meta import read_onnx_metadata

    print(json.dumps(read_onnx_metadata(path).to_dict(), indent=2))
    return 0
