#!/usr/bin/env python3
"""`make gpu-check`: the one command that proves marsedge's GPU paths on the NVIDIA machine it meets
(a Jetson, a workstation, a lent H100/H200), and what a user runs on a new Jetson to check the install.

    python scripts/gpu_check.py [--steps data,teacher,...] [--work runs/gpu-check] [--out DIR]

It installs nothing and downloads nothing (such machines may have no network and their own Python):
it runs from the source tree with what is importable there. A step whose library is missing
(tensorrt, polygraphy, modelopt, torch with CUDA, the ONNX Runtime CUDA provider) is reported
"skipped: <package> not importable", never a failure; a step that needs what an earlier step failed
to make is skipped naming it. Without a GPU it says so in one line and exits 0 doing nothing.

Steps (the registry `STEPS`, each a small function with a time budget; about 8 minutes in all on an
H100/H200): synthetic data; the demo teacher and student trained a few hundred steps on CUDA (bf16
autocast + channels_last, teacher logits cached on the GPU); benchmarks/train_throughput.py
(r101_2x_sk1 + DeepLabv3 at 512 px, fp32 vs bf16 + channels_last); a 1-process NCCL torchrun of
train.py with --resume; static and dynamic-batch export; the student through PyTorch on CUDA
(fp32/fp16/bf16) and ONNX Runtime's CUDA provider, masks against ONNX Runtime CPU FP32; QDQ INT8
(`quantize --target tensorrt`); TensorRT FP32/FP16/INT8 engines with a timing cache; --rebuild-stale
after the ONNX changes; edge-run over 200 frames per engine with agreement against ONNX Runtime
FP32; `marsedge bench` on everything. Training is driven through the public commands only.

Writes benchmarks/results/gpu/<gpu-name>.json and .md; exits 1 when any step failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # runs from the source tree, installed or not

from marsedge.errors import ModelError  # noqa: E402
from marsedge.runtimes.tensorrt.sidecar import cuda_device  # noqa: E402  (stdlib only: works with any Python)

TOTAL_BUDGET_S = 480  # 8 minutes on an H100/H200: the step budgets add up to this
AIMS = {"fp16": 0.995, "int8": 0.98}  # pixel agreement with ONNX Runtime CPU FP32
FRAMES = 200
SIZE = 128


class StepSkipped(Exception):
    """Not a failure: what the step needs is not on this machine (or an earlier step did not make it)."""


class StepFailed(Exception):
    """A failure, one line."""


@dataclass(frozen=True)
class Step:
    name: str
    func: Callable[[Context], dict]
    budget_s: float
    needs: tuple[str, ...]


STEPS: dict[str, Step] = {}


def step(name: str, budget_s: float, needs: tuple[str, ...] = ()):
    """Register a step: `func(ctx) -> figures dict`; `needs` are import names or keys of PROBES."""
    def register(func: Callable[[Context], dict]) -> Callable[[Context], dict]:
        STEPS[name] = Step(name, func, budget_s, needs)
        return func
    return register


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _ort_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


# need -> (what the skip line names, the module that must import, an extra check once it does)
PROBES: dict[str, tuple[str, str, Callable[[], bool] | None]] = {
    "torch-cuda": ("torch with CUDA", "torch", _torch_cuda),
    "onnxruntime-cuda": ("onnxruntime CUDA provider", "onnxruntime", _ort_cuda),
    "tensorrt": ("tensorrt", "tensorrt", None),
    "polygraphy": ("polygraphy", "polygraphy", None),
    "modelopt": ("modelopt", "modelopt", None),
    "pdr": ("pdr", "pdr", None),
}


def missing(needs: tuple[str, ...]) -> str | None:
    """The skip line for the first need this machine lacks, None when all are there."""
    for need in needs:
        label, module, check = PROBES.get(need, (need, need, None))
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        try:
            ok = found and (check is None or check())
        except Exception:  # present but broken (no driver, wrong CUDA): not usable here
            ok = False
        if not ok:
            return f"skipped: {label} not importable"
    return None


@dataclass
class Context:
    work: Path
    artifacts: dict[str, object] = field(default_factory=dict)
    budget_s: float = 600.0  # of the step running now (subprocess timeouts)
    started: float = 0.0

    def need(self, key: str):
        if key not in self.artifacts:
            raise StepSkipped(f"skipped: needs {key} from an earlier step")
        return self.artifacts[key]

    def sh(self, *args: object, ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        """Run a command from the source tree within what is left of the step's budget."""
        left = max(1.0, self.budget_s - (time.perf_counter() - self.started))
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        cmd = [str(a) for a in args]
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"over its budget of {self.budget_s:.0f} s: {' '.join(cmd[:4])} ...") from None
        if done.returncode not in ok_codes:
            tail = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise StepFailed(f"`{' '.join(cmd[1:5])} ...` exited {done.returncode}: {tail[:300]}")
        return done


def py(*args: object) -> list[object]:
    return [sys.executable, *args]


def marsedge(*args: object) -> list[object]:
    return [sys.executable, "-m", "marsedge", *args]


def edge_run(*args: object) -> list[object]:
    return [sys.executable, "-m", "marsedge.edge.run", *args]


def run_steps(steps: list[Step], ctx: Context) -> list[dict]:
    """Each step: skipped (missing library or input), ok with its figures, or failed with one line."""
    results = []
    for s in steps:
        record = {"step": s.name, "budget_s": s.budget_s}
        reason = missing(s.needs)
        ctx.budget_s, ctx.started = s.budget_s, time.perf_counter()
        if reason:
            record.update(status="skipped", detail=reason, seconds=0.0)
        else:
            try:
                record.update(status="ok", figures=s.func(ctx) or {})
            except StepSkipped as exc:
                record.update(status="skipped", detail=str(exc))
            except Exception as exc:  # a step's failure is recorded and the next step runs
                record.update(status="failed", detail=f"{type(exc).__name__}: {exc}".splitlines()[0][:400])
            record["seconds"] = round(time.perf_counter() - ctx.started, 1)
            if record["status"] == "ok" and record["seconds"] > s.budget_s:
                record.update(status="failed", detail=f"took {record['seconds']} s, "
                                                      f"budget {s.budget_s:.0f} s")
        print(f"[{record['status']:>7}] {s.name} ({record['seconds']} s) {record.get('detail', '')}".rstrip(),
              flush=True)
        results.append(record)
    return results


def write_report(results: list[dict], gpu: str, env: dict, out_dir: Path) -> tuple[Path, Path]:
    """benchmarks/results/gpu/<gpu-name>.json and .md."""
    from marsedge.io import atomic_write_json, atomic_write_text, safe_name

    stem = safe_name(gpu.replace(" ", "-")) or "gpu"
    passed = all(r["status"] != "failed" for r in results)
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    data = {"gpu": gpu, "passed": passed, "when": when,
            "total_seconds": round(sum(r.get("seconds", 0.0) for r in results), 1),
            "environment": env, "steps": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_json(out_dir / f"{stem}.json", data)
    lines = [f"# marsedge gpu-check: {gpu}", "",
             f"{'passed' if passed else 'FAILED'}; {data['total_seconds']} s in all; {data['when']}; "
             f"command: `python scripts/gpu_check.py`", "",
             "| step | status | seconds | budget s | figures / detail |", "|---|---|---|---|---|"]
    for r in results:
        figures = r.get("detail") or ", ".join(f"{k} {v}" for k, v in r.get("figures", {}).items())
        lines.append(f"| {r['step']} | {r['status']} | {r.get('seconds', 0)} | {r['budget_s']:.0f} | "
                     f"{figures.replace('|', '/')} |")
    libs = env.get("libraries", {})
    lines += ["", "libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()), ""]
    md_path = atomic_write_text(out_dir / f"{stem}.md", "\n".join(lines))
    return json_path, md_path


# ---------------------------------------------------------------- the steps, in the order they run


@step("data", 25)
def data_step(ctx: Context) -> dict:
    data = ctx.work / "data"
    if not (data / "stats.json").is_file():
        ctx.sh(*marsedge("data", "synth", "--out", data, "--mission", "msl", "--n", 240, "--size", 160,
                         "--seed", 0, "--test-fraction", 0.15, "--unlabelled", 40, "--quiet"))
        ctx.sh(*marsedge("data", "merge-labels", data / "msl" / "labels" / "crowd", "--out",
                         data / "msl" / "labels" / "train", "--quiet"))
        ctx.sh(*marsedge("data", "stats", data))
    frames = sorted((data / "msl" / "images" / "edr").glob("*"))
    ctx.artifacts.update(data=data, frames=frames[:FRAMES])
    return {"frames": len(frames)}


def _train_overrides(ctx: Context, steps: int) -> list[str]:
    return [f"data.root={ctx.need('data')}", f"run.out_dir={ctx.work}", "run.device=cuda", "run.amp=bf16",
            "run.channels_last=true", f"run.max_steps={steps}", f"data.preprocess.height={SIZE}",
            f"data.preprocess.width={SIZE}"]


@step("teacher", 40, needs=("torch-cuda",))
def teacher_step(ctx: Context) -> dict:
    ctx.sh(*py("train.py", "--config", "configs/demo/teacher.yaml", *_train_overrides(ctx, 200)))
    best = ctx.work / "demo_teacher" / "best.pt"
    if not best.is_file():
        raise StepFailed(f"train.py wrote no {best}")
    ctx.artifacts["teacher"] = best
    return {"steps": 200, "amp": "bf16", "channels_last": True}


@step("student", 45, needs=("torch-cuda",))
def student_step(ctx: Context) -> dict:
    data = ctx.need("data")
    ctx.sh(*py("distill.py", "--config", "configs/demo/student.yaml", *_train_overrides(ctx, 300),
               f"distill.teacher={ctx.need('teacher')}", f"distill.cache_dir={ctx.work / 'teacher_logits'}",
               f"distill.unlabelled=[{{root: {data}, split: unlabelled}}]"))
    student = ctx.work / "demo_student" / "student.pt"
    if not student.is_file():
        raise StepFailed(f"distill.py wrote no {student}")
    ctx.artifacts["student"] = student
    return {"steps": 300, "teacher_logits_cached": (ctx.work / "teacher_logits").is_dir()}


@step("train_throughput", 60, needs=("torch-cuda",))
def throughput_step(ctx: Context) -> dict:
    """`python -m benchmarks.train_throughput` writes its committed CPU results file: keep that one, file
    this run's beside the GPU report."""
    results = ROOT / "benchmarks" / "results"
    saved = {p: p.read_bytes() for p in (results / "train_throughput.json", results / "train_throughput.md")
             if p.is_file()}
    try:
        ctx.sh(*py("-m", "benchmarks.train_throughput", "--cpu-steps", 2, "--gpu-steps", 20))
        figures = json.loads((results / "train_throughput.json").read_text()).get("gpu", {})
        ctx.artifacts["throughput"] = figures
    finally:
        for path, blob in saved.items():
            path.write_bytes(blob)
    return figures if isinstance(figures, dict) else {"gpu": figures}


@step("ddp_resume", 45, needs=("torch-cuda",))
def ddp_step(ctx: Context) -> dict:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                "train.py", "--config", "configs/demo/teacher.yaml", "name=gpu_check_ddp"]
    ctx.sh(*torchrun, *_train_overrides(ctx, 10))
    ctx.sh(*torchrun, *_train_overrides(ctx, 20), "--resume")
    metrics = ctx.work / "gpu_check_ddp" / "metrics.jsonl"
    steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.strip()]
    if not steps or max(steps) < 20:
        raise StepFailed(f"{metrics}: the resumed run did not reach step 20 (last {max(steps, default=0)})")
    return {"backend": "nccl", "last_step": max(steps)}


@step("export", 25, needs=("torch", "onnx"))
def export_step(ctx: Context) -> dict:
    edge = ctx.work / "edge"
    edge.mkdir(exist_ok=True)
    static, dynamic = edge / "student.onnx", edge / "student.dyn.onnx"
    ctx.sh(*marsedge("export", ctx.need("student"), "-o", static))
    ctx.sh(*marsedge("export", ctx.need("student"), "-o", dynamic, "--dynamic-batch"))
    ctx.artifacts.update(onnx=static, onnx_dynamic=dynamic)
    return {"static": static.name, "dynamic": dynamic.name}


def _batches(ctx: Context, spec, n: int = 64):
    import numpy as np

    from marsedge.data.frames import read_frame
    from marsedge.data.preprocess import preprocess

    frames = [preprocess(read_frame(p), spec) for p in ctx.need("frames")[:n]]
    return np.stack(frames)


def _reference(ctx: Context):
    """ONNX Runtime CPU FP32 masks of the first frames: what every GPU path is compared with."""
    if "reference" not in ctx.artifacts:
        from marsedge.runtimes.onnxruntime.runner import OnnxBackend

        backend = OnnxBackend(ctx.need("onnx"), providers=["CPUExecutionProvider"])
        x = _batches(ctx, backend.spec, FRAMES)
        ctx.artifacts["reference"] = (x, backend.infer(x).argmax(1))
    return ctx.artifacts["reference"]


@step("torch_cuda", 20, needs=("torch-cuda", "onnxruntime"))
def torch_cuda_step(ctx: Context) -> dict:
    import numpy as np
    import torch

    from marsedge.models.checkpoints import load_model

    x, ref = _reference(ctx)
    model, _ = load_model(ctx.need("student"), map_location="cuda")
    model = model.eval().to(memory_format=torch.channels_last)
    figures = {}
    for name, dtype in (("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        masks = []
        autocast = torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None)
        with torch.inference_mode(), autocast:
            for i in range(0, len(x), 32):
                batch = torch.from_numpy(x[i:i + 32]).cuda().contiguous(memory_format=torch.channels_last)
                masks.append(model(batch).float().argmax(1).cpu().numpy())
        figures[f"agreement_{name}"] = round(float((np.concatenate(masks) == ref).mean()), 5)
    return figures


@step("onnxruntime_cuda", 15, needs=("onnxruntime-cuda",))
def ort_cuda_step(ctx: Context) -> dict:
    from marsedge.runtimes.onnxruntime.runner import OnnxBackend

    x, ref = _reference(ctx)
    backend = OnnxBackend(ctx.need("onnx"), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    agreement = float((backend.infer(x).argmax(1) == ref).mean())
    return {"provider": backend.providers[0], "agreement_fp32": round(agreement, 5)}


@step("quantize_tensorrt", 40, needs=("modelopt", "onnx"))
def quantize_step(ctx: Context) -> dict:
    qdq = ctx.work / "edge" / "student.qdq.onnx"
    data = ctx.need("data")
    ctx.sh(*marsedge("quantize", ctx.need("onnx"), "--calib", data, "--eval", data, "--target", "tensorrt",
                     "--n", 64, "--min-frames", 16, "-o", qdq, "--force"))
    ctx.artifacts["qdq"] = qdq
    return {"qdq": qdq.name}


@step("tensorrt_build", 60, needs=("tensorrt", "polygraphy", "onnx"))
def build_step(ctx: Context) -> dict:
    from marsedge.runtimes.tensorrt.sidecar import read_sidecar

    cache = ctx.work / "edge" / "trt.timing-cache"
    wanted = [("fp32", ctx.need("onnx")), ("fp32", ctx.need("onnx_dynamic"))]
    if missing(("modelopt",)) is None:  # FP16 engines parse an AutoCast FP16 copy
        wanted += [("fp16", ctx.need("onnx")), ("fp16", ctx.need("onnx_dynamic"))]
    if "qdq" in ctx.artifacts:
        wanted.append(("int8", ctx.artifacts["qdq"]))
    engines, figures = [], {}
    for precision, onnx in wanted:
        out = onnx.with_name(f"{onnx.stem.removesuffix('.qdq')}.{precision}.engine")
        ctx.sh(*marsedge("build", onnx, "--precision", precision, "--timing-cache", cache, "--max-batch", 8,
                         "-o", out))
        engines.append((precision, out))
        figures[f"{out.stem}_build_s"] = read_sidecar(out).build_seconds
    ctx.artifacts["engines"] = engines
    return figures


@step("rebuild_stale", 30, needs=("tensorrt", "polygraphy", "onnx"))
def stale_step(ctx: Context) -> dict:
    """Change the ONNX (a metadata entry: its sha256 changes) under a built engine: edge-run refuses
    the engine, and rebuilds it with --rebuild-stale."""
    import shutil

    import onnx

    source = ctx.work / "edge" / "stale.onnx"
    shutil.copy(ctx.need("onnx"), source)
    engine = source.with_name("stale.fp32.engine")
    ctx.sh(*marsedge("build", source, "--precision", "fp32", "-o", engine))
    model = onnx.load(str(source))
    model.metadata_props.add(key="marsedge.gpu_check", value=str(time.time()))
    onnx.save(model, str(source))
    frames, out = ctx.need("data") / "msl" / "images" / "edr", ctx.work / "stale-run"
    refused = ctx.sh(*edge_run(frames, out, "--model", engine, "--max-frames", 5, "--overwrite"),
                     ok_codes=tuple(range(1, 256)))
    if "changed since the engine was built" not in refused.stderr:
        raise StepFailed(f"stale engine not refused as stale: {refused.stderr.strip()[-200:]}")
    ctx.sh(*edge_run(frames, out, "--model", engine, "--max-frames", 5, "--overwrite", "--rebuild-stale"))
    return {"refused_then_rebuilt": True}


@step("edge_run_engines", 40, needs=("tensorrt", "polygraphy"))
def edge_run_step(ctx: Context) -> dict:
    from marsedge.runtimes.choice import open_backend

    x, ref = _reference(ctx)
    frames = ctx.need("data") / "msl" / "images" / "edr"
    figures, misses = {}, []
    for precision, engine in ctx.need("engines"):
        ctx.sh(*edge_run(frames, ctx.work / "runs" / engine.stem, "--model", engine, "--max-frames", FRAMES,
                         "--visualize", "mask", "--overwrite"))
        backend = open_backend(engine)
        agreement = float((backend.infer(x).argmax(1) == ref).mean())
        backend.close()
        figures[f"{engine.stem}_agreement"] = round(agreement, 5)
        if agreement < AIMS.get(precision, 0.999):
            misses.append(f"{engine.stem} {agreement:.4f} < {AIMS.get(precision, 0.999)}")
    if misses:
        figures["aims_missed"] = "; ".join(misses)
    return figures


@step("bench", 35, needs=("onnxruntime",))
def bench_step(ctx: Context) -> dict:
    models = [ctx.need("student"), ctx.need("onnx")]
    models += [engine for _, engine in ctx.artifacts.get("engines", [])]
    out = ctx.work / "bench"
    ctx.sh(*marsedge("bench", *models, "--data", ctx.need("data"), "--split", "gold-min1", "--duration", 1,
                     "--warmup", 3, "--reference", ctx.need("onnx"), "-o", out))
    return {"models": len(models), "report": str(out / "report.md")}


def gpu_name() -> str | None:
    """The first CUDA device's name, None without a driver or device (no torch needed)."""
    try:
        return cuda_device()[0]
    except ModelError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=None, help=f"comma list (default all): {', '.join(STEPS)}")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-check", help="scratch folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu")
    args = parser.parse_args(argv)
    gpu = gpu_name()
    if gpu is None:
        print("gpu-check: no NVIDIA GPU (no CUDA driver or device) on this machine; nothing to check")
        return 0
    names = args.steps.split(",") if args.steps else list(STEPS)
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {unknown}; known: {', '.join(STEPS)}")
    from marsedge.bench.environment import capture

    print(f"gpu-check on {gpu}: {len(names)} steps, scratch {args.work}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    results = run_steps([STEPS[n] for n in names], Context(work=args.work))
    json_path, md_path = write_report(results, gpu, capture(), args.out)
    failed = [r["step"] for r in results if r["status"] == "failed"]
    print(f"wrote {json_path} and {md_path}; " + (f"FAILED: {', '.join(failed)}" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
