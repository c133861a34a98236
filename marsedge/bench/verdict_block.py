"""The report's verdict on the student, first thing under the title.

- Teacher against student: of the architectures benched, the one with the most parameters is the
  teacher and the one with the fewest the student. mIoU kept is the student's FP32 mIoU as a
  fraction of the teacher's; the speed-up is the ratio of their end-to-end p50s at FP32 on the
  same backend (like for like; bench exports a `.pt` teacher to ONNX so ONNX Runtime has both).
- INT8 against FP32: the one INT8 verdict (marsedge.edge.verdict) quantize recorded in the file,
  and the same rule on this run's split (pixel agreement stays an information column).
- A warning for every model below the split's intensity-only baseline (marsedge.bench.baseline).
Accuracy is a fraction (0-1), as everywhere in marsedge.
"""

from __future__ import annotations

import json

from marsedge.edge.verdict import Int8Verdict


def _architectures(rows: list[dict]) -> list[list[dict]]:
    """Scored rows grouped by model_config, fewest parameters first."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("accuracy") and row.get("model_config") and row.get("params"):
            groups.setdefault(json.dumps(row["model_config"], sort_keys=True), []).append(row)
    return sorted(groups.values(), key=lambda g: g[0]["params"])


def _fp32_pair(student: list[dict], teacher: list[dict]) -> tuple[dict, dict, bool]:
    """(student row, teacher row, same backend): FP32 rows on one backend where there is one, ONNX
    Runtime (or any rover runtime) before PyTorch."""
    def fp32_rover_first(rows: list[dict]) -> list[dict]:  # the runtime the rover runs before PyTorch
        fp32 = [r for r in rows if r.get("precision") == "fp32"] or rows
        return sorted(fp32, key=lambda r: r.get("backend") == "torch")

    s32, t32 = fp32_rover_first(student), fp32_rover_first(teacher)
    for s in s32:
        for t in t32:
            if s.get("backend") == t.get("backend") and s.get("latency") and t.get("latency"):
                return s, t, True
    return s32[0], t32[0], False


def teacher_student_lines(rows: list[dict]) -> list[str]:
    groups = _architectures(rows)
    if len(groups) < 2:
        return ["Teacher against student: one architecture benched, nothing to compare (bench the "
                "teacher's checkpoint beside the student's files)."]
    student, teacher, same = _fp32_pair(groups[0], groups[-1])
    sm, tm = student["accuracy"]["metrics"]["miou"], teacher["accuracy"]["metrics"]["miou"]
    kept = f"{sm / tm:.2f} of the teacher's" if tm and tm == tm else "– (teacher mIoU 0)"
    lines = [f"Student {student['id']} keeps {kept} mIoU: {sm:.4f} against teacher {teacher['id']} "
             f"{tm:.4f} ({student['params'] / 1e6:.2f} M against {teacher['params'] / 1e6:.2f} M "
             "parameters)."]
    if same:
        ratio = teacher["latency"]["end_to_end"]["p50"] / student["latency"]["end_to_end"]["p50"]
        lines.append(f"Student speed-up over the teacher, like for like ({student['backend']} "
                     f"{student.get('precision')}, end-to-end p50): {ratio:.2f}x.")
    else:
        lines.append("No like-for-like speed-up: the teacher and the student were not both timed on one "
                     "backend at FP32 (bench exports a .pt teacher to ONNX unless --no-export).")
    return lines


def int8_lines(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        judged = row.get("int8_verdict")
        if not judged:
            continue
        quantize = judged.get("quantize")
        said = (f"quantize: {Int8Verdict.from_dict(quantize).line()}" if quantize
                else "quantize recorded no verdict in this file")
        bench = Int8Verdict.from_dict(judged["bench"]).line()
        lines.append(f"{row['id']}: {said}; the same rule on this split against {judged['reference']}: "
                     f"{bench}.")
    return lines or ["INT8 against FP32: no INT8 row with its FP32 model in this run."]


def baseline_lines(rows: list[dict], baseline: dict | None) -> list[str]:
    if not baseline:
        return []
    lines = [f"Intensity-only baseline of this split (the best grey-level -> class lookup): mIoU "
             f"{baseline['miou']:.4f}, pixel accuracy {baseline['pixel_accuracy']:.4f}."]
    below = []
    for row in rows:
        metrics = (row.get("accuracy") or {}).get("metrics") or {}
        under = [name for name, key in (("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"))
                 if key in metrics and metrics[key] < baseline[key]]
        if under:
            below.append(f"{row['id']} ({', '.join(under)})")
    if below:
        lines.append("WARNING: below the intensity-only baseline, segmenting worse than brightness alone "
                     "(train longer, or check the data): " + "; ".join(below) + ".")
    return lines


def verdict_blocks(run: dict) -> list[tuple]:
    """The report's "Verdict" section (segmentation runs; a classifier run gets none)."""
    rows = run["models"]
    if not any("miou" in ((r.get("accuracy") or {}).get("metrics") or {}) for r in rows):
        return []
    items = teacher_student_lines(rows) + int8_lines(rows) + baseline_lines(
        rows, run["dataset"].get("intensity_baseline"))
    return [("h2", "Verdict"), ("list", items)]
