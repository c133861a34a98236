"""The INT8 accuracy gate and the INT8-vs-FP32 latency check of `marsedge quantize`.

The FP32 model's decisions on a held-out labelled split are computed once (`gate_reference`) and
every INT8 candidate is scored against them (`accuracy_gate`): mIoU drop, per-class IoU drop and
pixel agreement, passed when the drop is within the tolerance (mIoU points).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsedge.data.preprocess import preprocess, resize_label
from marsedge.errors import DataError, MarsedgeError


class GateError(MarsedgeError):
    """The quantized model lost more accuracy than allowed."""


def predictions(backend, image: np.ndarray) -> np.ndarray:
    return backend.infer(preprocess(image, backend.spec)[None])[0].argmax(0).astype(np.uint8)


@dataclass
class GateReference:
    """The FP32 model's class decisions on the gate's labelled split, computed once however many
    INT8 candidates are judged against it."""

    eval: str  # "ROOT (SPLIT, N frames)"
    images: list[np.ndarray]
    labels: list[np.ndarray]  # resized (nearest) to the model input
    fp32: list[np.ndarray]  # FP32 argmax masks
    num_classes: int
    fp32_metrics: dict  # marsedge.metrics of the FP32 masks against the labels


def gate_reference(fp32_path: Path, eval_root: str, split: str, threads: int | None = None) -> GateReference:
    """Read the labelled split once and run the FP32 model over it through THE preprocessing."""
    from marsedge.data.ai4mars import AI4MarsDataset
    from marsedge.edge.backends import OnnxBackend
    from marsedge.metrics import ConfusionMatrix

    data = AI4MarsDataset(eval_root, split)
    if len(data) == 0:
        raise DataError(f"{eval_root}: evaluation split {split} is empty")
    fp32 = OnnxBackend(fp32_path, threads=threads, providers=["CPUExecutionProvider"])
    num_classes = len(fp32.model_metadata.class_table)
    cm32 = ConfusionMatrix(num_classes)
    images, labels, masks = [], [], []
    for sample in data:
        images.append(sample.image)
        labels.append(resize_label(sample.label, fp32.spec.height, fp32.spec.width))
        masks.append(predictions(fp32, sample.image))
        cm32.update(masks[-1], labels[-1])
    return GateReference(f"{eval_root} ({split}, {len(data)} frames)", images, labels, masks, num_classes,
                         cm32.compute())


def accuracy_gate(reference: GateReference, int8_path: Path, tolerance: float,
                  threads: int | None = None) -> dict:
    """The INT8 model on the reference's frames, scored like the FP32 one. Returns the gate record
    stored in the model metadata."""
    from marsedge.edge.backends import OnnxBackend
    from marsedge.metrics import ConfusionMatrix

    int8 = OnnxBackend(int8_path, threads=threads, providers=["CPUExecutionProvider"])
    cm8 = ConfusionMatrix(reference.num_classes)
    agree = total = 0
    for image, label, p32 in zip(reference.images, reference.labels, reference.fp32, strict=True):
        p8 = predictions(int8, image)
        cm8.update(p8, label)
        agree += int((p32 == p8).sum())
        total += p32.size
    m32, m8 = reference.fp32_metrics, cm8.compute()
    drop = {name: (None if m32["iou"][name] is None or m8["iou"][name] is None
                   else round(100 * (m32["iou"][name] - m8["iou"][name]), 3)) for name in m32["iou"]}
    miou_drop = 100 * (m32["miou"] - m8["miou"])
    return {
        "eval": reference.eval,
        "miou_fp32": round(100 * m32["miou"], 3), "miou_int8": round(100 * m8["miou"], 3),
        "miou_drop": round(miou_drop, 3), "iou_drop": drop,
        "pixel_agreement": round(agree / max(total, 1), 5),
        "tolerance": tolerance, "passed": bool(miou_drop <= tolerance),
    }


def latency_ratio(fp32_path: Path, int8_path: Path, batch: np.ndarray, threads: int | None,
                  blocks: int = 3) -> dict:
    """Median FP32 and INT8 latency, measured in alternating blocks (marsedge.bench.latency)."""
    from marsedge.bench.latency import alternating_medians
    from marsedge.edge.backends import OnnxBackend

    models = {"fp32": OnnxBackend(fp32_path, threads=threads, providers=["CPUExecutionProvider"]),
              "int8": OnnxBackend(int8_path, threads=threads, providers=["CPUExecutionProvider"])}
    ms = alternating_medians({k: (lambda b=b: b.infer(batch)) for k, b in models.items()}, blocks=blocks)
    return {"fp32_ms": round(ms["fp32"], 2), "int8_ms": round(ms["int8"], 2),
            "speedup": round(ms["fp32"] / ms["int8"], 3), "threads": threads}


def format_report(record: dict) -> str:
    gate = record["gate"]
    lines = [f"{record.get('recipe', record['tool'])}: accuracy gate on {gate['eval']}:",
             f"  mIoU FP32 {gate['miou_fp32']:.2f}  INT8 {gate['miou_int8']:.2f}  "
             f"drop {gate['miou_drop']:+.2f} points (tolerance {gate['tolerance']})",
             "  IoU drop per class: " + ", ".join(f"{k} {v:+.2f}" for k, v in gate["iou_drop"].items()
                                                 if v is not None),
             f"  pixel agreement FP32 vs INT8: {100 * gate['pixel_agreement']:.2f}%",
             f"  {'PASSED' if gate['passed'] else 'FAILED'}"]
    if "latency" in record:
        lat = record["latency"]
        verdict = "" if lat["speedup"] > 1.0 else "  WARNING: INT8 is not faster than FP32 here"
        lines.append(f"latency (ONNX Runtime CPU, median): FP32 {lat['fp32_ms']:.1f} ms, INT8 "
                     f"{lat['int8_ms']:.1f} ms, {lat['speedup']:.2f}x{verdict}")
    return "\n".join(lines)

