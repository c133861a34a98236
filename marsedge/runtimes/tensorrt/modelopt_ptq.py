"""nvidia-modelopt ONNX PTQ in a child process (the quantizer of `marsedge.runtimes.tensorrt.quantize`).

    python -m marsedge.runtimes.tensorrt.modelopt_ptq JOB.json RESULT.json

Why a child: modelopt patches ONNX Runtime's quantization for the whole process
(modelopt.onnx.quantization.ort_patching replaces methods of ORT's calibrators and quantizers, and
ort_utils.configure_ort deletes Concat, Relu, Transpose... from ORT's QOperator/QDQ registries). A
later `--target cpu` quantization in the same process would then crash inside ORT's QLinearConv
quantizer, or silently leave Concat in float. A child process takes the patches with it when it
exits; nothing has to be put back.

The parent reads and preprocesses the calibration frames once (`calibration.load_frames`, which
names and skips corrupt ones) and hands the child one .npy of them; the child calibrates through
the same `frame_reader` as the CPU target. modelopt's `calibrate_per_node` (calibrate node by node:
bounded memory, but about a minute per frame at 512 px on 2 cores) is on only when asked
(`--per-node`); whole-model calibration of 64 frames at 512 px fits in a few GiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from marsedge.data.preprocess import PreprocessSpec
from marsedge.deploy.calibration import CalibrationSet
from marsedge.errors import ModelError


def quantize_in_child(src: Path, dst: Path, calib: CalibrationSet, spec: PreprocessSpec, input_name: str,
                      method: str, dla: bool, per_node: bool = False) -> None:
    """Run modelopt's INT8 PTQ of `src` into `dst` in a fresh Python process, on the preprocessed
    calibration frames. A failure is one ModelError line naming the model."""
    import numpy as np

    from marsedge.deploy.calibration import load_frames

    frames = load_frames(calib, spec)
    with tempfile.TemporaryDirectory(prefix="marsedge-modelopt-") as tmp:
        job, result, data = Path(tmp) / "job.json", Path(tmp) / "result.json", Path(tmp) / "frames.npy"
        np.save(data, np.stack(frames))
        job.write_text(json.dumps({"src": str(src), "dst": str(dst), "source": calib.source,
                                   "frames": str(data), "input_name": input_name, "method": method,
                                   "dla": dla, "per_node": per_node}))
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[3])  # works from a source tree too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        child = [sys.executable, "-m", "marsedge.runtimes.tensorrt.modelopt_ptq", str(job), str(result)]
        done = subprocess.run(child, env=env, check=False)
        answer = json.loads(result.read_text()) if result.is_file() else {}
    if answer.get("error") or done.returncode != 0 or not dst.is_file():
        reason = answer.get("error") or f"the modelopt process exited with code {done.returncode}"
        raise ModelError(f"{src}: modelopt INT8 quantization failed: {reason}")


def _child(job: dict) -> None:
    import numpy as np
    from modelopt.onnx.quantization import quantize

    from marsedge.deploy.calibration import frame_reader

    frames = np.load(job["frames"])
    calib = CalibrationSet(job["source"], [], frames=[f for f in frames])
    spec = PreprocessSpec(*frames.shape[-2:], channels=frames.shape[-3])  # (the frames are preprocessed)
    reader = frame_reader(calib, spec, job["input_name"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize(job["src"], quantize_mode="int8", calibration_data_reader=reader,
                 calibration_method=job["method"], calibration_eps=["cpu"], output_path=job["dst"],
                 high_precision_dtype="fp32", target_dla=job["dla"], log_level="WARNING",
                 calibrate_per_node=job["per_node"])


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    try:
        _child(json.loads(Path(job_path).read_text()))
        answer = {}
    except Exception as exc:  # reported to the parent as one line; the traceback goes to stderr
        traceback.print_exc()
        answer = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    Path(result_path).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
