"""The runner contract every runtime's runner subclasses (as Polygraphy's BaseRunner), and the
thread split of concurrent streams.

    logits = runner.infer(batch)          # float32 N,C,H,W -> float32 N,K,H,W

Each runner exposes the model's own description (`.metadata`, `.spec`), so the caller preprocesses
frames exactly as training did without any other file, and the graph's shapes where its runtime
states them (`input_shape()`, `output_shape()`), so the model check at load needs no probe frame.
The runners themselves live in their runtimes' packages (`marsedge.runtimes.<name>.runner`);
`marsedge.runtimes.choice.open_backend` opens a model file with the right one.

Nothing here imports torch or any runtime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from marsedge.data.preprocess import PreprocessSpec
from marsedge.edge.onnx_meta import ModelMetadata
from marsedge.errors import ModelError


class Backend(Protocol):
    name: str
    precision: str
    metadata: dict
    spec: PreprocessSpec

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def input_shape(self) -> list[int | None] | None: ...

    def output_shape(self) -> list[int | None] | None: ...

    def close(self) -> None: ...


class BaseBackend:
    """What every backend shares, as Polygraphy's BaseRunner.infer / infer_impl: `infer` checks the
    input once against the model's own spec and splits a batch to the model's fixed batch, then
    calls the subclass's `infer_impl` with a C-contiguous float32 array of exactly that batch.

    A subclass's __init__ sets `self.path` (the model file, named by every error),
    `self.model_metadata` (a ModelMetadata), and, where they differ from the defaults,
    `self.precision` and `self.engine_batch` (the batch the graph/engine was built for; None: any).
    `metadata` and `spec` derive from `model_metadata`.
    """

    name = "base"
    precision = "fp32"
    engine_batch: int | None = None
    streams = 1  # frames `infer` may be called with at once, from as many threads (see `split_threads`)
    path: Path
    model_metadata: ModelMetadata

    @property
    def metadata(self) -> dict:
        return self.model_metadata.to_dict()

    @property
    def spec(self) -> PreprocessSpec:
        return self.model_metadata.preprocess

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 N,C,H,W (THE preprocessing's output) -> float32 logits N,K,H,W."""
        batch = self.check_input(batch)
        step = self.engine_batch
        if step is None or batch.shape[0] == step:
            return self.infer_impl(batch)
        outputs = []
        for start in range(0, batch.shape[0], step):  # a fixed-batch model still serves N frames
            chunk = batch[start:start + step]
            if chunk.shape[0] < step:  # the last, short chunk: padded, and the padding dropped
                pad = np.zeros((step - chunk.shape[0], *chunk.shape[1:]), np.float32)
                outputs.append(self.infer_impl(np.concatenate([chunk, pad]))[:chunk.shape[0]])
            else:
                outputs.append(self.infer_impl(np.ascontiguousarray(chunk)))
        return np.concatenate(outputs)

    def check_input(self, batch: np.ndarray) -> np.ndarray:
        """The one input check: a floating N,C,H,W array of the spec's size (a raw uint8 frame is
        the usual mistake: it must go through marsedge.data.preprocess first)."""
        spec = self.spec
        expected = (spec.channels, spec.height, spec.width)
        if not isinstance(batch, np.ndarray) or not np.issubdtype(batch.dtype, np.floating):
            kind = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ModelError(f"{self.path}: expects preprocessed float32 input "
                             f"(marsedge.data.preprocess), got {kind}")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected or batch.shape[0] == 0:
            shape = "x".join(map(str, expected))
            raise ModelError(f"{self.path}: expects N x {shape} input, got {batch.shape}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def input_shape(self) -> list[int | None] | None:
        """The graph's input shape (N,C,H,W; None for a dynamic dimension), or None where the
        runtime does not state it (then the model check infers one blank frame to learn the output)."""
        return None

    def output_shape(self) -> list[int | None] | None:
        """The graph's output shape, as `input_shape`."""
        return None

    def close(self) -> None:
        """Release the runtime's resources (idempotent)."""


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_streams(streams: int, path: str | Path) -> None:
    if streams < 1:
        raise ModelError(f"{path}: streams must be at least 1, got {streams}")


def streams_of(backend) -> int:
    """How many `infer` calls a backend takes at once (1 for a backend that does not say)."""
    return max(1, int(getattr(backend, "streams", 1)))


def split_threads(threads: int | None, streams: int, path: Path) -> int | None:
    """The threads of one stream when `streams` frames run at once: the cores divided between them
    (`threads`, else all of them), at least one each. A frame on one thread never waits at a
    barrier for a sibling thread that another stage preempted, which is why two streams of one
    thread keep the speed of the 2-core machine under load better than one stream of two."""
    check_streams(streams, path)
    if streams == 1:
        return threads
    return max(1, (threads or available_cores()) // streams)


def one_stream(name: str, path: Path, streams: int) -> None:
    """Refuse `streams` > 1 for a runtime that runs one frame at a time (a GPU runtime, torch)."""
    if streams != 1:
        from marsedge.runtimes.registry import RUNTIMES

        cpu = ", ".join(r.name for r in RUNTIMES.values() if r.cpu_streams)
        raise ModelError(f"{path}: the {name} backend runs one frame at a time (streams {streams} asked); "
                         f"streams are for the CPU runtimes, {cpu}")
