"""Every CPU path of the rover student in ONE interleaved run: PyTorch, ONNX Runtime, OpenVINO, INT8.

    python -m benchmarks.cpu_runtimes --quick                                  # random-init student
    python -m benchmarks.cpu_runtimes --student runs/edge512/student.pt --data runs/edge512/data

The rover student (mnv2_1.0 + separable DeepLabv3+, batch 1,
1x1x512x512) on PyTorch eager FP32, torch.compile + channels_last (where compile works), ONNX
Runtime FP32 and each INT8 recipe of `marsedge quantize` (all calibrated on the same frames),
OpenVINO FP32 / BF16 and INT8 on the QDQ files (marsedge's and the TensorRT-style modelopt one),
all timed together with marsedge.timing's alternating blocks (machine load hits every path alike;
compare ratios within a run). The `default` row is what a user gets without flags: `marsedge quantize`
with its defaults (every installed runtime's candidates; marsedge.deploy.runtime_choice) opened by
`open_backend` without --backend (the runtime recorded in the file); `default / best` is its speed
against the fastest path of the run. Experiment rows, scored like every other row: OpenVINO INT8 with
INFERENCE_PRECISION_HINT bf16 (the layers left FP32 run in BF16), and the QDQ recipes
qdq-u8s8-all-int8-resize (Resize in INT8 too) and qdq-u8s8-no-depthwise (depthwise convolutions FP32).
Beside them, the compute floors of this CPU: the best INT8 GEMM (`torch._int_mm` or ONNX Runtime's
MatMulInteger u8s8, 2048^3), BF16 and FP32 GEMM rates, turned into milliseconds for this network's
MACs, and the roofline
(benchmarks/roofline.py): per op type, the compute and memory floors, which bounds it, and how far
the fastest INT8 path of each runtime (and FP32) is from each, from the runtimes' own profiles.
With `--data` (an AI4Mars tree) every INT8 path is scored against FP32 (mIoU drop,
pixel agreement) by the quantize gate's own code; `--time-quantize` times `marsedge quantize
--target cpu` and `--target tensorrt` end to end. edge-run end-to-end vs unloaded backend-only is
not measured here (column left for edge-run's benchmark).
Results: one per CPU model, benchmarks/results/cpu_runtimes_<cpu model>.json and .md (CPU, library
versions, load average).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, command

# INT8 recipes quantized for the table: (row label, target, recipe)
RECIPES = [("qop-u8s8-all", "cpu", "qop-u8s8-all"),
           ("qop-u8s8-all-int8-resize", "cpu", "qop-u8s8-all-int8-resize"),  # INT8 Resize too
           ("qop-u8s8", "cpu", "qop-u8s8"),
           ("qdq-u8s8-all", "cpu", "qdq-u8s8-all"),
           ("qdq-u8s8", "cpu", "qdq-u8s8"),
           ("qdq-s8s8-sym", "cpu", "qdq-s8s8-sym"),
           # experiments for OpenVINO: Resize in INT8 too; depthwise convolutions left FP32
           ("qdq-u8s8-all-int8-resize", "cpu", "qdq-u8s8-all-int8-resize"),
           ("qdq-u8s8-no-depthwise", "cpu", "qdq-u8s8-no-depthwise"),
           ("modelopt-qdq", "tensorrt", "modelopt-int8")]
OPENVINO_INT8 = ("qdq-u8s8-all", "qdq-u8s8", "qdq-s8s8-sym", "qdq-u8s8-all-int8-resize",
                 "qdq-u8s8-no-depthwise", "modelopt-qdq")


def torch_paths(checkpoint: Path, threads: int, size: int, compile_: bool) -> tuple[dict, dict]:
    """PyTorch eager FP32 and (where it compiles here) torch.compile + channels_last."""
    import torch

    from marsedge.models.checkpoints import load_model

    torch.set_num_threads(threads)
    model, _ = load_model(checkpoint)
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32))
    paths, notes = {}, {}

    def eager():
        with torch.inference_mode():
            model(x)

    paths["pytorch eager fp32"] = eager
    if compile_:
        try:
            cl = model.to(memory_format=torch.channels_last)
            compiled = torch.compile(cl)
            xc = x.to(memory_format=torch.channels_last)
            with torch.inference_mode():
                start = time.perf_counter()
                compiled(xc)
                notes["compile_s"] = round(time.perf_counter() - start, 1)

            def compiled_run():
                with torch.inference_mode():
                    compiled(xc)

            paths["torch.compile + channels_last"] = compiled_run
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            notes["compile_error"] = f"{type(exc).__name__}: {first}"[:300]
    return paths, notes


def quantize_all(fp32: Path, data: Path, n: int, work: Path, names: list[str],
                 method: str) -> tuple[dict, dict]:
    """Every recipe of RECIPES (in `names`), all on one calibration set and one set of ORT ranges,
    calibrated by `method` (marsedge quantize's default unless --method says otherwise)."""
    from marsedge.deploy.calibration import calibration_set, load_frames
    from marsedge.deploy.quantizers import QuantizeJob, QuantizeOptions, load_quantizers
    from marsedge.edge.onnx_meta import read_onnx_metadata

    spec = read_onnx_metadata(fp32).preprocess
    calib = calibration_set(str(data), n, min_frames=8, split="train-val")
    start = time.perf_counter()
    load_frames(calib, spec)
    seconds = {"read_preprocess": round(time.perf_counter() - start, 1)}
    files, shared = {}, {"workdir": work}
    for label, target, recipe in RECIPES:
        if label not in names:
            continue
        out = work / f"{label}.onnx"
        files[label] = out
        if out.exists():
            continue
        start = time.perf_counter()
        job = QuantizeJob(fp32, out, calib, spec, "image", QuantizeOptions(target=target, method=method),
                          shared)
        load_quantizers()[target].quantize(job, recipe)
        seconds[label] = round(time.perf_counter() - start, 1)  # the first cpu one includes calibration
        print(f"{label}: quantized in {seconds[label]} s", flush=True)
    return files, {"calibration_frames": calib.usable, "method": method, "seconds": seconds}


def default_model(fp32: Path, data: Path, n: int, work: Path, threads: int) -> Path:
    """What `marsedge quantize --target cpu` writes with its defaults (forced, so a failed gate still
    gives its row; the gates are in the file's record), made once in the work folder."""
    from marsedge.deploy.quantize import QuantizeOptions, quantize_model

    out = work / "default.int8.onnx"
    if not out.exists():
        quantize_model(fp32, str(data), out, None, QuantizeOptions(n=n, min_frames=8, threads=threads,
                                                                   force=True, progress=False))
    return out


def cpu_result_name(env: dict) -> str:
    """cpu_runtimes_<model>-f<family>m<model number>: one result per CPU model (a VM may hide the model
    name, "AMD EPYC", so the family and model numbers from /proc/cpuinfo tell the generations apart)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines()[:30] if ":" in line)
    numbers = {k.strip(): v.strip() for k, v in fields.items() if k.strip() in ("cpu family", "model")}
    slug = "".join(c if c.isalnum() else "-" for c in env["cpu"].lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    if numbers:
        slug += f"-f{numbers.get('cpu family', '')}m{numbers.get('model', '')}"
    return f"cpu_runtimes_{slug}"


def time_quantize(fp32: Path, data: Path, threads: int) -> dict:
    """`marsedge quantize` end to end, both targets, as a user runs it (wall seconds)."""
    walls = {}
    for target in ("cpu", "tensorrt"):
        out = fp32.with_name(f"timed.{target}.onnx")
        cmd = [sys.executable, "-m", "marsedge", "quantize", str(fp32), "--calib", str(data), "--target",
               target, "--threads", str(threads), "--min-frames", "8", "-o", str(out), "--force", "--quiet"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        walls[target] = {"wall_s": round(time.perf_counter() - start, 1), "rc": done.returncode,
                         "tail": (done.stdout.strip().splitlines()[-3:]
                                  + done.stderr.strip().splitlines()[-2:])}
        print(f"marsedge quantize --target {target}: {walls[target]['wall_s']} s (rc {done.returncode})",
              flush=True)
    return walls


def environment(threads: int) -> dict:
    from marsedge.bench.environment import capture, load_average

    env = capture(threads)
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    env["cpu_flags"] = sorted(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8",
                                          "amx_bf16", "avx_vnni") if f in flags)
    env["load_average_start"] = load_average()
    try:
        import openvino

        env["libraries"]["openvino"] = openvino.__version__
    except ImportError:
        pass
    import torch

    env["libraries"]["torch"] = torch.__version__
    env["machine"] = platform.machine()
    return env


def score_paths(backends: dict, data: Path, threads: int) -> dict:
    """mIoU drop and pixel agreement of each INT8 path against ORT FP32, on val (the gate's code
    and split)."""
    from marsedge.deploy.gate import compare, gate_reference
    from marsedge.edge.predict import score

    reference = gate_reference(backends["onnxruntime fp32"].path, str(data), "val", threads)
    out = {"eval": reference.eval, "miou_fp32": round(reference.fp32.metrics["miou"], 4)}  # a fraction
    for label, backend in backends.items():
        if label == "onnxruntime fp32":
            continue
        gate = compare(reference.fp32, score(backend, reference.samples, reference.fp32.class_names), 0.01)
        out[label] = {"miou_drop": gate["miou_drop"], "pixel_agreement": gate["pixel_agreement"]}
    return out


def _load(load: list[float] | None) -> str:
    return "/".join(f"{x:.1f}" for x in load) if load else "?"


def markdown(result: dict) -> str:
    env, rows = result["environment"], result["rows"]
    libs = env["libraries"]
    lines = [f"# CPU runtimes of the rover student ({result['model']})", "",
             f"`{result['command']}`", "",
             f"CPU: {env['cpu']} ({', '.join(env['cpu_flags'])}), {result['threads']} threads, "
             f"load average {_load(env['load_average_start'])} -> {_load(env['load_average_end'])} (shared: "
             "compare ratios within this run). torch " + str(libs.get("torch")) + ", onnxruntime "
             + str(libs.get("onnxruntime")) + ", openvino " + str(libs.get("openvino")) + ".",
             f"Timing: {result['blocks']} alternating blocks x {result['per_block']} timed calls per path, "
             f"batch 1, 1x1x{result['size']}x{result['size']}; {result['macs_g']:.2f} GMACs.", "",
             "| path | median ms | x ORT FP32 | mIoU drop | pixel agreement |",
             "|---|---|---|---|---|"]
    for r in rows:
        drop = "" if r.get("miou_drop") is None else f"{r['miou_drop']:+.4f}"
        agree = "" if r.get("pixel_agreement") is None else f"{r['pixel_agreement']:.4f}"
        lines.append(f"| {r['path']} | {r['median_ms']:.1f} | {r['x_ort_fp32']:.2f} | {drop} | {agree} |")
    f = result["floors"]
    lines += ["", "Compute floors (best GEMM rate of this CPU, 2048^3):"]
    for kind in ("int8", "bf16", "fp32"):
        if f.get(kind):
            lines.append(f"- {kind.upper()}: {f[kind] / 1e9:.0f} G op/s -> {f[kind + '_ms']:.1f} ms "
                         "for this network")
        else:
            lines.append(f"- {kind.upper()}: not measured ({f.get(kind + '_error')})")
    if result.get("gaps"):
        lines.append("- " + "; ".join(f"{k}: {v:.2f}x" for k, v in result["gaps"].items()))
    if result.get("default_record"):
        d = result["default_record"]
        lines.append(f"- default: `marsedge quantize` chose {d['recipe']}@{d['runtime']} among " + ", ".join(
            f"{t['recipe']}@{t['runtime']} {t['ms']:.1f} ms{'' if t['passed'] else ' (failed the gate)'}"
            for t in d["tried"]) + " (its own timing, during quantize)")
    if result.get("roofline"):
        from benchmarks.roofline import markdown as roofline_markdown

        lines += roofline_markdown(result["roofline"])
    if result.get("quantize"):
        q = result["quantize"]
        lines += ["", f"Quantization ({q['calibration_frames']} calibration frames, shared; {q['method']} "
                  "ranges): seconds " + json.dumps(q["seconds"])]
    if result.get("quantize_wall"):
        lines.append("`marsedge quantize` end to end: " + ", ".join(
            f"--target {k} {v['wall_s']} s (rc {v['rc']})" for k, v in result["quantize_wall"].items()))
    if result.get("notes"):
        lines.append("Notes: " + json.dumps(result["notes"]))
    lines.append("")
    lines.append("edge-run end-to-end vs unloaded backend-only: not measured here (edge-run's benchmark).")
    return "\n".join(lines) + "\n"


def main() -> int:
    from marsedge.deploy.quantizers import METHODS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", help="checkpoint (default: random-init mnv2_1.0 + separable DeepLabv3+)")
    ap.add_argument("--data", help="AI4Mars tree: calibrate on train minus val, score val "
                    "(the gate's split; default: synthetic)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--per-block", type=int, default=4)
    ap.add_argument("--n", type=int, default=64, help="calibration frames")
    ap.add_argument("--method", default=METHODS[0], choices=METHODS,
                    help="calibration of every INT8 row (default: marsedge quantize's own)")
    ap.add_argument("--quick", action="store_true", help="4 blocks, 16 calibration frames, no torch.compile")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--time-quantize", action="store_true", help="also time `marsedge quantize` end to end")
    ap.add_argument("--work", default=None, help="working folder; models already there are reused")
    ap.add_argument("--profile-runs", type=int, default=20, help="frames per roofline profile")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/cpu_runtimes_<cpu model>.json")
    args = ap.parse_args()
    if args.quick:
        args.blocks, args.n, args.no_compile = min(args.blocks, 4), min(args.n, 16), True

    from benchmarks import roofline as R
    from benchmarks.edge_latency import random_checkpoint, synthetic_gate_tree
    from marsedge.bench.environment import load_average
    from marsedge.deploy.export import export
    from marsedge.edge.onnx_meta import read_onnx_metadata
    from marsedge.io import atomic_write_json, atomic_write_text
    from marsedge.runtimes.choice import open_backend
    from marsedge.runtimes.onnxruntime.runner import OnnxBackend
    from marsedge.timing import alternating_medians

    env = environment(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cpu_runtimes_"))
    work.mkdir(parents=True, exist_ok=True)
    student = Path(args.student) if args.student else random_checkpoint(
        work / "student.pt", "mnv2_1.0", "deeplabv3plus", args.size, True)
    fp32 = work / "student.onnx"
    if not fp32.exists():
        export(student, fp32, size=args.size, verify_frames=1)
    data = Path(args.data) if args.data else work / "ai4mars"
    if not args.data and not data.exists():
        synthetic_gate_tree(data, args.size)

    files, quant = quantize_all(fp32, data, args.n, work, [r[0] for r in RECIPES], args.method)
    default = default_model(fp32, data, args.n, work, args.threads)
    cpu = ["CPUExecutionProvider"]
    backends = {"onnxruntime fp32": OnnxBackend(fp32, threads=args.threads, providers=cpu)}
    backends |= {f"onnxruntime int8 {k}": OnnxBackend(p, threads=args.threads, providers=cpu)
                 for k, p in files.items()}
    chosen = read_onnx_metadata(default)
    default_label = f"default: {chosen.quantization['recipe']}@{chosen.runtime}"
    backends[default_label] = open_backend(default, threads=args.threads)  # no --backend: as edge-run
    notes = {}
    try:
        from marsedge.runtimes.openvino.runner import OpenVinoBackend

        backends["openvino fp32"] = OpenVinoBackend(fp32, threads=args.threads)
        backends["openvino bf16"] = OpenVinoBackend(fp32, threads=args.threads, inference_precision="bf16")
        backends |= {f"openvino int8 {k}": OpenVinoBackend(files[k], threads=args.threads)
                     for k in OPENVINO_INT8 if k in files}
        if "qdq-u8s8-all" in files:  # experiment: what INT8 leaves FP32 (Resize & co.) in BF16
            backends["openvino int8 qdq-u8s8-all + bf16 hint"] = OpenVinoBackend(
                files["qdq-u8s8-all"], threads=args.threads, inference_precision="bf16")
    except Exception as exc:  # not installed, or a file it cannot load: the row is missing, the reason noted
        notes["openvino"] = f"{type(exc).__name__}: {exc}"[:300]
    torch_fns, torch_notes = torch_paths(student, args.threads, args.size, not args.no_compile)
    notes |= torch_notes
    x = np.random.default_rng(0).random((1, 1, args.size, args.size), dtype=np.float32)
    fns = {**torch_fns, **{k: (lambda b=b: b.infer(x)) for k, b in backends.items()}}
    print(f"timing {len(fns)} paths, {args.blocks} alternating blocks", flush=True)
    ms = alternating_medians(fns, blocks=args.blocks, per_block=args.per_block)

    accuracy = score_paths(backends, data, args.threads) if backends else {}
    from marsedge.models.checkpoints import load_model
    from marsedge.models.summary import count_macs

    macs = count_macs(load_model(student)[0], (args.size, args.size))["total"]
    floors = R.gemm_rates(args.threads)
    for kind in ("int8", "bf16", "fp32"):
        if floors.get(kind):
            floors[f"{kind}_ms"] = round(1000 * 2 * macs / floors[kind], 2)
    base = ms["onnxruntime fp32"]
    rows = [{"path": k, "median_ms": round(v, 2), "x_ort_fp32": round(base / v, 3),
             **(accuracy.get(k) or {})} for k, v in ms.items()]
    int8 = {k: v for k, v in ms.items() if "int8" in k}
    gaps = {}
    if int8:
        best_marsedge = min(v for k, v in int8.items() if k.startswith("onnxruntime"))
        best_ov = min((v for k, v in ms.items() if k.startswith("openvino")), default=None)
        if best_ov:
            gaps["best ORT INT8 vs best OpenVINO (speed ratio)"] = best_ov / best_marsedge
        if floors.get("int8_ms"):
            gaps["best ORT INT8 / INT8 floor"] = best_marsedge / floors["int8_ms"]
            gaps["best INT8 (any runtime) / INT8 floor"] = min(int8.values()) / floors["int8_ms"]
    gaps["default / best (speed: best ms / default ms)"] = min(ms.values()) / ms[default_label]
    plain_int8 = [v for k, v in ms.items() if ("int8" in k and "hint" not in k) or k == default_label]
    gaps["default / best plain INT8 (speed)"] = min(plain_int8) / ms[default_label]
    roof = R.network_roofline(fp32, files, ms, floors, x, args.threads, args.profile_runs)
    env["load_average_end"] = load_average()
    result = {"model": f"{'random-init ' if not args.student else ''}mnv2_1.0 + separable DeepLabv3+"
                       + (f" ({args.student})" if args.student else ""),
              "command": command("cpu_runtimes", sys.argv[1:]),
              "size": args.size, "threads": args.threads, "blocks": args.blocks, "per_block": args.per_block,
              "macs_g": macs / 1e9, "rows": rows, "floors": floors, "gaps": gaps, "accuracy": accuracy,
              "quantize": quant, "notes": notes, "environment": env, "roofline": roof,
              "default_record": chosen.quantization}
    if args.time_quantize:
        result["quantize_wall"] = time_quantize(fp32, data, args.threads)
    args.out = args.out or str(RESULTS / f"{cpu_result_name(env)}.json")
    atomic_write_json(args.out, result)
    atomic_write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
