"""`marsedge report`: results.json (+ sample PNGs beside it) -> report.md and a self-contained report.html.

The report is built once as a list of blocks (heading, paragraph, list, table, image) and rendered
twice: Markdown that links the PNGs written next to it, and HTML with every image embedded as a
data: URI, so the page can be mailed or attached to a review on its own.
With several results files the first is this run and the others are baselines it is compared with.
"""

from __future__ import annotations

import base64
import html
import shutil
from pathlib import Path

from marsedge.bench import plots
from marsedge.bench.compare import compare_runs
from marsedge.bench.verdict_block import verdict_blocks
from marsedge.errors import DataError
from marsedge.io import atomic_write_text, safe_join, safe_name
from marsedge.metrics import plot_confusion

FIRST_CLASS = "big rock"  # the hazard a rover cares most about leads the per-class tables
FEW_FRAMES = 100  # below this many timed frames, p99 is little more than the maximum


# --- formatting -----------------------------------------------------------------------------------

def fmt(x, digits: int = 2, scale: float = 1.0, pct: bool = False) -> str:
    if x is None:
        return "–"
    if pct:
        return f"{x:+.1%}"
    return f"{x * scale:.{digits}f}"


def status_text(row: dict) -> str:
    return row["status"] if not row.get("reason") else f"{row['status']}: {row['reason']}"


def class_order(rows: list[dict]) -> list[str]:
    names = next((r["accuracy"]["class_names"] for r in rows if r.get("accuracy")), [])
    return sorted(names, key=lambda n: n != FIRST_CLASS)


def task_of(rows: list[dict]) -> str:
    """"segmentation" or "classification": what the run's models are (one dataset, one task)."""
    tasks = (r["accuracy"].get("task", "segmentation") for r in rows if r.get("accuracy"))
    return next(tasks, "segmentation")


# the results table's accuracy columns per task: (heading, metrics key, per-class key or None)
ACCURACY_COLUMNS = {
    "segmentation": [("mIoU", "miou", None), ("pixel acc", "pixel_accuracy", None),
                     (f"{FIRST_CLASS} IoU", "iou", FIRST_CLASS)],
    "classification": [("top-1", "top1", None), ("top-5", "top5", None),
                       ("balanced acc", "balanced_accuracy", None)],
}
# the accuracy section's summary table per task: (heading, metrics key)
METRIC_COLUMNS = {
    "segmentation": [("pixel accuracy", "pixel_accuracy"), ("mIoU", "miou"), ("macro F1", "macro_f1"),
                     ("MAcc", "macc"), ("FW-IoU (FACC)", "facc")],
    "classification": [("top-1", "top1"), ("top-5", "top5"), ("balanced accuracy", "balanced_accuracy")],
}


def _metric(metrics: dict, key: str, per_class: str | None):
    value = metrics.get(key)
    return (value or {}).get(per_class) if per_class else value


# --- the content ----------------------------------------------------------------------------------

def results_table(rows: list[dict]) -> tuple:
    columns = ACCURACY_COLUMNS[task_of(rows)]
    head = ["model", "backend", "precision", "status", "p50 ms", "p90 ms", "p99 ms", "FPS",
            *(c[0] for c in columns), "agreement", "size MB", "params M", "GMACs", "peak RSS MB"]
    body = []
    for r in rows:
        lat, acc, mem = r.get("latency") or {}, r.get("accuracy") or {}, r.get("memory") or {}
        e2e = lat.get("end_to_end") or {}
        metrics = acc.get("metrics") or {}
        agree = acc.get("agreement")
        body.append([
            r["id"], r.get("backend") or "–", r.get("precision") or "–", status_text(r),
            fmt(e2e.get("p50")), fmt(e2e.get("p90")),
            fmt(e2e.get("p99")) + ("*" if lat and lat["iters"] < FEW_FRAMES else ""),
            fmt(lat.get("throughput_fps"), 1),
            *(fmt(_metric(metrics, key, per_class), 4) for _, key, per_class in columns),
            f"{agree['value']:.4f} vs {agree['reference']}" if agree else "–",
            fmt(r.get("size_bytes"), 2, 1 / 2**20), fmt(r.get("params"), 3, 1e-6),
            fmt(r.get("macs"), 3, 1e-9),
            fmt(mem.get("rss_peak_mb"), 0),
        ])
    return ("table", head, body)


def latency_table(rows: list[dict]) -> tuple:
    head = ["model", "preprocess ms", "infer ms", "postprocess ms", "backend-only p50 / p99",
            "end-to-end p50 / p99", "mean ± std", "min / max", "iters", "RSS model MB", "device MB"]
    body = []
    for r in plots.measured(rows):
        lat, mem = r["latency"], r.get("memory") or {}
        st, bo, e2e = lat["stages"], lat["backend_only"], lat["end_to_end"]
        body.append([r["id"], fmt(st["preprocess"]["mean"]), fmt(st["infer"]["mean"]),
                     fmt(st["postprocess"]["mean"]), f"{fmt(bo['p50'])} / {fmt(bo['p99'])}",
                     f"{fmt(e2e['p50'])} / {fmt(e2e['p99'])}", f"{fmt(e2e['mean'])} ± {fmt(e2e['std'])}",
                     f"{fmt(e2e['min'])} / {fmt(e2e['max'])}", str(lat["iters"]),
                     fmt(mem.get("rss_model_mb"), 0), fmt(mem.get("device_mb"), 0)])
    return ("table", head, body)


def like_for_like(rows: list[dict]) -> list[tuple[str, str, str, float]]:
    """Speed-ups that compare like with like: (faster id, slower id, what is held equal, ratio of
    end-to-end p50s). Two kinds: different models on the same backend and precision (the student
    against the teacher, both ONNX Runtime FP32), and the same architecture (model config) on the
    same backend at another precision (INT8 against FP32). A PyTorch row is never set against an
    ONNX Runtime one: that would credit the runtime to the model."""
    done = [r for r in plots.measured(rows) if r.get("backend") and r.get("precision")]
    pairs = []
    for i, a in enumerate(done):
        for b in done[i + 1:]:
            same_model = a.get("model_config") == b.get("model_config")
            same_precision = a["precision"] == b["precision"]
            if a["backend"] != b["backend"] or same_model == same_precision:
                continue  # another runtime, or nothing differs, or two things differ
            fast, slow = sorted((a, b), key=lambda r: r["latency"]["end_to_end"]["p50"])
            held = f"{fast['backend']} {fast['precision']}" if same_precision else \
                f"{fast['backend']}, same model, {fast['precision']} vs {slow['precision']}"
            ratio = slow["latency"]["end_to_end"]["p50"] / fast["latency"]["end_to_end"]["p50"]
            pairs.append((fast["id"], slow["id"], held, ratio))
    return pairs


def speedup_table(pairs: list[tuple[str, str, str, float]]) -> tuple:
    body = [[fast, slow, held, f"{ratio:.2f}x"] for fast, slow, held, ratio in pairs]
    return ("table", ["faster", "than", "held equal", "end-to-end p50 ratio"], body)


def class_table(rows: list[dict], order: list[str]) -> tuple:
    """Per class: IoU / recall by model (segmentation); for classifiers, whose 12-24 classes would
    not fit across, one row per class: its test images and each model's recall."""
    scored = [r for r in rows if r.get("accuracy")]
    if task_of(rows) == "classification":
        support = scored[0]["accuracy"]["metrics"]["support"] if scored else {}
        body = [[c, str(support.get(c, "–"))]
                + [fmt(_finite(r["accuracy"]["metrics"]["recall"].get(c)), 3) for r in scored] for c in order]
        return ("table", ["class", "images", *(f"{r['id']} recall" for r in scored)], body)
    head = ["model"] + [f"{c} IoU / recall" for c in order]
    body = []
    for r in scored:
        m = r["accuracy"]["metrics"]
        body.append([r["id"]] + [f"{fmt(m['iou'].get(c), 3)} / {fmt(m['recall'].get(c), 3)}" for c in order])
    return ("table", head, body)


def _finite(x):
    return None if x is None or x != x else x  # NaN (a class the split lacks) prints as –


def metrics_table(rows: list[dict]) -> tuple:
    task = task_of(rows)
    columns = METRIC_COLUMNS[task]
    count = ("labelled pixels", "pixels") if task == "segmentation" else ("images", None)
    body = []
    for r in rows:
        if not r.get("accuracy"):
            continue
        m = r["accuracy"]["metrics"]
        n = m["pixels"] if count[1] else sum(m["support"].values())
        body.append([r["id"], *(fmt(m[k], 4) for _, k in columns), str(n)])
    return ("table", ["model", *(c[0] for c in columns), count[0]], body)


def machine_blocks(env: dict) -> list[tuple]:
    items = [f"CPU: {env.get('cpu')} ({env.get('cpu_count')} logical cores, "
             f"{env.get('cpu_affinity')} usable, "
             f"threads asked: {env.get('threads') or 'backend default'})",
             f"OS: {env.get('os')}, Python {env.get('python')}",
             "load average (1 min) at start / end: "
             f"{_load(env.get('load_average'))} / {_load(env.get('load_average_end'))}",
             "libraries: " + ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items())]
    for gpu in env.get("gpus") or []:
        items.append("GPU: " + ", ".join(f"{k} {v}" for k, v in gpu.items()))
    if not env.get("gpus"):
        items.append("GPU: none")
    if env.get("jetson"):
        items.append("Jetson: " + ", ".join(f"{k} {v}" for k, v in env["jetson"].items()))
    items += [f"hint: {h}" for h in env.get("hints", [])]
    return [("h2", "Machine"), ("list", items)]


def _load(load: list[float] | None) -> str:
    return "–" if not load else f"{load[0]:.2f}"


def comparison_blocks(current: dict, baseline: dict, source: str, tolerances: dict) -> list[tuple]:
    cmp = compare_runs(current, baseline, **tolerances)
    blocks = [("h2", f"Comparison with {source}"),
              ("p", f"{cmp['regressions']} model(s) regressed. Baseline made {baseline['created']} on "
                    f"{baseline['environment'].get('cpu')}."
                    + ("" if cmp["same_machine"] else " Different CPU: latency deltas compare machines."))]
    body = []
    for c in cmp["rows"]:
        if c["regressions"]:
            mark = "REGRESSION: " + "; ".join(c["regressions"])
        else:
            mark = "ok" if c["status"][1] == "ok" else f"no change ({c['status'][1]})"
        body.append([c["id"], f"{c['status'][0]} -> {c['status'][1]}",
                     f"{fmt(c['p50_ms'][0])} -> {fmt(c['p50_ms'][1])}", fmt(c["latency_delta"], pct=True),
                     f"{fmt(c['miou'][0], 4)} -> {fmt(c['miou'][1], 4)}",
                     "–" if c["miou_delta"] is None else f"{c['miou_delta']:+.4f}", mark])
    blocks.append(("table", ["model", "status", "p50 ms", "Δ latency", "mIoU", "Δ mIoU", "verdict"], body))
    if cmp["only_current"] or cmp["only_baseline"]:
        blocks.append(("p", f"Only in this run: {', '.join(cmp['only_current']) or 'none'}. "
                            f"Only in the baseline: {', '.join(cmp['only_baseline']) or 'none'}."))
    return blocks


def build_blocks(results: list[dict], sources: list[Path], out: Path, tolerances: dict) -> list[tuple]:
    """Every section of the report; writes the plots into `out` on the way."""
    run = results[0]
    rows = run["models"]
    s, d = run["settings"], run["dataset"]
    classifier = task_of(rows) == "classification"
    agreement, label = ("top-1 agreement", "top-1") if classifier else ("pixel agreement", "mIoU")
    timing = f"{s['iters']} frames" if s.get("iters") else f"{s.get('duration')} s"
    blocks = [
        ("h1", "marsedge benchmark report"),
        ("p", f"Run {run['created']}: {len(rows)} model(s) on split {d['split']} of {d['root']} "
              f"({d['frames']} frames); batch 1, up to {s.get('warmup')} warm-up frames then {timing} per "
              f"model, input size {s.get('size') or 'each model’s own'}; each model measured in its own "
              "process. Accuracy is a fraction (0-1)."),
        *verdict_blocks(run),
        ("h2", "Results"), results_table(rows),
        ("p", "Status: ok; accuracy-failed (ran, missed its gate: the INT8 verdict against its FP32 model"
              + (f", {label} ≥ {s['min_miou']}" if s.get("min_miou") else "")
              + f"); failed (could not run; the reason follows). The {agreement} column is information, "
              "not a verdict. Latency is end-to-end per frame; "
              f"* marks a p99 from fewer than {FEW_FRAMES} timed frames (about the maximum)."),
    ]
    blocks += machine_blocks(run["environment"])
    for i, base in enumerate(results[1:], start=1):
        blocks += comparison_blocks(run, base, str(sources[i]), tolerances)
    if plots.measured(rows):
        blocks += [("h2", "Latency"), latency_table(rows),
                   ("img", plots.latency_bars(rows, out / "latency.png"), "latency bars")]
        pairs = like_for_like(rows)
        if pairs:
            blocks += [("h3", "Speed-ups, like for like"), speedup_table(pairs),
                       ("p", "Only pairs on the same backend: two models at the same precision, or one "
                             "model at two precisions. PyTorch eager against ONNX Runtime is left out, "
                             "because it measures the runtime, not the model.")]
    with_accuracy = [r for r in rows if r.get("accuracy")]
    if with_accuracy:
        order = class_order(rows)
        blocks += [("h2", "Accuracy against latency"),
                   ("img", plots.accuracy_latency(rows, out / "pareto.png"), "accuracy against latency"),
                   ("h2", "Accuracy"), metrics_table(rows),
                   ("h3", "Per class (recall)" if classifier else "Per class (IoU / recall)"),
                   class_table(rows, order),
                   ("img", plots.class_iou_bars(rows, order, out / "class_iou.png",
                                                "recall" if classifier else "iou"),
                    "per-class recall" if classifier else "per-class IoU"),
                   ("h3", "Confusion matrices (rows: truth, normalised)")]
        matrices = [(plot_confusion(r["accuracy"]["confusion"], safe_join(out, f"confusion-{r['id']}.png"),
                                    r["accuracy"]["class_names"], title=r["id"]),
                     f"confusion matrix of {r['id']}") for r in with_accuracy]
        blocks.append(("gallery", matrices))
    if run["samples"]:
        blocks += [("h2", "Sample frames"),
                   ("p", "input | truth | each model's mask over the frame; the worst frames (lowest mIoU "
                         "averaged over the models) come first.")]
        for sample in run["samples"]:
            name = safe_name(Path(sample["image"]).name)  # a results file never picks paths outside OUT
            png = copy_beside(sources[0].parent / "samples" / name, safe_join(out / "samples", name))
            blocks.append(("img", png, f"{sample['why']} frame {sample['name']}"))
    return blocks


def copy_beside(src: Path, dst: Path) -> Path:
    if not src.is_file():
        raise DataError(f"{src}: sample image named in the results file is missing (keep OUT/samples/)")
    if src.resolve() != dst.resolve():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return dst


# --- rendering ------------------------------------------------------------------------------------

def _md_image(png: Path, alt: str, out: Path) -> str:
    return f"![{alt}]({Path(png).relative_to(out).as_posix()})"


def _html_image(png: Path, alt: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def to_markdown(blocks: list[tuple], out: Path) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + rest[0], ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in rest[0]] + [""]
        elif kind == "table":
            head, body = rest
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
            lines.append("")
        elif kind == "img":
            lines += [_md_image(rest[0], rest[1], out), ""]
        elif kind == "gallery":
            lines += [" ".join(_md_image(png, alt, out) for png, alt in rest[0]), ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f0f0f0}td.bad{background:#fde2e2;font-weight:bold}td.warn{background:#fff4d6}
img{max-width:100%;display:block;margin:0.5em 0}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.gallery img{max-width:390px}"""


def _cell(text: str) -> str:
    cls = ' class="bad"' if text.startswith(("REGRESSION", "failed")) else (
        ' class="warn"' if text.startswith("accuracy-failed") else "")
    return f"<td{cls}>{html.escape(text)}</td>"


def to_html(blocks: list[tuple]) -> str:
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             "<title>marsedge benchmark report</title>", f"<style>{CSS}</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(rest[0])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "table":
            head, body = rest
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                         + "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in body)
                         + "</table>")
        elif kind == "img":
            parts.append(_html_image(rest[0], rest[1]))
        elif kind == "gallery":
            parts.append('<div class="gallery">' + "".join(_html_image(p, a) for p, a in rest[0]) + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: list[dict], sources: list[Path], out: str | Path, latency_tol: float = 0.10,
                 miou_tol: float = 0.01) -> tuple[Path, Path]:
    """Write OUT/report.md (+ its PNGs) and OUT/report.html; return their paths. results[0] is this
    run, any others are baselines (regression: p50 up more than latency_tol, mIoU down more than miou_tol)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tolerances = {"latency_tol": latency_tol, "miou_tol": miou_tol}
    blocks = build_blocks(results, [Path(s) for s in sources], out, tolerances)
    md = atomic_write_text(out / "report.md", to_markdown(blocks, out))
    page = atomic_write_text(out / "report.html", to_html(blocks))
    return md, page
