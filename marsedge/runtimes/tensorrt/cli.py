"""`marsedge build`: the TensorRT loader's command (ONNX -> engine + sidecar, on the target GPU)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    b = subparsers.add_parser(
        "build", help="ONNX -> TensorRT engine + sidecar (on the target GPU)",
        epilog="trtexec spellings are accepted as aliases: --fp16, --int8 (precision), --useDLACore N "
               "(--dla), --allowGPUFallback (--gpu-fallback), --saveEngine (-o), --timingCacheFile "
               "(--timing-cache), --memPoolSize workspace:1G (--workspace). A CPU-target INT8 model "
               "(`quantize --target cpu`) is refused: TensorRT needs `quantize --target tensorrt`.")
    b.add_argument("model", help="ONNX (QDQ from `quantize --target tensorrt` for int8)")
    b.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None, help="default fp16")
    b.add_argument("--fp16", action="store_true", help="trtexec alias of --precision fp16")
    b.add_argument("--int8", action="store_true", help="trtexec alias of --precision int8")
    b.add_argument("--dla", "--useDLACore", dest="dla", type=int, default=None, metavar="N",
                   help="build for DLA core N")
    b.add_argument("--gpu-fallback", "--allowGPUFallback", dest="gpu_fallback", action="store_true",
                   help="DLA: run unsupported layers on the GPU")
    b.add_argument("--workspace", default="1024", metavar="SIZE",
                   help="builder workspace: a plain number is MiB (default 1024), or with a unit: 512M, 1G")
    b.add_argument("--memPoolSize", dest="mem_pool_size", default=None, metavar="workspace:SIZE",
                   help="trtexec spelling of --workspace (e.g. workspace:1G)")
    b.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="dynamic-batch ONNX: the optimisation profile's max batch (min is 1; default 8)")
    b.add_argument("--opt-batch", type=int, default=1, metavar="N",
                   help="dynamic-batch ONNX: the batch TensorRT tunes for (default 1)")
    b.add_argument("--timing-cache", "--timingCacheFile", dest="timing_cache", default=None, metavar="PATH")
    b.add_argument("-o", "--out", "--saveEngine", dest="out", default=None,
                   help="engine path (default: model.<precision>.engine)")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from marsedge.runtimes.tensorrt.build import build_engine
    from marsedge.runtimes.tensorrt.plan import options_from_args

    print(f"wrote {build_engine(args.model, options_from_args(args), args.out)}")
    return 0
