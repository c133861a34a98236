"""The inference runtimes marsedge knows, described in one place: which files each opens by suffix,
whether it is installed here, whether it serves CPU streams, and, for the CPU runtimes, which INT8
layouts it loads and which `quantize --target cpu` tries on it.

    RUNTIMES["openvino"].available()          # installed on this machine?
    runtime_for_suffix(".engine")             # "tensorrt"
    cpu_quantize_runtimes()                   # ("openvino", "onnxruntime") where both are installed

The openers live in `marsedge.edge.backends` (BACKENDS); this module imports no runtime, so the CLI,
quantize and the backend choice can ask it questions for free.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from marsedge.edge.cpu_recipes import AUTO_CPU_RECIPES, AUTO_OPENVINO_RECIPES, CPU_RECIPES


@dataclass(frozen=True)
class Runtime:
    """One runtime: what opens with it, whether it is here, what quantize may make for it."""

    name: str  # the --backend / --runtime name
    module: str  # the Python module whose presence makes it available
    suffixes: tuple[str, ...] = ()  # model files it opens when nothing else says
    cpu_streams: bool = False  # a CPU runtime: edge-run infers 2 frames at once on 2+ cores
    int8_formats: tuple[str, ...] = ()  # INT8 layouts it loads ("QOperator", "QDQ")
    auto_recipes: tuple[str, ...] = ()  # `quantize --target cpu --recipe auto` candidates on it

    def available(self) -> bool:
        """Installed here (importable); nothing is imported to find out."""
        return importlib.util.find_spec(self.module) is not None

    def loads(self, recipe: str) -> bool:
        """Whether a file of the CPU recipe `recipe` runs on this runtime."""
        return recipe in CPU_RECIPES and CPU_RECIPES[recipe].format in self.int8_formats


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("onnxruntime", "onnxruntime", (".onnx",), cpu_streams=True, int8_formats=("QOperator", "QDQ"),
            auto_recipes=AUTO_CPU_RECIPES),
    # QDQ only: OpenVINO cannot load ONNX Runtime's QOperator files (QLinearConv & co.)
    Runtime("openvino", "openvino", (".xml",), cpu_streams=True, int8_formats=("QDQ",),
            auto_recipes=AUTO_OPENVINO_RECIPES),
    Runtime("tensorrt", "tensorrt", (".engine",)),
    Runtime("torch", "torch", (".pt", ".pth")),
)}
DEFAULT_CPU_RUNTIME = "onnxruntime"  # where an .onnx runs when its metadata names no runtime


def runtime_for_suffix(suffix: str) -> str | None:
    """The runtime that opens files ending in `suffix` (lower case), or None."""
    return next((r.name for r in RUNTIMES.values() if suffix in r.suffixes), None)


def known_suffixes() -> list[str]:
    return [s for r in RUNTIMES.values() for s in r.suffixes]


def cpu_quantize_runtimes() -> tuple[str, ...]:
    """The runtimes `quantize --target cpu` measures by default: every installed CPU runtime with INT8
    recipes, the default one last (when every candidate fails the gate, the last tried is the one
    reported, and it should be the default runtime's most conservative recipe)."""
    others = [r.name for r in RUNTIMES.values()
              if r.auto_recipes and r.name != DEFAULT_CPU_RUNTIME and r.available()]
    return (*others, DEFAULT_CPU_RUNTIME)
