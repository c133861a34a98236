"""Which INT8 layout does ONNX Runtime's CPU actually run faster? Measured, not assumed.

    python -m benchmarks.edge_int8_layouts                       # random-init student, synthetic data
    python -m benchmarks.edge_int8_layouts --onnx student.onnx --data runs/demo/data

Quantizes one FP32 student ONNX with every recipe in `marsedge.deploy.quantize.CPU_RECIPES` plus the
nvidia-modelopt QDQ model (the TensorRT target, run here on CPU for reference), all calibrated on
the same real frames (one ORT calibration shared by every recipe), then times every model in
alternating blocks (medians; machine load hits all alike)
and runs the accuracy gate of each against FP32. Results: benchmarks/results/edge_int8_layouts.json.
The default recipe of `marsedge quantize --target cpu` is chosen from this table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS
from benchmarks.edge_latency import random_checkpoint, synthetic_gate_tree


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", help="FP32 student ONNX (default: export a random-init student)")
    ap.add_argument("--data", help="AI4Mars tree: calibration on train minus val, gate on val")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=3, help="alternating timing blocks of 4 runs per model")
    ap.add_argument("--n", type=int, default=64, help="calibration frames")
    ap.add_argument("--recipes", default=None, help="comma list (default: all, plus modelopt)")
    ap.add_argument("--work", default=None, help="working folder; models already quantized there are reused")
    ap.add_argument("--out", default=str(RESULTS / "edge_int8_layouts.json"))
    args = ap.parse_args()

    from marsedge.deploy.calibration import calibration_set
    from marsedge.deploy.gate import accuracy_gate, gate_reference
    from marsedge.deploy.quantizers import QuantizeJob, QuantizeOptions, load_quantizers
    from marsedge.edge.onnx_meta import read_onnx_metadata
    from marsedge.io import atomic_write_json
    from marsedge.runtimes.onnxruntime.recipes import CPU_RECIPES
    from marsedge.runtimes.onnxruntime.runner import OnnxBackend
    from marsedge.timing import alternating_medians

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="int8_layouts_"))
    if args.onnx:
        fp32 = Path(args.onnx)
    else:
        from marsedge.deploy.export import export

        fp32 = work / "student.onnx"
        if not fp32.exists():
            student = random_checkpoint(work / "student.pt", "mnv2_1.0", "deeplabv3plus", args.size, True)
            export(student, fp32, verify_frames=1)
    data = Path(args.data) if args.data else work / "ai4mars"
    if not args.data and not data.exists():
        synthetic_gate_tree(data, args.size)
    spec = read_onnx_metadata(fp32).preprocess
    calib = calibration_set(str(data), args.n, min_frames=8, split="train-val")
    names = args.recipes.split(",") if args.recipes else [*CPU_RECIPES, "modelopt-qdq"]

    models, shared = {"fp32": fp32}, {"workdir": work}  # one calibration, shared by every recipe
    for name in names:
        out = work / f"{name}.onnx"
        models[name] = out
        if out.exists():
            continue
        start = time.perf_counter()
        target, recipe = ("tensorrt", "modelopt-int8") if name == "modelopt-qdq" else ("cpu", name)
        options = QuantizeOptions(target=target, method="max")
        job = QuantizeJob(fp32, out, calib, spec, "image", options, shared)
        load_quantizers()[target].quantize(job, recipe)
        print(f"{name}: quantized in {time.perf_counter() - start:.0f} s", flush=True)

    backends = {k: OnnxBackend(p, threads=args.threads, providers=["CPUExecutionProvider"])
                for k, p in models.items()}
    x = np.random.default_rng(0).random((1, spec.channels, spec.height, spec.width), dtype=np.float32)
    ms = alternating_medians({k: (lambda b=b: b.infer(x)) for k, b in backends.items()}, blocks=args.blocks)

    rows = []
    reference = gate_reference(fp32, str(data), "val", args.threads)
    for name in names:
        gate = accuracy_gate(reference, models[name], 0.01, args.threads)
        rows.append({"recipe": name, "median_ms": round(ms[name], 2),
                     "speedup_vs_fp32": round(ms["fp32"] / ms[name], 3),
                     "miou_drop": gate["miou_drop"], "pixel_agreement": gate["pixel_agreement"]})
    result = {"fp32_ms": round(ms["fp32"], 2), "threads": args.threads, "size": args.size,
              "onnx": str(args.onnx or "random-init mnv2_1.0 + separable deeplabv3plus"),
              "calibration_frames": len(calib.paths), "rows": rows}
    atomic_write_json(args.out, result)
    print(f"FP32 {ms['fp32']:.1f} ms")
    for r in rows:
        print(f"{r['recipe']:<24} {r['median_ms']:8.1f} ms  {r['speedup_vs_fp32']:5.2f}x  "
              f"mIoU drop {r['miou_drop']:+.4f}  agreement {r['pixel_agreement']:.4f}")
    print(json.dumps({"out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
