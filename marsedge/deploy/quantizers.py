"""The quantize targets' registry: what a target is (`Quantizer`), what it is given (`QuantizeJob`), the
options every target shares (`QuantizeOptions`), and `load_quantizers`, which imports the quantizer
module each runtime names in `marsedge.runtimes` (its `quantizer`; ONNX Runtime's registers `cpu`).
A quantizer is a function `fn(job, recipe) -> record` under `register_quantizer`.

Nothing heavy is imported here: the CLI lists targets and recipes without onnx or ONNX Runtime.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from marsedge.edge.verdict import DEFAULT_TOLERANCE, check_tolerance
from marsedge.errors import ConfigError
from marsedge.runtimes import AUTO, DEFAULT_CPU_RUNTIME, RUNTIMES
from marsedge.runtimes.registry import quantize_runtime_names

if TYPE_CHECKING:  # kept out of the import, so `marsedge --help` and the CLI choices stay light
    from marsedge.data.preprocess import PreprocessSpec
    from marsedge.deploy.calibration import CalibrationSet

METHODS = ("max", "entropy")  # max (min-max) first: the default (entropy: ~10x slower to calibrate)
DEFAULT_FRAMES = 64  # calibration frames by default (bounded: quantize in about a minute at 512 px;
# calibration.WARN_FRAMES warns below the same count)
CPU_TARGET = "cpu"  # the target whose candidates run on the CPU runtimes (--runtime chooses among them)


@dataclass
class QuantizeOptions:
    target: str = CPU_TARGET  # a key of QUANTIZERS
    method: str = METHODS[0]
    n: int = DEFAULT_FRAMES
    min_frames: int = 32
    tolerance: float = DEFAULT_TOLERANCE  # mIoU drop as a fraction (marsedge.edge.verdict)
    min_speedup: float = 1.0  # INT8 vs FP32 on this machine (targets that measure latency); 0: off
    force: bool = False
    overwrite: bool = False  # replace an existing OUT
    dla: bool = False
    per_node: bool = False  # modelopt's calibrate_per_node (the targets that take --per-node)
    threads: int | None = None
    seed: int = 0
    recipe: str = "auto"  # "auto" (the quantizer's `auto` list) or one of the quantizer's recipes
    runtime: str = AUTO  # auto: every installed CPU runtime's candidates (marsedge.deploy.runtime_choice)
    progress: bool = True

    def validate(self) -> None:
        """Every option check, in one place: the CLI calls it before any work, quantize_model too."""
        quantizers = load_quantizers()
        if self.target not in quantizers:
            raise ConfigError(f"--target must be one of {tuple(quantizers)}, got {self.target!r}")
        quantizer = quantizers[self.target]
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {METHODS}, got {self.method!r}")
        for flag, on, allowed in (("--dla", self.dla, "dla"), ("--per-node", self.per_node, "per_node")):
            if on and not getattr(quantizer, allowed):
                names = ", ".join(name for name, q in quantizers.items() if getattr(q, allowed))
                raise ConfigError(f"{flag} applies to --target {names} only")
        if self.recipe != "auto" and self.recipe not in quantizer.recipes:
            raise ConfigError(f"--recipe must be auto or one of {', '.join(quantizer.recipes)} for --target "
                              f"{self.target}, got {self.recipe!r}")
        self._validate_runtime()
        if self.n < 1 or self.min_frames < 1:
            raise ConfigError(f"--n and --min-frames must be positive, got {self.n} and {self.min_frames}")
        check_tolerance(self.tolerance)
        if self.min_speedup < 0:
            raise ConfigError(f"--min-speedup must be >= 0, got {self.min_speedup}")

    def _validate_runtime(self) -> None:
        if self.runtime not in quantize_runtime_names():
            raise ConfigError(f"--runtime must be one of {quantize_runtime_names()}, got {self.runtime!r}")
        if self.runtime in (AUTO, DEFAULT_CPU_RUNTIME):  # other targets are gated on the default runtime
            return
        runtime = RUNTIMES[self.runtime]
        if self.target != CPU_TARGET:
            raise ConfigError(f"--runtime {self.runtime} applies to --target {CPU_TARGET} only")
        if self.recipe != "auto" and not runtime.loads(self.recipe):
            from marsedge.runtimes.onnxruntime.recipes import CPU_RECIPES

            layout = CPU_RECIPES[self.recipe].format
            raise ConfigError(f"--recipe {self.recipe} writes a {layout} file, which {runtime.title} cannot "
                              f"load: choose one of {', '.join(runtime.auto_recipes)} or auto with --runtime "
                              f"{self.runtime}")
        if not runtime.available():
            raise ConfigError(f"--runtime {self.runtime} needs {runtime.title}: {runtime.install}")


@dataclass
class QuantizeJob:
    """What a quantizer is given: the FP32 source, where to write the candidate, the calibration
    frames, and `shared` (a folder + dict every candidate of one quantize shares: the prepared
    model, the calibration ranges)."""

    src: Path
    dst: Path
    calib: CalibrationSet
    spec: PreprocessSpec
    input_name: str
    options: QuantizeOptions
    shared: dict = field(default_factory=dict)

    def workdir(self) -> Path:
        """A scratch folder shared by the job's candidates (removed by `quantize_model`)."""
        if "workdir" not in self.shared:
            self.shared["workdir"] = Path(tempfile.mkdtemp(prefix=".quantize-", dir=self.dst.parent))
        return self.shared["workdir"]


@dataclass(frozen=True)
class Quantizer:
    """One target: `quantize(job, recipe)` writes a candidate to `job.dst` and returns its record."""

    name: str
    quantize: Callable[[QuantizeJob, str], dict]
    recipes: tuple[str, ...]  # what --recipe may name
    auto: tuple[str, ...]  # `--recipe auto`: every one is made, the fastest passing is kept
    suffix: str  # default output: MODEL<suffix>
    measure_latency: bool = False  # INT8 vs FP32 on the CPU runtimes (meaningful where they run)
    dla: bool = False  # accepts --dla
    per_node: bool = False  # accepts --per-node

    def recipes_for(self, options: QuantizeOptions) -> tuple[str, ...]:
        """The files to make: --recipe, or for auto the `auto` lists of the runtimes candidates run on
        (`runtime_choice.plan`: each runtime loads its own layouts, and ranks them differently)."""
        from marsedge.deploy.runtime_choice import plan

        candidates = plan(options.target, options.runtime, options.recipe, self.auto)
        return tuple(dict.fromkeys(recipe for recipe, _ in candidates))

    def candidates(self, job: QuantizeJob) -> Iterator[tuple[Path, dict]]:
        """Each candidate in turn, each in its own file of the job's work folder."""
        recipes = self.recipes_for(job.options)
        for i, recipe in enumerate(recipes, 1):
            if len(recipes) > 1:
                print(f"candidate {i}/{len(recipes)}: {recipe}", flush=True)
            dst = job.workdir() / f"{recipe}.onnx"
            yield dst, self.quantize(replace(job, dst=dst), recipe)


QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(name: str, recipes: tuple[str, ...], auto: tuple[str, ...], suffix: str,
                       measure_latency: bool = False, dla: bool = False, per_node: bool = False):
    """Decorator: `fn(job, recipe) -> record` becomes the quantizer of target `name`."""

    def wrap(fn: Callable[[QuantizeJob, str], dict]) -> Callable[[QuantizeJob, str], dict]:
        QUANTIZERS[name] = Quantizer(name, fn, recipes, auto, suffix, measure_latency, dla, per_node)
        return fn

    return wrap


def load_quantizers() -> dict[str, Quantizer]:
    """QUANTIZERS, once every registered runtime's quantizer module is imported."""
    for runtime in RUNTIMES.values():
        if runtime.quantizer:
            importlib.import_module(runtime.quantizer)
    return QUANTIZERS


def recipe_choices() -> list[str]:
    """Every value --recipe accepts, over all targets (the CLI's choices)."""
    return ["auto", *dict.fromkeys(r for q in load_quantizers().values() for r in q.recipes)]


def keep_metadata(src: Path, dst: Path) -> None:
    """Copy the source model's metadata_props onto a quantizer's output (modelopt drops them)."""
    import onnx

    from marsedge.edge.onnx_meta import set_props

    source = onnx.load(str(src), load_external_data=False)
    model = onnx.load(str(dst))
    set_props(model, {p.key: p.value for p in source.metadata_props})
    onnx.save(model, str(dst))
