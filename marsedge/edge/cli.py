"""`marsedge export | quantize | build | inspect`: the way from a checkpoint to the rover.

    marsedge export runs/student/best.pt -o student.onnx --size 512 --frames data/msl/images/edr
    marsedge quantize student.onnx --calib data/ai4mars --eval data/ai4mars --target cpu
    marsedge build student.int8.onnx --precision int8 --timing-cache trt.cache     (on the target)
    marsedge inspect student.int8.onnx

`edge-run` (marsedge.edge.run) runs the result. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    exp = subparsers.add_parser("export", help="checkpoint -> verified ONNX with metadata")
    exp.add_argument("checkpoint", help="marsedge checkpoint (.pt)")
    exp.add_argument("-o", "--out", default=None, help="output .onnx (default: beside the checkpoint)")
    exp.add_argument("--size", type=int, default=None, help="square input size (default: the checkpoint's)")
    exp.add_argument("--opset", type=int, default=17)
    exp.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis instead of 1")
    exp.add_argument("--frames", default=None,
                     help="frames to verify on (folder/glob); default: procedural NAVCAM scenes")
    exp.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    exp.set_defaults(func=run_export)

    q = subparsers.add_parser("quantize", help="FP32 ONNX -> INT8, calibrated on real frames, gated")
    q.add_argument("model", help="FP32 ONNX from `marsedge export`")
    q.add_argument("--calib", required=True, help="calibration frames: folder, glob or AI4Mars root")
    q.add_argument("--calib-split", default="train", help="split when --calib is an AI4Mars root")
    q.add_argument("--eval", default=None, help="labelled AI4Mars root for the gate (default: --calib)")
    q.add_argument("--eval-split", default="gold-min1")
    q.add_argument("-o", "--out", default=None, help="output (default: MODEL.int8.onnx)")
    q.add_argument("--n", type=int, default=500, help="calibration frames to use")
    q.add_argument("--min-frames", type=int, default=32, help="refuse fewer calibration frames")
    q.add_argument("--method", choices=("entropy", "max"), default="entropy")
    q.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu")
    q.add_argument("--dla", action="store_true", help="TensorRT target: quantize for DLA")
    q.add_argument("--recipe", default="auto",
                   help="CPU target: ONNX Runtime layout, a key of marsedge.edge.quantize.CPU_RECIPES, or "
                        "auto: the fastest that passes the gate (default)")
    q.add_argument("--tolerance", type=float, default=1.0, help="max mIoU drop in points")
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--force", action="store_true", help="write the model even if the gate fails")
    q.set_defaults(func=run_quantize)

    b = subparsers.add_parser("build", help="ONNX -> TensorRT engine + sidecar (on the target GPU)")
    b.add_argument("model", help="ONNX (QDQ for int8)")
    b.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    b.add_argument("--dla", type=int, default=None, metavar="N", help="build for DLA core N")
    b.add_argument("--gpu-fallback", action="store_true", help="DLA: run unsupported layers on the GPU")
    b.add_argument("--workspace", type=int, default=1024, metavar="MiB")
    b.add_argument("--timing-cache", default=None, metavar="PATH")
    b.add_argument("-o", "--out", default=None, help="engine path (default: model.<precision>.engine)")
    b.set_defaults(func=run_build)

    i = subparsers.add_parser("inspect", help="print what a model file says about itself")
    i.add_argument("model", help=".onnx or .engine")
    i.set_defaults(func=run_inspect)


def run_export(args: argparse.Namespace) -> int:
    from marsedge.edge.export import export

    out, _ = export(args.checkpoint, args.out, size=args.size, opset=args.opset,
                    dynamic_batch=args.dynamic_batch, frames=args.frames, simplify=not args.no_simplify)
    print(f"wrote {out}")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from marsedge.edge.quantize import QuantizeOptions, quantize_model

    options = QuantizeOptions(target=args.target, method=args.method, n=args.n, min_frames=args.min_frames,
                              tolerance=args.tolerance, force=args.force, dla=args.dla, threads=args.threads,
                              recipe=args.recipe)
    out, record = quantize_model(args.model, args.calib, args.out, args.eval, options,
                                 calib_split=args.calib_split, eval_split=args.eval_split)
    if not record["gate"]["passed"]:
        print("warning: the accuracy gate failed; written anyway because of --force")
    print(f"wrote {out}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marsedge.edge.tensorrt import BuildOptions, build_engine

    options = BuildOptions(precision=args.precision, dla_core=args.dla, gpu_fallback=args.gpu_fallback,
                           workspace_mib=args.workspace,
                           timing_cache=Path(args.timing_cache) if args.timing_cache else None)
    print(f"wrote {build_engine(args.model, options, args.out)}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    path = Path(args.model)
    if path.suffix == ".engine":
        from marsedge.edge.tensorrt import sidecar_path

        print(sidecar_path(path).read_text())
        return 0
    from marsedge.edge.onnx_meta import read_onnx_metadata

    print(json.dumps(read_onnx_metadata(path).to_dict(), indent=2))
    return 0
