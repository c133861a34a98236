"""Checkpoint history (`run.keep_checkpoints: N`): after each completed epoch, last.pt is also kept as
`epoch_XXX.pt` (1-based epoch, atomic copy), and epoch files beyond the newest N are removed. last.pt
and best.pt are never touched here. A resume from any kept file continues exactly, like last.pt."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from marsedge.io import atomic_write

_EPOCH_FILE = re.compile(r"epoch_(\d{3,})\.pt")


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """The run's epoch_XXX.pt files, oldest epoch first."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("epoch_*.pt") if (m := _EPOCH_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def keep_epoch(run_dir: Path, epoch: int, keep: int) -> Path | None:
    """Copy last.pt to epoch_{epoch:03d}.pt and remove the epoch files beyond the newest `keep`."""
    if keep <= 0:
        return None
    kept = atomic_write(run_dir / f"epoch_{epoch:03d}.pt",
                        lambda tmp: shutil.copyfile(run_dir / "last.pt", tmp))
    for old in epoch_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return kept
