"""Model checks at load: what a model file says about itself must agree with its graph.

A model whose metadata class table is shorter than its output channels runs, and its class
fractions and hazards are silently wrong (the rover drives on them); a metadata input size that
differs from the graph fails on every frame. Both are refused when the model is opened, with one
line naming the file and the mismatch, before any frame is read or any output written.

The shapes come from the graph where the runner states them (`input_shape()`, `output_shape()` of
`marsedge.runtimes.base.BaseBackend`); otherwise (a runtime that does not, dynamic dimensions) the
output's from one probe inference on a blank frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.errors import ModelError


def _graph_shapes(backend) -> tuple[list | None, list | None]:
    """The runner's input and output shapes; (None, None) from a runner that states none."""
    if not hasattr(backend, "input_shape"):  # not a BaseBackend (a stand-in)
        return None, None
    return backend.input_shape(), backend.output_shape()


def _known(shape: list | None, rank: int = 4) -> bool:
    return shape is not None and len(shape) == rank and all(isinstance(d, int) and d > 0 for d in shape[1:])


def check_model(backend, path: str | Path) -> None:
    """Raise ModelError when the class table, the preprocessing spec and the graph disagree."""
    spec, table = backend.spec, backend.metadata.get("class_table") or []
    ids = [c.get("id") for c in table if isinstance(c, dict)]
    if len(ids) != len(table) or sorted(ids) != list(range(len(table))):
        raise ModelError(f"{path}: metadata class table ids {ids} are not 0..{len(table) - 1}")
    expected = [spec.channels, spec.height, spec.width]
    classifier = (backend.metadata.get("model_config") or {}).get("head") == "classifier"
    inp, out = _graph_shapes(backend)
    if _known(inp) and inp[1:] != expected:
        raise ModelError(f"{path}: metadata input {'x'.join(map(str, expected))} (CxHxW) but the graph takes "
                         f"{'x'.join(map(str, inp[1:]))}")
    if not (_known(inp) and _known(out, 2 if classifier else 4)):
        try:
            out = list(np.shape(backend.infer(np.zeros((1, *expected), np.float32))))
        except ModelError:
            raise
        except Exception as exc:  # any runtime error: the model cannot run its own input
            raise ModelError(f"{path}: a blank {'x'.join(map(str, expected))} frame, the metadata's own "
                             f"input size, fails: {type(exc).__name__}: {str(exc)[:200]}") from None
    if len(out) != (2 if classifier else 4):
        expected_out = "N x classes (an image classifier)" if classifier else "N x classes x H x W"
        raise ModelError(f"{path}: output has shape {out}, expected {expected_out}")
    if isinstance(out[1], int) and out[1] != len(table):
        raise ModelError(f"{path}: metadata class table has {len(table)} classes but the graph outputs "
                         f"{out[1]} channels")
