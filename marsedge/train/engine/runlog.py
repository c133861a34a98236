"""The run's logs: `metrics.jsonl` (every train window, val evaluation and the final test scoring)
and `log.csv` (one row per val evaluation, scalars only, opens in any spreadsheet or pandas). Only
rank 0 has a RunLogger."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from marsedge.errors import WriteError
from marsedge.io import append_jsonl, atomic_write_text


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def json_safe(obj):
    """NaN (a class absent from a test set) becomes null so metrics.jsonl is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


class RunLogger:
    """Appends to runs/<name>/metrics.jsonl and log.csv. On resume, records written after the
    checkpoint (by the run that was interrupted) are dropped, so the logs read as one clean run."""

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "log.csv"
        self.start = time.time()
        if resume_step is None:
            self.jsonl.unlink(missing_ok=True)
            self.csv.unlink(missing_ok=True)
        else:
            self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        if self.jsonl.exists():
            keep = [line for line in self.jsonl.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= step]
            atomic_write_text(self.jsonl, "".join(line + "\n" for line in keep))
        if self.csv.exists():
            with self.csv.open(newline="") as f:
                rows = list(csv.DictReader(f))
            self.csv.unlink()
            for row in rows:
                if int(float(row["step"])) <= step:
                    self._csv_row(row)

    def train(self, epoch: int, step: int, values: dict) -> None:
        append_jsonl(self.jsonl, {"kind": "train", "epoch": epoch, "step": step,
                                  "time_s": round(time.time() - self.start, 2), **_scalars(values)})

    def evaluation(self, epoch: int, step: int, metrics: dict) -> None:
        record = {"kind": "eval", "epoch": epoch, "step": step, **metrics}
        append_jsonl(self.jsonl, json_safe(record))
        self._csv_row({"epoch": epoch, "step": step, **_scalars(metrics)})

    def test(self, epoch: int, step: int, metrics: dict) -> None:
        """The one scoring of the test splits (the selected checkpoint), after training."""
        append_jsonl(self.jsonl, json_safe({"kind": "test", "epoch": epoch, "step": step, **metrics}))

    def _csv_row(self, row: dict) -> None:
        new = not self.csv.exists()
        try:
            with self.csv.open("a", newline="") as f:
                if new:
                    writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
                    writer.writeheader()
                else:
                    with self.csv.open(newline="") as r:
                        fieldnames = next(csv.reader(r))
                    writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
                writer.writerow(row)
        except OSError as exc:
            raise WriteError(self.csv, exc) from None
