"""What a run prints while it trains (rank 0 only; `run.progress: false` silences it).

On a terminal (stdout is a TTY), a tqdm bar per epoch with the epoch's ETA, and the run's ETA,
loss and learning rate beside it. Anywhere else (a pipe, `> train.log`, nohup, tmux logging, a
SLURM output file) a plain, flushed line every `run.log_every` optimiser steps:

    [demo_teacher] step 120/864 epoch 4/24 | loss 0.8123 | lr 3.98e-03 | 41.2 img/s | data 3% | ETA 5m12s

(loss terms are the window's means over ranks; img/s counts every rank's images; `data` is the
share of the window's time spent waiting for the loader; the ETA covers the whole run, evaluations
included; on CUDA, `mem` is the peak memory allocated on this process's device). And on both, one
line per evaluation:

    [demo_teacher] eval epoch 4/24 step 120: val miou 0.4123 (ema 0.4201) | rarest: big rock 0.1200,
        rover 0.3100 | best 0.4201 at epoch 4 (ema) | best.pt written

`rarest` is the per-class IoU (recall for classifiers) of the two classes with the fewest val
pixels (images), the ones a mean hides.
"""

from __future__ import annotations

import math
import sys

RARE = 2  # classes shown in the evaluation line


def duration(seconds: float | None) -> str:
    """4h05m, 5m12s or 42s."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _number(value: float) -> str:
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3e}"


def train_line(name: str, step: int, total: int, epoch: int, epochs: int, means: dict[str, float], lr: float,
               images_per_s: float, wait_share: float, eta: float | None, peak_gib: float | None) -> str:
    terms = " ".join(f"{k} {_number(v)}" for k, v in means.items())
    line = (f"[{name}] step {step}/{total} epoch {epoch}/{epochs} | {terms} | lr {lr:.2e} | "
            f"{images_per_s:.1f} img/s | data {100 * wait_share:.0f}% | ETA {duration(eta)}")
    return line + (f" | mem {peak_gib:.2f} GiB" if peak_gib is not None else "")


def _split_metrics(record: dict, prefix: str) -> tuple[dict | None, list | dict | None]:
    """(per-class values, counts) of the val split in an evaluation record: IoU and the confusion
    matrix for segmentation, recall and support for classification."""
    for per_class, counts in (("iou", "confusion"), ("recall", "support")):
        for split in ("val/", ""):
            values = record.get(f"{prefix}{split}{per_class}")
            if isinstance(values, dict):
                return values, record.get(f"{prefix}{split}{counts}")
    return None, None


def rarest(record: dict, prefix: str = "", n: int = RARE) -> list[tuple[str, float | None]]:
    """The per-class values of the `n` classes with the fewest (non-zero) val pixels or images."""
    values, counts = _split_metrics(record, prefix)
    if values is None or counts is None:
        return []
    names = list(values)
    totals = [sum(row) for row in counts] if isinstance(counts, list) else [counts.get(c, 0) for c in names]
    present = sorted((t, i) for i, t in enumerate(totals[: len(names)]) if t > 0)
    return [(names[i], values[names[i]]) for _, i in present[:n]]


def eval_line(name: str, epoch: int, epochs: int, step: int, metric: str, record: dict, weights: str,
              best: tuple[float | None, int, str | None], written: bool | None) -> str:
    """`best`: (value, epoch, which weights or None without run.ema) of best.pt so far; `written`:
    whether this evaluation wrote best.pt (None: the evaluation selects nothing)."""
    value = record.get(metric)
    label = f"probe {metric}" if "probe_train_pixels" in record else metric  # pretraining's feature probe
    shown = f"val {label} {_number(value)}" if isinstance(value, float) else f"val {label} ?"
    if isinstance(record.get(f"ema/{metric}"), float):
        shown += f" (ema {_number(record[f'ema/{metric}'])})"
    parts = [shown]
    rare = rarest(record, "ema/" if weights == "ema" else "")
    if rare:
        parts.append("rarest: " + ", ".join(f"{c} {'n/a' if v is None else f'{v:.4f}'}" for c, v in rare))
    best_value, best_epoch, best_weights = best
    if best_value is not None:
        parts.append(f"best {_number(best_value)} at epoch {best_epoch}"
                     + (f" ({best_weights})" if best_weights else ""))
    if written is not None:
        parts.append("best.pt written" if written else "best.pt kept")
    return f"[{name}] eval epoch {epoch}/{epochs} step {step}: " + " | ".join(parts)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def bar(total: int, initial: int, desc: str):
    """The epoch's tqdm bar on stdout (a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, file=sys.stdout)


def say(line: str, with_bar: bool) -> None:
    """Print a line now (flushed: a pipe is block-buffered), above a bar when one is showing."""
    if with_bar:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)
    else:
        print(line, flush=True)
