"""The one INT8 acceptance rule, shared by `marsedge quantize`, `marsedge bench` and the report.

    An INT8 model is accepted when, on the same labelled frames, its headline accuracy (mIoU for a
    segmentation model, top-1 for a classifier) is at most `tolerance` below its FP32 source's.

Accuracy is a fraction (0-1) everywhere marsedge prints it, so the tolerance is one too: the
default 0.01 is one mIoU point. A non-finite score is never accepted. quantize applies the rule on
the split it tunes on (`val` by default) and records the verdict in the INT8 file's metadata; bench
applies the same rule on the split it is given and shows the verdict quantize recorded beside its
own. Pixel agreement between the two models is reported as information only: it is not a verdict
(two models can disagree on many pixels and be equally accurate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from marsedge.errors import ConfigError

DEFAULT_TOLERANCE = 0.01  # one mIoU (or top-1) point
LABELS = {"miou": "mIoU", "top1": "top-1"}


@dataclass(frozen=True)
class Int8Verdict:
    metric: str  # "miou" or "top1"
    split: str  # where it was judged: "val", "gold-min3", ...
    fp32: float
    int8: float
    tolerance: float

    @property
    def drop(self) -> float:
        return self.fp32 - self.int8

    @property
    def passed(self) -> bool:
        return math.isfinite(self.fp32) and math.isfinite(self.int8) and self.drop <= self.tolerance

    def to_dict(self) -> dict:
        """The record stored in metadata and results.json (`passed` and `drop` included)."""
        return {**asdict(self), "drop": round(self.drop, 6), "passed": self.passed}

    @classmethod
    def from_dict(cls, record: dict) -> Int8Verdict:
        return cls(record["metric"], record["split"], record["fp32"], record["int8"], record["tolerance"])

    def line(self) -> str:
        """One line a user reads: `INT8 accepted on val: mIoU 0.2368 -> 0.2408 (drop -0.0040 <= 0.0100)`."""
        word, sign = ("accepted", "<=") if self.passed else ("rejected", ">")
        return (f"INT8 {word} on {self.split}: {LABELS[self.metric]} {self.fp32:.4f} -> {self.int8:.4f} "
                f"(drop {self.drop:+.4f} {sign} tolerance {self.tolerance:.4f})")


def check_tolerance(tolerance: float, name: str = "--tolerance") -> float:
    """A tolerance is a fraction of accuracy: above 1 it is a value in points given by mistake."""
    if not math.isfinite(tolerance) or tolerance > 1:
        raise ConfigError(f"{name} is a fraction of accuracy (0.01 = one mIoU point), got {tolerance}")
    return tolerance


def int8_verdict(fp32_metrics: dict, int8_metrics: dict, tolerance: float, split: str) -> Int8Verdict:
    """The rule above, on two metrics dicts (marsedge.metrics) of the same frames."""
    metric = "miou" if "miou" in fp32_metrics else "top1"
    value = int8_metrics.get(metric)
    return Int8Verdict(metric, split, float(fp32_metrics[metric]),
                       float("nan") if value is None else float(value), float(tolerance))
