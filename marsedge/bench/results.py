"""The `results.json` schema: one file per `marsedge bench` run, read back by `marsedge report`.

Versioned so that a report made next year can still read (or clearly refuse) this year's run:

    {
      "schema": "marsedge.bench/1",
      "created": "2026-11-21T19:30:00+00:00",
      "environment": {...},            # environment.capture(): CPU, GPU, clocks, library versions
      "settings":    {...},            # the command line that produced the run
      "dataset":     {"root", "split", "frames"},
      "samples":     [{"name", "why", "image"}],   # sample-strip PNGs, relative to the file
      "models":      [row, ...]
    }

A row is one model file on one backend:

    id, path, name, backend, precision, model_config (the architecture, from the model's metadata),
    status ("ok" | "accuracy-failed" | "failed"), reason,
    size_bytes, params, macs, input [C, H, W],
    latency:  {warmup, iters, seconds, throughput_fps,
               end_to_end, backend_only: {mean, std, p50, p90, p99, min, max} in milliseconds,
               stages: {preprocess, infer, postprocess: same keys}},
    memory:   {rss_baseline_mb, rss_peak_mb, rss_model_mb, device_mb},
    accuracy: {metrics (marsedge.metrics.segmentation_metrics), confusion (KxK counts),
               class_names, per_frame [{name, miou, pixel_accuracy}],
               agreement {reference, value} | null}   (information only)
    quantize_verdict: the INT8 verdict quantize recorded in the model (marsedge.edge.verdict) | null,
    int8_verdict (INT8 rows with an FP32 row of the same model): {reference, bench, quantize}

Any part a failed row could not measure is null. Rows keep the order models were given in.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from marsedge.errors import DataError
from marsedge.io import atomic_write_json

SCHEMA = "marsedge.bench/1"
STATUS_OK = "ok"
STATUS_ACCURACY_FAILED = "accuracy-failed"  # ran, but missed its accuracy gate
STATUS_FAILED = "failed"  # could not be loaded or run
STATUSES = (STATUS_OK, STATUS_ACCURACY_FAILED, STATUS_FAILED)

ROW_KEYS = ("id", "path", "name", "backend", "precision", "model_config", "status", "reason", "size_bytes",
            "params", "macs", "input", "latency", "memory", "accuracy")


def empty_row(model_id: str, path: str | Path) -> dict:
    """A row with every key present and nothing measured yet (what a model that fails early keeps)."""
    row = dict.fromkeys(ROW_KEYS)
    row.update(id=model_id, path=str(path), name=Path(path).name, status=STATUS_FAILED, reason="")
    return row


def failed_row(model_id: str, path: str | Path, reason: str) -> dict:
    row = empty_row(model_id, path)
    row["reason"] = reason
    return row


def new_results(environment: dict, settings: dict, dataset: dict) -> dict:
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment,
        "settings": settings,
        "dataset": dataset,
        "samples": [],
        "models": [],
    }


def validate(results: dict, source: str = "results") -> dict:
    """Check the schema version and the keys the report relies on; raise DataError naming the file."""
    if not isinstance(results, dict):
        raise DataError(f"{source}: not a marsedge results object")
    schema = results.get("schema")
    if schema != SCHEMA:
        raise DataError(f"{source}: schema {schema!r} is not {SCHEMA!r} (made by another marsedge version?)")
    for key in ("environment", "settings", "dataset", "samples", "models"):
        if key not in results:
            raise DataError(f"{source}: missing key {key!r}")
    for i, row in enumerate(results["models"]):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise DataError(f"{source}: models[{i}] lacks {missing}")
        if row["status"] not in STATUSES:
            raise DataError(f"{source}: models[{i}].status {row['status']!r} is not one of {STATUSES}")
    return results


def save_results(path: str | Path, results: dict) -> Path:
    validate(results, str(path))
    return atomic_write_json(path, results)


def load_results(path: str | Path) -> dict:
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: results file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return validate(results, str(path))
