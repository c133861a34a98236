"""Is this teacher a teacher of this data? Checked before any distillation work.

A checkpoint written by train.py records the dataset it was trained on (`extra["dataset"]["root"]`,
resolved) beside its class table. Distilling a teacher of one tree onto another (the demo's teacher
onto your own frames, say) teaches the student the wrong thing without any error; so a teacher whose
recorded root or class table differs from the student's `data.root` and classes is refused, unless
`distill.allow_other_data=true` says it is meant. A teacher that records no dataset (an imported or
hand-made checkpoint) cannot be checked: a one-line note says so and distillation goes on.
"""

from __future__ import annotations

from pathlib import Path

from marsedge.errors import ConfigError
from marsedge.terrain import class_table

from .config import DistillConfig


def recorded_dataset(teacher: Path) -> tuple[dict, list[str]]:
    """(extra["dataset"] or {}, class names) of a checkpoint, read without loading its weights."""
    import pickle
    import zipfile

    import torch

    try:
        ckpt = torch.load(teacher, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"config key 'distill.teacher': {teacher} is not a readable checkpoint ({reason})"
                          ) from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"config key 'distill.teacher': {teacher} is not a marsedge checkpoint")
    names = [c.get("name") for c in ckpt.get("class_table") or []]
    return dict((ckpt.get("extra") or {}).get("dataset") or {}), names


def check_teacher_data(cfg: DistillConfig) -> None:
    """Refuse a missing teacher, or one trained on other data (unless distill.allow_other_data)."""
    teacher = Path(cfg.distill.teacher)
    if not teacher.is_file():
        raise ConfigError(f"config key 'distill.teacher': {teacher} does not exist (train the teacher "
                          "first, or give distill.teacher=PATH)")
    dataset, names = recorded_dataset(teacher)
    if not dataset.get("root"):
        print(f"note: {teacher} records no training dataset; cannot check it against data.root")
        return
    here = str(Path(cfg.data.root).resolve())
    student_names = [c["name"] for c in class_table(cfg.model.num_classes)]
    differs = []
    if dataset["root"] != here:
        differs.append(f"it was trained on {dataset['root']}, data.root is {here}")
    if names and names != student_names:
        differs.append(f"its classes {names} are not the student's {student_names}")
    if differs and not cfg.distill.allow_other_data:
        raise ConfigError(f"config key 'distill.teacher': {teacher} is not a teacher of this data ("
                          + "; ".join(differs) + "); set distill.allow_other_data=true to distil it anyway")
    if differs:
        print(f"note: distilling {teacher} onto other data (distill.allow_other_data): " + "; ".join(differs))
