"""The run summary: runs/<name>/summary.json, written by rank 0 when a run ends (also on Ctrl-C),
and the lines train.py / distill.py print from it.

    {"name", "mode", "finished", "interrupted", "stopped_early", "epochs", "steps", "processes", "device",
     "timing": {"wall_time_s", "train_time_s", "eval_time_s", "images", "images_per_s", "data_wait_share",
                "logging_share", "views_time_s"},
     "best": {"metric", "value", "epoch"}, "selected_on": {..., "weights": "raw" | "ema"},
     "test_metrics": {scalars of test_metrics.json}, "artefacts": {role: path},
     "export": "marsedge export runs/<name>/best.pt" (null when the artefact is not a deployable model),
     "probe": {"method", "metric", "first", "last", "best": {"epoch", "value"}} (pretraining's feature
              probe on val, when it ran)}

Timing is this process's (a resumed run counts from its resume): wall time from the start of the
loop, training time (loader waits included, evaluations not), images per second of training time,
the share of it spent waiting for the loader and on progress output and TensorBoard, and the time
the evaluations' views took (their lines, TensorBoard images, curves.png).
"""

from __future__ import annotations

import math
from pathlib import Path

from marsedge.io import atomic_write_json
from marsedge.train.engine.runlog import json_safe
from marsedge.train.engine.state import RunState

SUMMARY = "summary.json"
# files a run folder may hold, by role (what the summary lists when present)
_FILES = {"best": "best.pt", "last": "last.pt", "config": "config.yaml", "metrics": "metrics.jsonl",
          "log_csv": "log.csv", "test_metrics": "test_metrics.json", "curves": "curves.png",
          "tensorboard": "tensorboard", "summary": SUMMARY}


def export_source(run: RunState) -> str | None:
    """best.pt when the artefact is a model `marsedge export` rebuilds (a segmentation model or an
    image classifier); None otherwise (a pretraining projection model, a linear probe on features)."""
    from marsedge.models.build import SegmentationModel
    from marsedge.models.classifier import ImageClassifier

    if isinstance(run.artifact.module, (SegmentationModel, ImageClassifier)):
        return str(Path(run.state.run_dir) / "best.pt")
    return None


def artefacts(run_dir: Path, extra: dict[str, str] | None = None) -> dict:
    """Where everything the run wrote is, by role (only what exists)."""
    found: dict = {role: str(run_dir / name) for role, name in _FILES.items()
                   if (run_dir / name).exists() or role == "summary"}
    epochs = sorted(run_dir.glob("epoch_*.pt"))
    if epochs:
        found["epoch_checkpoints"] = [str(p) for p in epochs]
    confusion = sorted(run_dir.glob("confusion_*.png"))
    if confusion:
        found["confusion_png"] = [str(p) for p in confusion]
    found.update(extra or {})
    return found


def write_summary(cfg, result: dict, processes: int, device: str) -> dict:
    """runs/<name>/summary.json from fit's (and the mode's) result; returns what it wrote."""
    run_dir = Path(result["run_dir"])
    extra = {"student": result["student"]} if "student" in result else {}
    export = extra.get("student") or result.get("export")
    tests = {k: v for k, v in result.get("test_metrics", {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    summary = {
        "name": cfg.name, "mode": cfg.mode, "finished": not result["interrupted"],
        "interrupted": result["interrupted"], "stopped_early": result["stopped_early"],
        "epochs": result["epoch"], "steps": result["step"], "processes": processes, "device": device,
        "timing": result.get("timing", {}), "best": result["best"], "selected_on": result["selected_on"],
        "test_metrics": tests, "artefacts": artefacts(run_dir, extra),
        "export": f"marsedge export {export}" if export and not result["interrupted"] else None,
    }
    if "probe" in result:
        summary["probe"] = result["probe"]
    atomic_write_json(run_dir / SUMMARY, json_safe(summary))
    return summary


def _value(value) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _per_split(metrics: dict) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} of every scored split (`split/metric` keys; scalars only)."""
    splits = dict.fromkeys(key.split("/", 1)[0] for key in metrics if "/" in key)
    return {split: {name: metrics[f"{split}/{name}"] for name in ("miou", "pixel_accuracy", "top1")
                    if isinstance(metrics.get(f"{split}/{name}"), float)} for split in splits}


def summary_lines(summary: dict) -> list[str]:
    """The finished run in a few lines: time and throughput, the selection, the test scores, the
    files, the export command."""
    from marsedge.train.engine.progress import duration

    name, timing, best = summary["name"], summary["timing"], summary["best"]
    rate = timing.get("images_per_s")
    lines = [f"[{name}] {summary['epochs']} epochs, {summary['steps']} steps"
             + (" (stopped early)" if summary["stopped_early"] else "")
             + f" in {duration(timing.get('wall_time_s'))}"
             + (f", {rate:.1f} img/s" if rate else "")
             + f" ({summary['processes']} process(es) on {summary['device']})"]
    if best["value"] is not None:
        weights = summary["selected_on"].get("weights", "raw")
        lines.append(f"[{name}] best val {best['metric']} {_value(best['value'])} at epoch {best['epoch']}"
                     + (" (EMA weights)" if weights == "ema" else ""))
    elif "probe" in summary:
        lines.append(f"[{name}] best.pt holds the final weights (the probe watches, selects nothing)")
    else:
        lines.append(f"[{name}] no val split: best.pt holds the final weights")
    if "probe" in summary:
        probe = summary["probe"]
        lines.append(f"[{name}] {probe['method']} probe, val {probe['metric']}: "
                     + " -> ".join(f"{_value(p['value'])} (epoch {p['epoch']})"
                                   for p in (probe["first"], probe["last"]))
                     + f", best {_value(probe['best']['value'])} (epoch {probe['best']['epoch']})")
    shown = "; ".join(f"{split} " + ", ".join(f"{k} {_value(v)}" for k, v in values.items())
                      for split, values in _per_split(summary["test_metrics"]).items())
    if shown:
        lines.append(f"[{name}] final test (fractions, scored once with best.pt): {shown}")
    paths = [p for v in summary["artefacts"].values() for p in ([v] if isinstance(v, str) else v)]
    folder = summary["artefacts"]["summary"].rsplit("/", 1)[0]
    names = [p[len(folder) + 1:] if p.startswith(folder + "/") else p for p in paths]
    lines.append(f"[{name}] files in {folder}/: " + ", ".join(names))
    if summary["export"]:
        lines.append(f"[{name}] export: {summary['export']}")
    return lines
