"""Calibration frames for INT8 quantization: real frames, enough of them, none from the gate's split.

- Calibration data are real frames (a folder, a glob, or an AI4Mars split) through THE
  preprocessing; never random tensors. Fewer than `min_frames` (32) is refused, fewer than
  `WARN_FRAMES` warned about, and a calibration frame that is also in the evaluation split is
  refused (by name and by content).
- The frames are read and preprocessed once (`load_frames`, a progress bar with ETA) and every
  candidate of `marsedge quantize` calibrates on those arrays: reading and resizing 1024 px JPEGs
  was paid once per recipe before. A corrupt frame is named and skipped there.
- `frame_reader` is the ONNX Runtime CalibrationDataReader both quantizers use (modelopt takes the
  same reader): one preprocessed frame at a time, strided.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.errors import DataError, ModelError
from marsedge.io import sha256_file

WARN_FRAMES = 64  # fewer calibration frames than this are warned about (quantize's default --n)


@dataclass
class CalibrationSet:
    source: str
    paths: list[Path]
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable frames, one "path: reason" each
    frames: list[np.ndarray] | None = None  # preprocessed 1xCxHxW arrays, once load_frames has run
    read: list[Path] = field(default_factory=list)  # the file of each of `frames`

    @property
    def usable(self) -> int:
        """Frames the calibration could read (known once load_frames has run)."""
        return len(self.frames) if self.frames is not None else len(self.paths) - len(self.skipped)


def is_ai4mars(root: Path) -> bool:
    """An AI4Mars release root (its mission folders), as opposed to a folder or glob of frames."""
    return root.is_dir() and ((root / "msl").is_dir() or (root / "m2020").is_dir())


def is_labelled_root(root: Path) -> bool:
    """A tree with labelled splits: an AI4Mars release or an MSL surface classification release."""
    from marsedge.data.msl_surface import is_msl_surface

    return is_ai4mars(root) or (root.is_dir() and is_msl_surface(root))


def calibration_set(uri: str, n: int, min_frames: int, split: str = "train", seed: int = 0) -> CalibrationSet:
    """Up to n real frames from a folder/glob or a labelled split, spread evenly (seeded) over it.
    An MSL surface release publishes its val split apart from train, so there `train-val` (train
    without the carved val, in AI4Mars terms) is its train split."""
    root = Path(uri)
    if is_labelled_root(root):
        from marsedge.data.labelled import open_labelled
        from marsedge.data.msl_surface import is_msl_surface

        if split == "train-val" and is_msl_surface(root):
            split = "train"
        items = open_labelled(root, split).items
        paths, source = [it.image for it in items], f"{root} ({split})"
    else:
        from marsedge.data.inputs import frame_files

        paths, source = frame_files(uri), str(uri)
    if len(paths) > n:
        pick = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
        paths = [paths[i] for i in pick]
    if len(paths) < min_frames:
        raise DataError(f"{uri}: {len(paths)} calibration frames, at least {min_frames} are required "
                        "(calibrating on too few frames clips real activations)")
    if len(paths) < WARN_FRAMES:
        warnings.warn(f"calibrating on {len(paths)} frames from {uri}; {WARN_FRAMES}+ recommended",
                      stacklevel=2)
    return CalibrationSet(source, list(paths), [Path(p).stem for p in paths])


def check_disjoint(calib: CalibrationSet, eval_paths: list[Path]) -> None:
    """Refuse calibration frames that are also evaluation frames (the gate would flatter INT8),
    by product name and by content (a renamed copy of a gold frame is still a gold frame)."""
    eval_names = {Path(p).stem for p in eval_paths}
    overlap = sorted(set(calib.names) & eval_names)
    if not overlap:
        eval_hashes = {sha256_file(p): Path(p).stem for p in eval_paths}
        overlap = sorted(f"{Path(p).stem} (same content as {eval_hashes[h]})" for p in calib.paths
                         if (h := sha256_file(p)) in eval_hashes)
    if overlap:
        raise DataError(f"{len(overlap)} calibration frame(s) are in the evaluation split, e.g. "
                        f"{overlap[0]}; calibrate on a disjoint split")


def load_frames(calib: CalibrationSet, spec: PreprocessSpec, progress: bool = True) -> list[np.ndarray]:
    """Read and preprocess every calibration frame once (idempotent); a corrupt frame is named in
    `calib.skipped`, warned about and left out, as edge-run does."""
    if calib.frames is not None:
        return calib.frames
    from tqdm import tqdm

    from marsedge.data.frames import read_frame

    frames = []
    for path in tqdm(calib.paths, desc="calibration frames", unit="frame", disable=not progress,
                     leave=False):
        try:
            frames.append(preprocess(read_frame(path), spec)[None])
            calib.read.append(Path(path))
        except DataError as exc:
            calib.skipped.append(str(exc))
    if calib.skipped and not frames:  # one error, not a warning per frame
        raise DataError(f"{calib.source}: none of the {len(calib.paths)} calibration frames could be read "
                        f"(first: {calib.skipped[0]})")
    if calib.skipped:
        more = f" (and {len(calib.skipped) - 1} more)" if len(calib.skipped) > 1 else ""
        warnings.warn(f"calibration frame skipped: {calib.skipped[0]}{more}", stacklevel=2)
    calib.frames = frames
    return frames


def check_finite_outputs(model: Path, calib: CalibrationSet, input_name: str, threads: int | None,
                         first: int | None = None) -> None:
    """The FP32 model's outputs on the calibration frames (the `first` few, or all) are finite: a
    model that gives NaN or Inf cannot be calibrated, and is refused naming the first such frame."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for path, frame in list(zip(calib.read, calib.frames, strict=True))[:first]:
        outputs = session.run(None, {input_name: frame})
        if not all(np.isfinite(out).all() for out in outputs):
            raise ModelError(f"{model}: the model's outputs are not finite (NaN or Inf) on calibration "
                             f"frame {path}; it cannot be quantized")


def frame_reader(calib: CalibrationSet, spec: PreprocessSpec, input_name: str, progress: bool = True):
    """An onnxruntime CalibrationDataReader over the preprocessed frames (`load_frames`).

    It also supports ONNX Runtime's strided calibration (`__len__` + `set_range`): the calibrator
    then holds the activations of one stride (a few frames) at a time and merges ranges/histograms
    stride by stride, instead of every intermediate tensor of every frame (the MobileNetV2 student
    at 512x512 needs ~0.45 GiB a frame: 500 frames would need ~200 GiB). The progress bar counts
    the frames the calibrator has run (a pass takes ~0.5 s a frame at 512 px on 2 cores)."""
    from onnxruntime.quantization import CalibrationDataReader
    from tqdm import tqdm

    frames = load_frames(calib, spec, progress)

    class FrameReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.bar = None
            self.set_range(0, len(frames))

        def __len__(self) -> int:
            return len(frames)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.frames = iter(frames[start_index:end_index])

        def get_next(self) -> dict | None:
            frame = next(self.frames, None)
            if frame is None:
                return None
            if self.bar is None or self.bar.n >= len(frames):  # a new calibration pass
                self.bar = tqdm(total=len(frames), desc="calibrating", unit="frame", disable=not progress,
                                leave=False)
            self.bar.update(1)
            return {input_name: frame}

        def rewind(self) -> None:
            self.set_range(0, len(frames))

    return FrameReader()


def calibration_stride(n: int, most: int = 4) -> int:
    """The largest divisor of n not above `most` (ONNX Runtime wants strides that divide n)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def check_usable(calib: CalibrationSet, min_frames: int) -> None:
    """After load_frames (which names the unreadable frames): enough were read?"""
    if calib.usable < min_frames:
        raise DataError(f"{calib.source}: {len(calib.skipped)} unreadable calibration frames leave fewer "
                        f"than {min_frames}")
