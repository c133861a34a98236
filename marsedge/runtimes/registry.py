"""The registry of inference runtimes: each runtime's package registers one `Runtime` here, saying
everything the rest of marsedge asks of a runtime, so nothing outside that package names it.

    RUNTIMES["onnxruntime"].available()        # installed on this machine? (nothing imported)
    runtime_for_suffix(".engine")              # the runtime that opens such files by default
    RUNTIMES[name].open(path, OpenOptions(threads=2))   # its runner (a marsedge.runtimes.base.BaseBackend)
    cpu_quantize_runtimes()                    # the CPU runtimes `quantize --target cpu` measures

A runtime's package (`marsedge.runtimes.<name>`) holds its runner (`runner.py`), its loaders (what
builds or converts a file for it: `build.py`) and, apart, its workstation-only quantizer
(`quantize.py`, named here by module path and imported by `marsedge.deploy` alone). This module
imports no runtime and no numpy: the CLI, quantize's option checks and `scripts/gpu_check.py` ask it
questions for free.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marsedge.errors import ConfigError


@dataclass(frozen=True)
class OpenOptions:
    """How a runner is opened: CPU threads, concurrent `infer` calls, what to do with a stale file."""

    threads: int | None = None
    streams: int = 1  # frames inferred at once, the threads split between them (cpu_streams runtimes)
    rebuild_stale: bool = False  # a built file (engine) that no longer matches its source is rebuilt
    cpu_only: bool = False  # the accuracy gate: the CPU even where a GPU provider is installed


@dataclass(frozen=True)
class Runtime:
    """One runtime: what opens with it, whether it is here, how to open it, what quantize makes for it."""

    name: str  # the --backend / --runtime name
    title: str  # its name in reports ("ONNX Runtime")
    module: str  # the Python module whose presence makes it available
    open: Callable[[Path, OpenOptions], Any]  # (model file, options) -> runner; imports the runtime itself
    install: str = ""  # how to install it, for the error that says it is missing
    suffixes: tuple[str, ...] = ()  # model files it opens when nothing else says
    opens_onnx: bool = False  # also runs .onnx files: a candidate of `--backend auto` and of quantize
    cpu_streams: bool = False  # a CPU runtime: edge-run infers 2 frames at once on 2+ cores
    uses_gpu: Callable[[], bool] | None = None  # would run on a GPU here (then one stream is the default)
    int8_formats: tuple[str, ...] = ()  # INT8 layouts it loads ("QOperator", "QDQ": onnxruntime.recipes)
    auto_recipes: tuple[str, ...] = ()  # `quantize --target cpu --recipe auto` candidates on it
    quantizer: str | None = None  # workstation module registering its quantize target(s)
    commands: str | None = None  # module whose register(subparsers) adds its `marsedge` commands
    describe: Callable[[Path], str] | None = None  # `marsedge inspect` of a file of its own suffix
    version: Callable[[], str | None] | None = None  # its version, where package metadata lacks it

    def available(self) -> bool:
        """Installed here (importable); nothing is imported to find out."""
        return importlib.util.find_spec(self.module) is not None

    def loads(self, recipe: str) -> bool:
        """Whether a file of the CPU recipe `recipe` runs on this runtime."""
        from marsedge.runtimes.onnxruntime.recipes import CPU_RECIPES

        return recipe in CPU_RECIPES and CPU_RECIPES[recipe].format in self.int8_formats

    def on_gpu(self) -> bool:
        return self.uses_gpu is not None and self.uses_gpu()


RUNTIMES: dict[str, Runtime] = {}
DEFAULT_CPU_RUNTIME = "onnxruntime"  # where an .onnx runs when its metadata names no runtime
AUTO = "auto"  # --backend auto: on an .onnx file, every installed `opens_onnx` runtime timed, fastest kept


def register_runtime(runtime: Runtime) -> Runtime:
    """Add a runtime (its package calls this once); a name or suffix already taken is refused."""
    if runtime.name in RUNTIMES or runtime.name == AUTO:
        raise ConfigError(f"runtime {runtime.name!r} is registered twice")
    taken = [s for s in runtime.suffixes if runtime_for_suffix(s)]
    if taken:
        raise ConfigError(f"runtime {runtime.name!r}: suffix {taken[0]} already opens with "
                          f"{runtime_for_suffix(taken[0])}")
    RUNTIMES[runtime.name] = runtime
    return runtime


def backend_names() -> list[str]:
    """What --backend accepts: every runtime, and auto."""
    return [*RUNTIMES, AUTO]


def runtime_for_suffix(suffix: str) -> str | None:
    """The runtime that opens files ending in `suffix` (lower case), or None."""
    return next((r.name for r in RUNTIMES.values() if suffix in r.suffixes), None)


def known_suffixes() -> list[str]:
    return [s for r in RUNTIMES.values() for s in r.suffixes]


def onnx_runtimes() -> list[str]:
    """The installed runtimes that run .onnx files, the default first (`--backend auto`'s candidates)."""
    others = [r.name for r in RUNTIMES.values()
              if r.opens_onnx and r.name != DEFAULT_CPU_RUNTIME and r.available()]
    return [DEFAULT_CPU_RUNTIME, *others]


def cpu_quantize_runtimes() -> tuple[str, ...]:
    """The runtimes `quantize --target cpu` measures by default: every installed CPU runtime with INT8
    recipes, the default one last (when every candidate fails the gate, the last tried is the one
    reported, and it should be the default runtime's most conservative recipe)."""
    others = [r.name for r in RUNTIMES.values()
              if r.auto_recipes and r.name != DEFAULT_CPU_RUNTIME and r.available()]
    return (*others, DEFAULT_CPU_RUNTIME)


def quantize_runtime_names() -> tuple[str, ...]:
    """What `quantize --runtime` accepts: auto and every runtime with INT8 recipes."""
    return (AUTO, *(name for name, r in RUNTIMES.items() if r.auto_recipes))
