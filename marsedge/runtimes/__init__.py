"""The inference runtimes, one package each, registered once in `marsedge.runtimes.registry`:

    marsedge/runtimes/onnxruntime/   ONNX Runtime: .onnx (the default), its INT8 recipes and quantizer
    marsedge/runtimes/openvino/      OpenVINO's CPU plugin: .onnx (QDQ INT8) and IR .xml
    marsedge/runtimes/tensorrt/      TensorRT: the engine builder and its sidecar (loaders), the runner
    marsedge/runtimes/torch/         PyTorch eager on a checkpoint (.pt), where torch is installed

`base` is the runner contract every runtime's runner subclasses, `choice` opens a model file on the
runtime it names (`open_backend`), `model_check` checks a file's metadata against its graph at load.
A runtime outside marsedge registers the same way from its own module, named in the environment
variable MARSEDGE_RUNTIMES (comma-separated module names, imported after the built-in ones), so
child processes (`marsedge bench` runs each model in one) know it too.

The runtimes' packages are named after the libraries they wrap; marsedge imports absolutely, so
`import openvino` inside `marsedge.runtimes.openvino` is the library.
"""

import importlib
import os
import warnings

from marsedge.runtimes import onnxruntime, openvino, tensorrt, torch  # noqa: F401  (each registers itself)
from marsedge.runtimes.registry import (  # noqa: F401  (the registry's public names)
    AUTO,
    DEFAULT_CPU_RUNTIME,
    RUNTIMES,
    OpenOptions,
    Runtime,
    backend_names,
    cpu_quantize_runtimes,
    known_suffixes,
    register_runtime,
    runtime_for_suffix,
)

PLUGINS_VARIABLE = "MARSEDGE_RUNTIMES"


def _import_plugins() -> None:
    """Import the runtime modules MARSEDGE_RUNTIMES names. One that cannot be imported is said in one
    warning line (its runtime is then unknown: asking for it is the usual one-line error), so a
    stale variable never stops the runtimes that are there."""
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            warnings.warn(f"{PLUGINS_VARIABLE}: cannot import runtime module {name!r} ({exc}); its runtime "
                          "is not available", RuntimeWarning, stacklevel=1)


_import_plugins()
