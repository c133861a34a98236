"""PyTorch eager on a checkpoint (.pt), one frame at a time: the workstation's reference runner
(`marsedge bench` compares the exported files against it). The one runtime package that imports
torch and the model zoo, inside its runner's __init__, so the rover never needs them."""

from __future__ import annotations

from pathlib import Path

from marsedge.runtimes.registry import OpenOptions, Runtime, register_runtime


def _open(path: Path, options: OpenOptions):
    from marsedge.runtimes.base import one_stream
    from marsedge.runtimes.torch.runner import TorchBackend

    one_stream("torch", path, options.streams)
    return TorchBackend(path, threads=options.threads)


register_runtime(Runtime("torch", "PyTorch", "torch", _open, install="pip install torch",
                         suffixes=(".pt", ".pth")))
