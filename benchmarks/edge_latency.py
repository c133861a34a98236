"""Edge latency benchmark: the edge ratios that matter, measured in one run on this CPU.

    python -m benchmarks.edge_latency                     # random-init models, synthetic data
    python -m benchmarks.edge_latency --student runs/demo/student.pt --teacher runs/demo/teacher.pt \
        --data runs/demo/data

Ratios (medians of alternating blocks, marsedge.timing.alternating_medians):
  1. ONNX Runtime FP32 vs PyTorch eager FP32 (student)            aim >= 3x
  2. ONNX Runtime INT8 (cpu target) vs FP32, and its mIoU drop     aim >= 1.5x, <= 1.0 point
  3. edge-run end-to-end FPS vs the backend's own FPS (INT8)       aim >= 85%
  4. student (ONNX Runtime INT8) vs teacher (PyTorch eager FP32)   aim >= 10x

Without --student/--teacher the models are randomly initialised (latency does not depend on the
weights); the INT8 accuracy figures are then meaningless for quality and are labelled so. Without
--data a small synthetic AI4Mars tree is generated (calibration on its train split, gate on gold).
Results: benchmarks/results/edge_latency.json.

    python -m benchmarks.edge_latency --writer-study --model student.int8.onnx --frames-dir DIR

The writer study ("edge-run at its backend's speed"): cv2.imencode / blend / postprocess
micro-benchmarks on a 512 px frame and its mask, then rounds of, alternately, a backend-only child
process (nothing else in it) and edge-run child processes with each set of output options
(`writer_study.VARIANTS`), each ratio taken against the backend-only run next to it, with the load
average beside each figure.
Results: benchmarks/results/edge_writer_study.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, machine, synthetic_tree

DEFAULT_OUT = str(RESULTS / "edge_latency.json")
STUDY_OUT = RESULTS / "edge_writer_study.json"


def cpu_flags() -> list[str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    lines = [line for line in text.splitlines() if line.startswith("Flags")]
    flags = lines[0].split(":", 1)[1].split() if lines else []
    return [f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")]


def random_checkpoint(path: Path, backbone: str, head: str, size: int, separable: bool) -> Path:
    import torch

    from marsedge.data.preprocess import PreprocessSpec
    from marsedge.models.build import ModelConfig, build_model
    from marsedge.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, head=head, separable=separable)
    return save_checkpoint(path, build_model(cfg).eval(), cfg, PreprocessSpec(size, size))


def synthetic_gate_tree(root: Path, frame_size: int) -> Path:
    """44 procedural MSL frames in the AI4Mars layout: 36 to calibrate on, 8 gold frames for the gate."""
    return synthetic_tree(root, 44, frame_size, test_fraction=8 / 44, workers=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", help="student checkpoint (default: random-init mnv2_1.0 + DeepLabv3+)")
    ap.add_argument("--teacher", help="teacher checkpoint (default: random-init --teacher-backbone)")
    ap.add_argument("--teacher-backbone", default="r101_2x_sk1", help="the mission's teacher by default")
    ap.add_argument("--data", help="AI4Mars tree for calibration (train) and the INT8 gate (gold-min1)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=4, help="alternating timing blocks of 4 runs per model")
    ap.add_argument("--int8", help="reuse this INT8 ONNX, quantized earlier from student.onnx beside it "
                    "(skips export, calibration and the gate)")
    ap.add_argument("--frames", type=int, default=40, help="frames for the edge-run measurement")
    ap.add_argument("--frame-size", type=int, default=1024, help="synthetic NAVCAM frame size (MSL: 1024)")
    ap.add_argument("--frames-dir", help="--writer-study: folder of frames for edge-run")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--writer-study", action="store_true", help="the edge-run writer study (see above)")
    ap.add_argument("--model", help="--writer-study: the ONNX model edge-run runs")
    ap.add_argument("--rounds", type=int, default=2, help="--writer-study: rounds over every variant")
    ap.add_argument("--variants", help="--writer-study: comma list of indices into writer_study.VARIANTS "
                    "(default: all)")
    ap.add_argument("--backend", help="--writer-study: edge-run's --backend (default: from the suffix)")
    ap.add_argument("--out-root", help="--writer-study: where edge-run writes (default: the temp folder); "
                    "/dev/shm separates the pipeline from the disk")
    args = ap.parse_args()
    if args.writer_study:
        from benchmarks.writer_study import study

        if not (args.model and args.frames_dir):
            raise SystemExit("--writer-study needs --model and --frames-dir")
        only = [int(i) for i in args.variants.split(",")] if args.variants else None
        return study(Path(args.model), Path(args.frames_dir), args.threads, args.rounds,
                     Path(args.out if args.out != DEFAULT_OUT else STUDY_OUT), only, args.backend,
                     Path(args.out_root) if args.out_root else None)

    import torch

    from marsedge.data.frames import read_frame
    from marsedge.deploy.export import export
    from marsedge.deploy.quantize import QuantizeOptions, quantize_model
    from marsedge.edge.onnx_meta import read_onnx_metadata
    from marsedge.edge.run import main as edge_run
    from marsedge.io import atomic_write_json, sha256_file
    from marsedge.runtimes.choice import open_backend
    from marsedge.timing import alternating_medians

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edge_latency_"))
    trained = bool(args.student)
    student_ckpt = Path(args.student) if args.student else random_checkpoint(
        work / "student.pt", "mnv2_1.0", "deeplabv3plus", args.size, separable=True)
    teacher_ckpt = Path(args.teacher) if args.teacher else random_checkpoint(
        work / "teacher.pt", args.teacher_backbone, "deeplabv3", args.size, separable=False)
    data = Path(args.data) if args.data else synthetic_gate_tree(work / "ai4mars", args.frame_size)

    if args.int8:  # reuse a `marsedge quantize` model of this very export (its gate is in its metadata)
        fp32_onnx, int8_onnx = Path(args.int8).with_name("student.onnx"), Path(args.int8)
        record = read_onnx_metadata(int8_onnx).quantization or {}
        if record.get("source_onnx_sha256") != sha256_file(fp32_onnx):
            raise SystemExit(f"{int8_onnx}: not quantized from {fp32_onnx} (source sha256 differs)")
        verification = "reused export " + str(fp32_onnx)
    else:
        fp32_onnx, verification = export(student_ckpt, work / "student.onnx", size=args.size, verify_frames=2)
        options = QuantizeOptions(target="cpu", method="entropy", n=500, min_frames=32, threads=args.threads,
                                  force=True, overwrite=True)  # its own scratch folder
        int8_onnx, record = quantize_model(fp32_onnx, str(data), None, None, options)

    torch_b = open_backend(student_ckpt, threads=args.threads)
    fp32_b = open_backend(fp32_onnx, threads=args.threads)
    int8_b = open_backend(int8_onnx, threads=args.threads)
    teacher_b = open_backend(teacher_ckpt, threads=args.threads)
    x = np.random.default_rng(0).random((1, 1, args.size, args.size), dtype=np.float32)
    ms = alternating_medians({"torch_fp32": lambda: torch_b.infer(x), "ort_fp32": lambda: fp32_b.infer(x),
                              "ort_int8": lambda: int8_b.infer(x)}, blocks=args.blocks)
    ms |= alternating_medians({"teacher_torch_fp32": lambda: teacher_b.infer(x)}, blocks=1, per_block=2)

    frames = sorted((data / "msl/images/edr").iterdir())[: args.frames]
    frame_shape = list(read_frame(frames[0]).shape)  # what edge-run decodes (--data may not be --frame-size)
    frame_dir = work / "frames"
    frame_dir.mkdir()
    for p in frames:
        (frame_dir / p.name).write_bytes(p.read_bytes())
    run_out = work / "edge_run"
    edge_run([str(frame_dir), str(run_out), "--model", str(int8_onnx), "--threads", str(args.threads)])
    summary = json.loads((run_out / "summary.json").read_text())

    gate = record["gate"]
    result = {
        "cpu": machine()["cpu"], "cpu_flags": cpu_flags(), "threads": args.threads,
        "size": args.size, "student": str(args.student or "random-init mnv2_1.0 + separable deeplabv3plus"),
        "teacher": str(args.teacher or f"random-init {args.teacher_backbone} + deeplabv3"),
        "weights_trained": trained,
        "median_ms": {k: round(v, 2) for k, v in ms.items()},
        "ratios": {
            "ort_fp32_vs_torch_fp32": round(ms["torch_fp32"] / ms["ort_fp32"], 3),
            "ort_int8_vs_ort_fp32": round(ms["ort_fp32"] / ms["ort_int8"], 3),
            "edge_run_fps_vs_backend_fps": summary["fps_vs_backend"],  # backend unloaded, after the run
            "student_int8_vs_teacher_torch": round(ms["teacher_torch_fp32"] / ms["ort_int8"], 3),
            "student_ort_fp32_vs_teacher_torch": round(ms["teacher_torch_fp32"] / ms["ort_fp32"], 3),
        },
        "int8_recipe": record.get("recipe"), "int8_tried": record.get("tried"),
        "int8_gate": {k: gate[k] for k in ("eval", "miou_fp32", "miou_int8", "miou_drop", "pixel_agreement")},
        "int8_gate_meaningful": trained,
        "export_verification": str(verification),
        "edge_run": {"frames_ok": summary["frames_ok"], "fps": summary["fps"],
                     "backend_fps": summary["backend_fps"],
                     "backend_fps_in_pipeline": summary["backend_fps_in_pipeline"],
                     "frame_shape": frame_shape},
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
