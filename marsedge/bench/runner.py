"""`marsedge bench`: every model in its own child process, then gates, sample frames and results.json.

Why a child per model: peak RSS is a per-process figure, so measuring several models in one process
would mix them; and a model that crashes its runtime (a segfault in a plugin, out of memory) must
not take the other rows with it. The child loads the backend, times it, evaluates it on the split
and writes its masks to OUT/.masks/<id>.npz; the parent then compares masks between models
(pixel agreement with a reference: information only), judges every INT8 row against its FP32
source by the one INT8 verdict (marsedge.edge.verdict, the rule quantize applied, with the
tolerance quantize recorded), applies the optional mIoU floor and picks the sample frames.

Memory figures per row: rss_baseline_mb is the child's RSS just before the model is opened (Python,
numpy, OpenCV and the latency frames); rss_peak_mb the peak from then to the end of the latency run
(model load and inference included, accuracy evaluation not; on Linux the peak window is reset at
the baseline); rss_model_mb their difference. device_mb is the GPU
memory nvidia-smi lists for the child after the latency run (None without a GPU).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from marsedge.bench import results as R
from marsedge.bench.accuracy import agreement_block, evaluate
from marsedge.bench.environment import capture, device_memory_mb, load_average, load_hint, usable_cores
from marsedge.bench.latency import latency_report, peak_rss_mb, reset_peak_rss, time_frames
from marsedge.bench.modelinfo import model_info
from marsedge.edge.predict import pixel_agreement
from marsedge.edge.verdict import DEFAULT_TOLERANCE, Int8Verdict, int8_verdict
from marsedge.errors import ConfigError, MarsedgeError, ModelError
from marsedge.io import atomic_write_json, safe_join
from marsedge.metrics import headline

LATENCY_FRAMES = 16  # distinct frames cycled through in the timed loop


@dataclass
class BenchSettings:
    data: str
    split: str = "gold-min3"
    size: int | None = None  # expected square input size; a model built for another fails its row
    warmup: int = 10
    iters: int | None = None
    duration: float | None = 10.0
    threads: int | None = None
    backend: str | None = None
    reference: str | None = None  # a model path or id; None: the first given of the same architecture
    min_miou: float | None = None
    samples: int = 4
    timeout: float = 1800.0
    keep_masks: bool = False


# --- masks: each child writes its model's masks, the parent compares them ----------------------------

def masks_file(masks_dir: Path, model_id: str) -> Path:
    return safe_join(masks_dir, f"{model_id}.npz")


def save_masks(path: str | Path, masks: dict[str, np.ndarray]) -> None:
    """Masks by frame name in one .npz (names stored apart: a frame name need not be a valid key)."""
    names = list(masks)
    np.savez_compressed(path, names=np.array(names), **{f"m{i}": masks[n] for i, n in enumerate(names)})


def load_masks(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {str(n): z[f"m{i}"] for i, n in enumerate(z["names"])}


# --- the child (python -m marsedge.bench.runner) ----------------------------------------------------

def bench_model(path: str, model_id: str, settings: BenchSettings, masks_path: str) -> dict:
    """Measure one model (runs inside the child process). Raises on any failure."""
    from marsedge.data.labelled import open_labelled
    from marsedge.runtimes.choice import open_backend

    dataset = open_labelled(settings.data, settings.split)
    frames = [dataset[i].image for i in range(min(len(dataset), LATENCY_FRAMES))]
    row = R.empty_row(model_id, path)
    rss_baseline = reset_peak_rss()
    backend = open_backend(path, backend=settings.backend, threads=settings.threads)
    try:
        spec = backend.spec
        if settings.size and spec.size != (settings.size, settings.size):
            raise ModelError(f"{path}: built for {spec.height}x{spec.width} input, --size asks "
                             f"{settings.size}x{settings.size}")
        quantization = backend.metadata.get("quantization") or {}
        row.update(backend=backend.name, precision=backend.precision,
                   model_config=backend.metadata.get("model_config"),
                   quantize_verdict=(quantization.get("gate") or {}).get("verdict"),
                   input=[spec.channels, spec.height, spec.width])
        times, seconds, warmed = time_frames(backend, frames, spec, settings.warmup, settings.iters,
                                             settings.duration)
        row["latency"] = latency_report(times, seconds, warmed)
        rss_peak = peak_rss_mb()
        row["memory"] = {"rss_baseline_mb": rss_baseline, "rss_peak_mb": rss_peak,
                         "rss_model_mb": rss_peak - rss_baseline, "device_mb": device_memory_mb()}
        row.update(model_info(path, (spec.channels, spec.height, spec.width), backend))
        row["accuracy"], masks = evaluate(backend, iter(dataset))
    finally:
        backend.close()
    save_masks(masks_path, masks)
    row["status"] = R.STATUS_OK
    return row


def child_main(argv: list[str]) -> int:
    """`python -m marsedge.bench.runner JOB.json ROW.json`: bench one model, write its row.

    Any exception becomes a failed row with a one-line reason; the traceback goes to stderr."""
    job_path, row_path = argv
    job = json.loads(Path(job_path).read_text())
    try:
        row = bench_model(job["path"], job["id"], BenchSettings(**job["settings"]), job["masks"])
    except Exception as exc:  # the reason goes back to the parent as one line; the run goes on
        if not isinstance(exc, MarsedgeError):  # a bug, not a bad model: keep its traceback
            traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else ""
        row = R.failed_row(job["id"], job["path"], f"{type(exc).__name__}: {message}")
    atomic_write_json(row_path, row)
    return 0


def run_isolated(path: str, model_id: str, settings: BenchSettings, masks_path: str) -> dict:
    """bench_model in a fresh Python process; a crash or timeout becomes a failed row."""
    with tempfile.TemporaryDirectory(prefix="marsedge-bench-") as tmp:
        job, row_file = Path(tmp) / "job.json", Path(tmp) / "row.json"
        job.write_text(json.dumps({"path": path, "id": model_id, "settings": asdict(settings),
                                   "masks": masks_path}))
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # works from a source tree too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        try:
            done = subprocess.run([sys.executable, "-m", "marsedge.bench.runner", str(job), str(row_file)],
                                  env=env, timeout=settings.timeout, check=False)
        except subprocess.TimeoutExpired:
            return R.failed_row(model_id, path, f"timed out after {settings.timeout:.0f} s")
        if row_file.is_file():
            return json.loads(row_file.read_text())
    reason = f"worker died with exit code {done.returncode}"
    if done.returncode in (-9, 137):
        reason += " (killed: out of memory?)"
    elif done.returncode < 0:
        reason += f" (signal {-done.returncode})"
    return R.failed_row(model_id, path, reason)


# --- the parent -----------------------------------------------------------------------------------

def split_backend(model: str) -> tuple[str, str | None]:
    """`MODEL@BACKEND` (e.g. student.qdq.onnx@onnxruntime): rows for one file on several backends."""
    from marsedge.runtimes import backend_names

    path, sep, name = model.rpartition("@")
    return (path, name) if sep and name in backend_names() else (model, None)


def model_ids(paths: list[str]) -> list[str]:
    """Unique, readable row ids: the file name, suffixed -2, -3 ... when a name repeats."""
    ids, seen = [], {}
    for p in paths:
        name = Path(p).name
        seen[name] = seen.get(name, 0) + 1
        ids.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return ids


def choose_reference(row: dict, rows: list[dict], explicit: str | None) -> dict | None:
    """The row this one's masks are compared with: the explicit reference, else the first given
    model of the same architecture (model_config); None when that is the row itself."""
    candidates = [r for r in rows if r.get("accuracy")]
    if explicit is not None:
        target = Path(explicit).resolve()
        ref = next((r for r in candidates
                    if Path(r["path"]).resolve() == target or r["id"] == explicit), None)
    elif not row.get("model_config"):
        ref = None
    else:
        ref = next((r for r in candidates if r.get("model_config") == row["model_config"]), None)
    return None if ref is None or ref is row else ref


def fp32_source(row: dict, rows: list[dict]) -> dict | None:
    """The FP32 row an INT8 row is judged against: the same architecture at FP32, on the same
    backend where there is one (the first given otherwise)."""
    same = [r for r in rows if r.get("accuracy") and r.get("precision") == "fp32"
            and r.get("model_config") and r.get("model_config") == row.get("model_config")]
    return next((r for r in same if r.get("backend") == row.get("backend")), same[0] if same else None)


def judge_int8(row: dict, rows: list[dict], split: str) -> Int8Verdict | None:
    """The one INT8 verdict on bench's split, with the tolerance quantize recorded in the model;
    stored in the row as `int8_verdict` {reference, bench, quantize}. None for a non-INT8 row or
    one without an FP32 source among the rows."""
    source = fp32_source(row, rows) if row.get("precision") == "int8" else None
    if source is None:
        return None
    recorded = row.get("quantize_verdict")
    tolerance = recorded["tolerance"] if recorded else DEFAULT_TOLERANCE
    verdict = int8_verdict(source["accuracy"]["metrics"], row["accuracy"]["metrics"], tolerance, split)
    row["int8_verdict"] = {"reference": source["id"], "bench": verdict.to_dict(), "quantize": recorded}
    return verdict


def apply_gates(rows: list[dict], settings: BenchSettings, masks_dir: Path) -> None:
    """Agreement with the reference (information), the INT8 verdict and the optional mIoU floor;
    a missed verdict or floor sets accuracy-failed + why."""
    for row in rows:
        if row["status"] == R.STATUS_FAILED:
            continue
        reasons = []
        ref = choose_reference(row, rows, settings.reference)
        if ref is not None:
            value = pixel_agreement(load_masks(masks_file(masks_dir, row["id"])),
                                    load_masks(masks_file(masks_dir, ref["id"])))
            row["accuracy"]["agreement"] = agreement_block(value, ref["id"])
        elif settings.reference is not None and row["id"] != settings.reference \
                and Path(row["path"]).resolve() != Path(settings.reference).resolve():
            reasons.append(f"reference {settings.reference} has no masks to compare with")
        verdict = judge_int8(row, rows, settings.split)
        if verdict is not None and not verdict.passed:
            reasons.append(f"{verdict.line()} against {row['int8_verdict']['reference']}")
        key, label = headline(row["accuracy"]["metrics"])  # top-1 for a classifier
        value = row["accuracy"]["metrics"][key]
        if settings.min_miou is not None and not (value >= settings.min_miou):
            reasons.append(f"{label} {value:.4f} < {settings.min_miou}")
        if reasons:
            row["status"], row["reason"] = R.STATUS_ACCURACY_FAILED, "; ".join(reasons)


def pick_sample_frames(rows: list[dict], n: int) -> list[tuple[str, str]]:
    """(frame name, why) for the strip: the worst frames by mIoU averaged over models first
    (ceil(n/2) of them), then the best, then the median, so the page shows failures, not only wins."""
    scores: dict[str, list[float]] = {}
    for row in rows:
        for f in (row.get("accuracy") or {}).get("per_frame", []):
            if f.get("miou") is not None:  # a classifier's frames have none: no strip
                scores.setdefault(f["name"], []).append(f["miou"])
    ranked = sorted(scores, key=lambda name: (float(np.mean(scores[name])), name))
    if not ranked or n <= 0:
        return []
    picks: list[tuple[str, str]] = [(name, "worst") for name in ranked[: math.ceil(n / 2)]]
    extras = [(ranked[-1], "best"), (ranked[len(ranked) // 2], "median")]
    extras += [(name, "median") for name in ranked[len(ranked) // 2 + 1:]]
    for name, why in extras:
        if len(picks) >= n:
            break
        if all(name != p for p, _ in picks):
            picks.append((name, why))
    return picks


def render_samples(rows: list[dict], settings: BenchSettings, masks_dir: Path, out: Path) -> list[dict]:
    from marsedge.bench.plots import sample_strip
    from marsedge.data.labelled import open_labelled

    picks = pick_sample_frames(rows, settings.samples)
    if not picks:
        return []
    dataset = open_labelled(settings.data, settings.split)
    index = {item.name: i for i, item in enumerate(dataset.items)}
    models = [(r["id"], load_masks(masks_file(masks_dir, r["id"]))) for r in rows if r.get("accuracy")]
    samples = []
    for name, why in picks:
        sample = dataset[index[name]]
        masks = [(model_id, m[name]) for model_id, m in models if name in m]
        image = safe_join(out / "samples", f"{why}-{name}.png")
        sample_strip(sample.image, sample.label, masks, image, title=f"{name} ({why} frame)")
        samples.append({"name": name, "why": why, "image": str(image.relative_to(out.resolve()))})
    return samples


def run_bench(models: list[str], settings: BenchSettings, out: str | Path) -> dict:
    """Bench every model, write OUT/results.json and return the results dict."""
    from tqdm import tqdm

    from marsedge.bench.baseline import intensity_baseline
    from marsedge.data.labelled import open_labelled
    from marsedge.terrain import NUM_CLASSES

    if settings.reference is not None and not any(
            settings.reference in (p, Path(p).name) or Path(p).resolve() == Path(settings.reference).resolve()
            for p in models):
        raise ConfigError(f"--reference {settings.reference} is not one of the models benchmarked")
    out = Path(out)
    masks_dir = out / ".masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    dataset = open_labelled(settings.data, settings.split)
    results = R.new_results(capture(settings.threads), {**asdict(settings), "models": list(models)},
                            {"root": str(settings.data), "split": settings.split, "frames": len(dataset),
                             "intensity_baseline": intensity_baseline(dataset, NUM_CLASSES)})
    rows = []
    for model, model_id in tqdm(list(zip(models, model_ids(models), strict=True)), desc="bench",
                                unit="model"):
        path, backend = split_backend(model)
        if not Path(path).is_file():
            rows.append(R.failed_row(model_id, path, f"model file {path} not found"))
            continue
        rows.append(run_isolated(str(path), model_id, replace(settings, backend=backend or settings.backend),
                                 str(masks_file(masks_dir, model_id))))
    apply_gates(rows, settings, masks_dir)
    results["models"] = rows
    env = results["environment"]
    env["load_average_end"] = load_average()
    busy = load_hint(env["load_average_end"], usable_cores(env), "ended")
    if busy:
        env["hints"].append(busy)
    results["samples"] = render_samples(rows, settings, masks_dir, out)
    R.save_results(out / "results.json", results)
    if not settings.keep_masks:
        shutil.rmtree(masks_dir, ignore_errors=True)
    return results


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
