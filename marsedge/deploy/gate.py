"""The INT8 accuracy gate and the INT8-vs-FP32 speed measurement of `marsedge quantize`.

As Polygraphy's Comparator compares any runners' outputs, the gate compares two `Scores`
(`marsedge.edge.predict`): the FP32 model's, computed once per quantize (`gate_reference`, one code
path whatever the target), and each INT8 candidate's on the same frames (`accuracy_gate`). mIoU
drop, per-class IoU drop and pixel agreement go into the record, all as fractions (0-1); whether
it passes is the one INT8 verdict (`marsedge.edge.verdict`, the rule bench and the report apply
too), kept in the record as `verdict`. Scoring is predict.score's, so the gate's mIoU is the one
`marsedge bench` reports for the same model and split. A classifier is gated the same way on its
headline: top-1 drop, per-class recall drop and top-1 agreement (`metric` in the record names
which; `drop` is the headline's drop either way). Agreement is information, not a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsedge.edge.predict import Scores, score
from marsedge.edge.verdict import Int8Verdict, int8_verdict
from marsedge.errors import DataError, MarsedgeError
from marsedge.metrics import HEADLINE, headline
from marsedge.runtimes import DEFAULT_CPU_RUNTIME, RUNTIMES, OpenOptions


class GateError(MarsedgeError):
    """The quantized model lost more accuracy than allowed."""


class SpeedGateError(GateError):
    """The quantized model is not faster than FP32 on this machine (by `--min-speedup`)."""


@dataclass
class GateReference:
    """The gate's labelled frames, read once, and the FP32 model's Scores on them."""

    eval: str  # "ROOT (SPLIT, N frames)"
    samples: list  # marsedge.data.ai4mars.Sample, kept so candidates see the very same frames
    fp32: Scores
    split: str = "val"


def _cpu_backend(path: Path, threads: int | None, runtime: str = DEFAULT_CPU_RUNTIME):
    """The gate runs on a CPU runtime of the registry: ONNX Runtime's CPU provider by default (a file
    made for a GPU runtime runs there too), or the runtime a candidate is meant for
    (marsedge.deploy.runtime_choice)."""
    return RUNTIMES[runtime].open(path, OpenOptions(threads=threads, cpu_only=True))


def gate_reference(fp32_path: Path, eval_root: str, split: str, threads: int | None = None,
                   runtime: str = DEFAULT_CPU_RUNTIME) -> GateReference:
    """Read the labelled split once and score the FP32 model on it."""
    from marsedge.data.labelled import open_labelled

    data = open_labelled(eval_root, split)
    if len(data) == 0:
        raise DataError(f"{eval_root}: evaluation split {split} is empty")
    samples = list(data)
    fp32 = _cpu_backend(Path(fp32_path), threads, runtime)
    try:
        scores = score(fp32, samples)
    finally:
        fp32.close()
    return GateReference(f"{eval_root} ({split}, {len(samples)} frames)", samples, scores, split)


def compare(reference: Scores, candidate: Scores, tolerance: float, split: str = "val") -> dict:
    """The gate record of a candidate's Scores against the reference's (fractions): for a
    segmentation model miou_fp32/_int8/_drop, iou_drop per class and pixel_agreement; for a
    classifier top1_fp32/_int8/_drop, recall_drop per class and top1_agreement; `verdict` and
    `passed` are the one INT8 verdict's (marsedge.edge.verdict)."""
    m32, m8 = reference.metrics, candidate.metrics
    key, _ = headline(m32)
    per_class = "iou" if key == "miou" else "recall"
    drop = {name: (None if not _finite(m32[per_class][name]) or not _finite(m8[per_class][name])
                   else round(m32[per_class][name] - m8[per_class][name], 5))
            for name in m32[per_class]}
    verdict = int8_verdict(m32, m8, tolerance, split)
    agreement = "pixel_agreement" if key == "miou" else "top1_agreement"
    return {
        "metric": key, f"{key}_fp32": round(verdict.fp32, 5), f"{key}_int8": round(verdict.int8, 5),
        f"{key}_drop": round(verdict.drop, 5), "drop": round(verdict.drop, 5), f"{per_class}_drop": drop,
        agreement: round(candidate.agreement(reference), 5),
        "tolerance": tolerance, "passed": verdict.passed, "verdict": verdict.to_dict(),
    }


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def accuracy_gate(reference: GateReference, int8_path: Path, tolerance: float,
                  threads: int | None = None, runtime: str = DEFAULT_CPU_RUNTIME) -> dict:
    """Score the INT8 model on the reference's frames and compare; the record stored in the metadata."""
    int8 = _cpu_backend(Path(int8_path), threads, runtime)
    try:
        scores = score(int8, reference.samples, reference.fp32.class_names)
    finally:
        int8.close()
    return {"eval": reference.eval, **compare(reference.fp32, scores, tolerance, reference.split)}


def latency_medians(models: dict[str, tuple[Path, str]], batch: np.ndarray, threads: int | None,
                    blocks: int = 4) -> dict[str, float]:
    """Median ms of each (model file, CPU runtime), all measured in one alternating-block run
    (marsedge.timing), so machine load hits every candidate alike."""
    from marsedge.timing import alternating_medians

    opened = {k: _cpu_backend(Path(p), threads, runtime) for k, (p, runtime) in models.items()}
    try:
        fns = {k: (lambda b=b: b.infer(batch)) for k, b in opened.items()}
        return alternating_medians(fns, blocks=blocks)
    finally:
        for backend in opened.values():
            backend.close()


def format_report(record: dict) -> str:
    gate = record["gate"]
    key = gate.get("metric", "miou")
    label, per_class = HEADLINE[key], "IoU" if key == "miou" else "recall"
    agreement, agree_key = ("pixel agreement", "pixel_agreement") if key == "miou" else \
        ("top-1 agreement", "top1_agreement")
    lines = [f"{record.get('recipe', record['tool'])}: accuracy gate on {gate['eval']}:",
             f"  {label} FP32 {gate[f'{key}_fp32']:.4f}  INT8 {gate[f'{key}_int8']:.4f}  "
             f"drop {gate[f'{key}_drop']:+.4f} (tolerance {gate['tolerance']})",
             f"  {per_class} drop per class: " + ", ".join(
                 f"{k} {v:+.4f}" for k, v in gate[f"{per_class.lower()}_drop"].items() if v is not None),
             f"  {agreement} FP32 vs INT8: {gate[agree_key]:.4f} (information, not a verdict)",
             f"  {Int8Verdict.from_dict(gate['verdict']).line()}"]
    if "latency" in record:
        lat = record["latency"]
        verdict = "" if lat["passed"] else f"  SLOWER than --min-speedup {lat['min_speedup']}"
        runtime = record.get("runtime") or DEFAULT_CPU_RUNTIME
        where = f"{RUNTIMES[runtime].title if runtime in RUNTIMES else runtime} CPU"
        lines.append(f"latency ({where}, median): FP32 {lat['fp32_ms']:.1f} ms, INT8 "
                     f"{lat['int8_ms']:.1f} ms, {lat['speedup']:.2f}x{verdict}")
    if len(record.get("tried", [])) > 1:
        several = len({t.get("runtime") for t in record["tried"]}) > 1  # name each candidate's runtime
        lines.append("candidates: " + ", ".join(
            t["recipe"] + (f"@{t['runtime']} " if several else " ")
            + (f"{t['ms']:.1f} ms " if "ms" in t else "") + f"drop {t['drop']:+.4f}"
            + ("" if t["passed"] else " (failed)") for t in record["tried"]))
    return "\n".join(lines)
