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
import math
from datetime import datetime, timezone
from pathlib import Path

from marsedge.errors import DataError
from marsedge.io import atomic_write_json
from marsedge.metrics import headline

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


STATS = ("mean", "std", "p50", "p90", "p99", "min", "max")


_NAMES = {dict: "an object", list: "a list", str: "a string", float: "a number", int: "a number",
          bool: "true/false"}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(source: str, key: str, why: str) -> DataError:
    return DataError(f"{source}: {key} {why}")


def _expect(value, kinds: tuple, source: str, key: str, optional: bool = False) -> None:
    """`value` is one of `kinds` (or None when optional); a number must also be finite."""
    if value is None and optional:
        return
    if float in kinds and _is_number(value):
        if not math.isfinite(value):
            raise _fail(source, key, f"is {value}, not a finite number")
        return
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        names = " or ".join(_NAMES[k] for k in kinds if k is not int)
        got = "null" if value is None else _NAMES.get(type(value), type(value).__name__)
        raise _fail(source, key, f"must be {names}{' or null' if optional else ''}, got {got}")


def _check_stats(stats, source: str, key: str) -> None:
    _expect(stats, (dict,), source, key)
    for stat in STATS:
        _expect(stats.get(stat), (int, float), source, f"{key}.{stat}")


def _no_infinity(value) -> bool:
    """True when no number inside `value` (a number, list or dict) is infinite."""
    if isinstance(value, dict):
        return all(_no_infinity(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_infinity(v) for v in value)
    return not (_is_number(value) and math.isinf(value))


def _check_metrics(metrics, source: str, key: str) -> None:
    """The headline (mIoU, or top-1) is a finite number; per-class values may be NaN or null (a class
    the split lacks), never infinite."""
    _expect(metrics, (dict,), source, key)
    _expect(metrics.get(headline(metrics)[0]), (int, float), source, f"{key}.{headline(metrics)[0]}")
    for name, value in metrics.items():
        if not _no_infinity(value):
            raise _fail(source, f"{key}.{name}", "holds an infinite number")


def _check_row(row, source: str, key: str) -> None:
    _expect(row, (dict,), source, key)
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise DataError(f"{source}: {key} lacks {missing}")
    for name in ("id", "path", "name"):
        _expect(row[name], (str,), source, f"{key}.{name}")
    for name in ("backend", "precision", "reason"):
        _expect(row[name], (str,), source, f"{key}.{name}", optional=True)
    if row["status"] not in STATUSES:
        raise DataError(f"{source}: {key}.status {row['status']!r} is not one of {STATUSES}")
    for name in ("size_bytes", "params", "macs"):
        _expect(row[name], (int, float), source, f"{key}.{name}", optional=True)
    for name in ("model_config", "memory"):
        _expect(row[name], (dict,), source, f"{key}.{name}", optional=True)
    _expect(row["input"], (list,), source, f"{key}.input", optional=True)
    if row["latency"] is not None:
        lat = row["latency"]
        _expect(lat, (dict,), source, f"{key}.latency")
        for part in ("end_to_end", "backend_only"):
            _check_stats(lat.get(part), source, f"{key}.latency.{part}")
        _expect(lat.get("stages", {}), (dict,), source, f"{key}.latency.stages")
        for stage, stats in lat.get("stages", {}).items():
            _check_stats(stats, source, f"{key}.latency.stages.{stage}")
        for name in ("throughput_fps", "seconds"):
            _expect(lat.get(name), (int, float), source, f"{key}.latency.{name}", optional=True)
    if row["accuracy"] is not None:
        acc = row["accuracy"]
        _expect(acc, (dict,), source, f"{key}.accuracy")
        _check_metrics(acc.get("metrics"), source, f"{key}.accuracy.metrics")
        _expect(acc.get("agreement"), (dict,), source, f"{key}.accuracy.agreement", optional=True)
        for name in ("confusion", "class_names", "per_frame"):
            _expect(acc.get(name), (list,), source, f"{key}.accuracy.{name}", optional=True)


def validate(results: dict, source: str = "results") -> dict:
    """Check the schema version and the types of everything the report reads, once, on load: a
    wrong type, a missing key, an empty model list or a non-finite figure is a DataError naming the
    file and the key."""
    if not isinstance(results, dict):
        raise DataError(f"{source}: not a marsedge results object")
    schema = results.get("schema")
    if schema != SCHEMA:
        raise DataError(f"{source}: schema {schema!r} is not {SCHEMA!r} (made by another marsedge version?)")
    for key in ("environment", "settings", "dataset", "samples", "models"):
        if key not in results:
            raise DataError(f"{source}: missing key {key!r}")
    for key in ("environment", "settings", "dataset"):
        _expect(results[key], (dict,), source, key)
    _expect(results.get("created"), (str,), source, "created")
    for key in ("root", "split"):  # every report line names them: bench always writes them
        _expect(results["dataset"].get(key), (str,), source, f"dataset.{key}")
    _expect(results["dataset"].get("frames"), (int,), source, "dataset.frames")
    _expect(results["samples"], (list,), source, "samples")
    for i, sample in enumerate(results["samples"]):
        _expect(sample, (dict,), source, f"samples[{i}]")
        for key in ("name", "why", "image"):
            _expect(sample.get(key), (str,), source, f"samples[{i}].{key}")
    _expect(results["models"], (list,), source, "models")
    if not results["models"]:
        raise DataError(f"{source}: models is empty (no model was benched)")
    for i, row in enumerate(results["models"]):
        _check_row(row, source, f"models[{i}]")
    return results


def save_results(path: str | Path, results: dict) -> Path:
    validate(results, str(path))
    return atomic_write_json(path, results)


def load_results(path: str | Path) -> dict:
    path = Path(path)
    try:
        results = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: results file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    return validate(results, str(path))
