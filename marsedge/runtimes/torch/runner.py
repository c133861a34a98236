"""PyTorch eager on a marsedge checkpoint (.pt): the workstation's runner, where torch is installed.
torch and the model zoo are imported when a checkpoint is opened, never at import."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.edge.onnx_meta import ModelMetadata
from marsedge.errors import ModelError
from marsedge.io import sha256_file
from marsedge.runtimes.base import BaseBackend


class TorchBackend(BaseBackend):
    """PyTorch eager on a marsedge checkpoint (.pt); torch and the model zoo are imported lazily."""

    name = "torch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import torch

        from marsedge.models.checkpoints import load_model

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such checkpoint")
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.model, checkpoint = load_model(self.path, map_location="cpu")
        self.model.eval()
        self.model_metadata = ModelMetadata.from_checkpoint(checkpoint, self.path, sha256_file(self.path))

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(batch)).float().numpy()

    def close(self) -> None:
        self.model = None
