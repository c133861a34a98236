"""Checkpoint -> ONNX that describes itself and has been checked against PyTorch.

    marsedge export runs/student/best.pt -o student.onnx --size 512 --frames data/msl/images/edr

1. rebuild the network from the checkpoint (`marsedge.models.load_model`), eval mode; a training
   checkpoint that carries a moving average of the weights (`run.ema`: last.pt, epoch_XXX.pt) is
   exported with the average (said in a note); best.pt holds the weights selected on val, the
   average or not (its `selected_on["weights"]`), and is exported as it is;
2. export a static 1xCxHxW graph (optionally a dynamic batch axis) with the TorchScript exporter:
   BatchNorm is folded into the convolutions, giving the plain Conv/Relu/Resize graph that the
   runtimes' INT8 kernels fuse;
3. `onnx.checker`, then onnxslim simplification, kept only when the simplified graph still passes
   the checker and the verification below (otherwise the plain export is written);
4. metadata_props: class table, THE preprocessing spec (at the exported size; every field, so
   `channels`, `colour_to_grey` and `bit_depth_mapping` reach the edge as training used them; a
   checkpoint whose spec's channels differ from the network's `in_channels` is refused), model
   config and the checkpoint's sha256, so the rover needs nothing but this file. `size` other than the
   trained size is a stated choice: printed, and the trained size kept as `marsedge.trained_size`;
5. verification: frames through THE preprocessing, ONNX Runtime vs PyTorch; max abs logit error and
   argmax agreement are printed and stored, and an agreement under 99.9% fails the export.

Workstation code (it imports torch). The result is written atomically and, unless `overwrite`, never
onto a file that appeared at OUT while the export ran.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.onnx_meta import ModelMetadata, set_props
from marsedge.errors import ModelError
from marsedge.io import atomic_write_bytes, sha256_file

MIN_AGREEMENT = 0.999
DEFAULT_OPSET = 17


@dataclass
class Verification:
    frames: int
    source: str
    max_abs_error: float
    argmax_agreement: float

    def __str__(self) -> str:
        return (f"ONNX Runtime vs PyTorch on {self.frames} {self.source} frames: max |logit error| "
                f"{self.max_abs_error:.2e}, argmax agreement {100 * self.argmax_agreement:.3f}%")


def verification_frames(frames_uri: str | None, n: int, spec: PreprocessSpec) -> tuple[np.ndarray, str]:
    """Up to n frames through THE preprocessing: from `frames_uri` when given, else procedural
    NAVCAM scenes (real terrain structure, never random noise)."""
    if frames_uri:
        from marsedge.data.frames import list_frames, read_frame

        paths = list(itertools.islice(list_frames(frames_uri), n))
        if not paths:
            raise ModelError(f"no frames found at {frames_uri} to verify the export on")
        return np.stack([preprocess(read_frame(p), spec) for p in paths]), "real"
    from marsedge.synthetic.scene import LOOKS, render_scene

    rng = np.random.default_rng(0)
    images = [render_scene(rng, spec.height, spec.width, LOOKS["msl"]).image for _ in range(n)]
    return np.stack([preprocess(im, spec) for im in images]), "procedural NAVCAM"


def verify(onnx_bytes: bytes, model, batch: np.ndarray, source: str) -> Verification:
    """Run both runtimes frame by frame and compare logits and class decisions."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    max_err, agree, total = 0.0, 0, 0
    with torch.inference_mode():
        for x in batch:
            ref = model(torch.from_numpy(x[None])).numpy()
            out = session.run(None, {name: x[None]})[0]
            max_err = max(max_err, float(np.abs(ref - out).max()))
            agree += int((ref.argmax(1) == out.argmax(1)).sum())
            total += ref.argmax(1).size  # pixels of a segmentation, images of a classifier
    return Verification(len(batch), source, max_err, agree / max(total, 1))


def averaged_weights(extra: dict) -> dict | None:
    """The moving average of the weights a training checkpoint carries (marsedge.train.engine.ema),
    unless the checkpoint's own weights are a selection (best.pt, student.pt: `selected_on`)."""
    if "selected_on" in (extra or {}):
        return None
    return ((extra or {}).get("train") or {}).get("ema", {}).get("weights")


def _simplify(model):
    import onnxslim

    return onnxslim.slim(model)


def export(checkpoint: str | Path, out: str | Path | None = None, size: int | None = None,
           opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, frames: str | None = None,
           verify_frames: int = 8, simplify: bool = True,
           overwrite: bool = False) -> tuple[Path, Verification]:
    """Export, check, annotate and verify; returns the ONNX path and the verification result."""
    import onnx
    import torch

    from marsedge.models.checkpoints import load_model

    checkpoint = Path(checkpoint)
    model, ckpt = load_model(checkpoint)
    average = averaged_weights(ckpt.extra)
    if average is not None:
        model.load_state_dict(average)
        print(f"note: exporting the moving average of the weights (run.ema) that {checkpoint.name} holds")
    meta = ModelMetadata.from_checkpoint(ckpt, checkpoint, sha256_file(checkpoint))
    if size and (int(size), int(size)) != meta.preprocess.size:
        meta.trained_size = list(meta.preprocess.size)
        meta.preprocess = replace(meta.preprocess, height=int(size), width=int(size))
        print(f"note: exporting at {size}x{size}; {checkpoint.name} was trained at "
              f"{meta.trained_size[0]}x{meta.trained_size[1]} (recorded as marsedge.trained_size)")
    spec = meta.preprocess
    out = Path(out) if out else checkpoint.with_suffix(".onnx")
    out.parent.mkdir(parents=True, exist_ok=True)  # -o into a folder that does not exist yet

    dummy = torch.zeros(1, spec.channels, spec.height, spec.width)
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".raw")  # one per export
    os.close(fd)
    tmp = Path(name)
    try:
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["image"], output_names=["logits"],
                          opset_version=int(opset), dynamic_axes=axes, do_constant_folding=True,
                          dynamo=False)
        graph = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    onnx.checker.check_model(graph, full_check=True)
    set_props(graph, meta.to_props())

    batch, source = verification_frames(frames, verify_frames, spec)
    candidates = [graph]
    if simplify:
        try:
            slim = _simplify(graph)
            onnx.checker.check_model(slim, full_check=True)
            set_props(slim, meta.to_props())
            candidates.insert(0, slim)
        except Exception as exc:  # onnxslim raises whatever its passes raise; the plain graph remains
            print(f"simplification skipped: {type(exc).__name__}: {exc}")
    for candidate in candidates:
        data = candidate.SerializeToString()
        result = verify(data, model, batch, source)
        if result.argmax_agreement >= MIN_AGREEMENT:
            break
    print(result)
    if result.argmax_agreement < MIN_AGREEMENT:
        raise ModelError(f"{checkpoint}: exported ONNX disagrees with PyTorch on "
                         f"{100 * (1 - result.argmax_agreement):.3f}% of pixels or images (limit "
                         f"{100 * (1 - MIN_AGREEMENT):.1f}%); not written")
    atomic_write_bytes(out, data, replace=overwrite)
    return out, result
