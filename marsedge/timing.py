"""Comparative timing of a few callables on a small, shared CPU (torch-free, no runtime imported).

`marsedge quantize` (INT8 vs FP32 speed), `marsedge bench` and the benchmark scripts all compare
models with `alternating_medians`, so it lives below both `marsedge.edge` and `marsedge.bench`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def alternating_medians(fns: dict[str, Callable[[], object]], blocks: int = 4, per_block: int = 4,
                        clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median milliseconds of each callable, measured in alternating blocks.

    Each block runs one callable `per_block` times in a row after one untimed "settle" call, and
    the blocks cycle through the callables `blocks` times, so slow drifts of machine load hit
    every model alike. Not a strict round-robin of single calls: ONNX Runtime's and OpenMP's thread
    pools spin-wait for a while after a run, and on a small CPU the spinning threads of the model
    that just ran steal the cores of the next one (measured on 2 cores: the INT8 student looked
    65 ms round-robin and 39 ms alone). A rover runs one model at a time; so does this.
    """
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(blocks):
        for key, fn in fns.items():
            fn()  # settle: warm-up, and the previous model's threads stop spinning
            for _ in range(per_block):
                start = clock()
                fn()
                times[key].append(1000 * (clock() - start))
    return {key: float(np.median(v)) for key, v in times.items()}
