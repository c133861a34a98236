"""The whole package's layering, checked from the source: no import cycle anywhere in marsedge, no
module imports an area above it (the torch-free edge never imports bench or the torch side), and no
module grows far past ~400 lines. test_train_layout.py checks the training packages in more depth."""

from __future__ import annotations

import ast
from pathlib import Path

from layout_support import names_imported
from test_train_layout import find_cycle, import_time_imports

REPO = Path(__file__).resolve().parents[1]
# areas the rover computer runs: they may not import, at module level, anything of the torch side
TORCH_FREE = ("marsedge.terrain", "marsedge.errors", "marsedge.io", "marsedge.config", "marsedge.timing",
              "marsedge.metrics", "marsedge.data", "marsedge.runtimes", "marsedge.edge", "marsedge.bench")
TORCH_SIDE = ("marsedge.models", "marsedge.train", "marsedge.ssl", "marsedge.distill")
LIMIT = 420  # "~400 lines"


def all_modules() -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / "marsedge").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _in(name: str, areas: tuple[str, ...]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in areas)


def graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {name: import_time_imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_import_cycle_in_the_package():
    g = graph()
    assert "marsedge.edge.predict" in g["marsedge.deploy.gate"]  # the parser sees imports
    assert find_cycle(g) is None


def test_no_module_imports_an_area_above_it():
    bad = []
    for name, imports in graph().items():
        if name == "marsedge.deploy.export":  # the one torch module of edge (imports torch lazily too)
            continue
        for target in imports:
            if _in(name, TORCH_FREE) and _in(target, TORCH_SIDE):
                bad.append(f"{name} -> {target}")
            if _in(name, ("marsedge.edge", "marsedge.runtimes")) and _in(target, ("marsedge.bench",)):
                bad.append(f"{name} -> {target}")
            below_edge = _in(name, ("marsedge.data", "marsedge.metrics"))
            if below_edge and _in(target, ("marsedge.edge", "marsedge.runtimes", "marsedge.bench")):
                bad.append(f"{name} -> {target}")
    assert not bad, bad


def test_no_module_grows_far_past_400_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in all_modules().items()}
    long = {name: n for name, n in sizes.items() if n > LIMIT}
    assert not long, f"modules over {LIMIT} lines: {long}"


# ---- where code runs: the rover side and the workstation side
# The rover side (what edge-run and the readers need) never imports the workstation side or torch,
# not even inside a function: a rover install lacks them. The workstation side may import the rover
# side (quantize measures through edge.predict and the backends).
ROVER = ("marsedge.edge", "marsedge.runtimes", "marsedge.data", "marsedge.terrain", "marsedge.metrics",
         "marsedge.errors", "marsedge.io", "marsedge.config", "marsedge.timing", "marsedge.ownership")
# a runtime's quantizer makes files for it on the workstation (onnxruntime.quantization, modelopt): it
# lives in the runtime's package, is named to the registry by module path, and imported by deploy only
RUNTIME_QUANTIZERS = ("marsedge.runtimes.onnxruntime.quantize", "marsedge.runtimes.tensorrt.quantize",
                      "marsedge.runtimes.tensorrt.modelopt_ptq")
WORKSTATION = ("marsedge.deploy", "marsedge.synthetic", *RUNTIME_QUANTIZERS, *TORCH_SIDE, "torch",
               "torchvision")
ROVER_MAY = {  # the few reasoned exceptions: module -> what it may import inside a function
    # `--backend torch` runs a .pt where torch is installed
    "marsedge.runtimes.torch.runner": ("torch", "marsedge.models"),
    "marsedge.data.cli": ("marsedge.synthetic",),  # `marsedge data synth` is where users find the generator
}


def imports_anywhere(name: str, path: Path) -> set[str]:
    """Every module `name` imports, at module level or inside any function (absolute names)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        found |= names_imported(node, package)
    return found


def test_the_scan_sees_imports_inside_functions():
    mods = all_modules()
    name = "marsedge.runtimes.torch.runner"
    assert "torch" in imports_anywhere(name, mods[name])


def test_rover_side_never_imports_the_workstation_side():
    bad = []
    for name, path in all_modules().items():
        if not _in(name, ROVER) or _in(name, WORKSTATION):
            continue
        allowed = ROVER_MAY.get(name, ())
        bad += [f"{name} -> {target}" for target in sorted(imports_anywhere(name, path))
                if _in(target, WORKSTATION) and not _in(target, allowed)]
    assert not bad, bad


def test_workstation_folders_import_no_torch_at_module_level():
    """`marsedge quantize` and `marsedge data synth` run where torch is not installed."""
    g = graph()
    bad = [f"{name} -> {target}" for name, imports in g.items()
           if _in(name, ("marsedge.deploy", "marsedge.synthetic", *RUNTIME_QUANTIZERS))
           for target in imports if _in(target, TORCH_SIDE)]
    assert not bad, bad
    assert "marsedge.deploy.export" in g and "marsedge.synthetic.navcam" in g


def test_every_runtime_quantizer_is_on_the_workstation_side():
    """A runtime names its quantizer to the registry by module path; each one is checked above."""
    from marsedge.runtimes import RUNTIMES

    named = {r.quantizer for r in RUNTIMES.values() if r.quantizer}
    assert named and named <= set(RUNTIME_QUANTIZERS)
