"""This run against a baseline run: deltas per model, and regressions marked.

Rows are matched by id (the model file's name). A row regresses when it
- got worse in status (ok -> accuracy-failed -> failed),
- got slower: end-to-end p50 up by more than `latency_tol` (relative, default 10 %),
- got less accurate: mIoU down by more than `miou_tol` (absolute, default 0.01).
Latency deltas between different machines mean little: the report says when the CPUs differ.
"""

from __future__ import annotations

from marsedge.bench import results as R
from marsedge.errors import DataError
from marsedge.metrics import headline

_STATUS_RANK = {R.STATUS_OK: 0, R.STATUS_ACCURACY_FAILED: 1, R.STATUS_FAILED: 2}


def _p50(row: dict) -> float | None:
    return row["latency"]["end_to_end"]["p50"] if row.get("latency") else None


def _miou(row: dict) -> float | None:
    """The row's headline accuracy: mIoU, or top-1 for a classifier (the `miou` fields below hold it)."""
    if not row.get("accuracy"):
        return None
    metrics = row["accuracy"]["metrics"]
    return metrics[headline(metrics)[0]]


def check_comparable(current: dict, baseline: dict, current_source: str, baseline_source: str) -> None:
    """Two runs are compared only on the same split with the same number of frames (the data root's
    path is not compared: the same data may live elsewhere on the other machine)."""
    now, then = current["dataset"], baseline["dataset"]
    if (now.get("split"), now.get("frames")) != (then.get("split"), then.get("frames")):
        def data(d: dict) -> str:
            return f"split {d.get('split')}, {d.get('frames')} frames of {d.get('root')}"

        raise DataError(f"cannot compare {current_source} ({data(now)}) with {baseline_source} "
                        f"({data(then)}): bench both on the same split")


def compare_rows(current: dict, baseline: dict, latency_tol: float = 0.10, miou_tol: float = 0.01) -> dict:
    """Deltas of one model between two runs and the list of regressions (empty when none)."""
    regressions = []
    if _STATUS_RANK[current["status"]] > _STATUS_RANK[baseline["status"]]:
        regressions.append(f"status {baseline['status']} -> {current['status']}")
    p50_now, p50_then = _p50(current), _p50(baseline)
    latency_delta = None
    if p50_now is not None and p50_then:
        latency_delta = p50_now / p50_then - 1
        if latency_delta > latency_tol:
            regressions.append(f"p50 {p50_then:.2f} -> {p50_now:.2f} ms (+{latency_delta:.0%})")
    miou_now, miou_then = _miou(current), _miou(baseline)
    miou_delta = None
    if miou_now is not None and miou_then is not None:
        miou_delta = miou_now - miou_then
        if miou_delta < -miou_tol:
            label = headline(current["accuracy"]["metrics"])[1]
            regressions.append(f"{label} {miou_then:.4f} -> {miou_now:.4f} ({miou_delta:+.4f})")
    return {
        "id": current["id"],
        "status": (baseline["status"], current["status"]),
        "p50_ms": (p50_then, p50_now),
        "latency_delta": latency_delta,
        "miou": (miou_then, miou_now),
        "miou_delta": miou_delta,
        "regressions": regressions,
    }


def compare_runs(current: dict, baseline: dict, latency_tol: float = 0.10, miou_tol: float = 0.01) -> dict:
    """Every model of the current run against the same model in the baseline."""
    base = {r["id"]: r for r in baseline["models"]}
    rows = [compare_rows(r, base[r["id"]], latency_tol, miou_tol)
            for r in current["models"] if r["id"] in base]
    now_ids = {r["id"] for r in current["models"]}
    return {
        "rows": rows,
        "only_current": [r["id"] for r in current["models"] if r["id"] not in base],
        "only_baseline": [i for i in base if i not in now_ids],
        "same_machine": current["environment"].get("cpu") == baseline["environment"].get("cpu"),
        "regressions": sum(len(r["regressions"]) > 0 for r in rows),
    }
