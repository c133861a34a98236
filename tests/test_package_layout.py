"""The whole package's layering, checked from the source: no import cycle anywhere in marsedge, no
module imports an area above it (the torch-free edge never imports bench or the torch side), and no
module grows far past ~400 lines. test_train_layout.py checks the training packages in more depth."""

from __future__ import annotations

from pathlib import Path

from test_train_layout import find_cycle, import_time_imports

REPO = Path(__file__).resolve().parents[1]
# areas the rover computer runs: they may not import, at module level, anything of the torch side
TORCH_FREE = ("marsedge.terrain", "marsedge.errors", "marsedge.io", "marsedge.config", "marsedge.timing",
              "marsedge.metrics", "marsedge.data", "marsedge.edge", "marsedge.bench")
TORCH_SIDE = ("marsedge.models", "marsedge.train", "marsedge.ssl", "marsedge.distill")
LIMIT = 420  # "~400 lines"; quantize.py (the one loop over every target) is the one module at 400


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
    assert "marsedge.edge.predict" in g["marsedge.edge.gate"]  # the parser sees imports
    assert find_cycle(g) is None


def test_no_module_imports_an_area_above_it():
    bad = []
    for name, imports in graph().items():
        if name == "marsedge.edge.export":  # the one torch module of edge (imports torch lazily too)
            continue
        for target in imports:
            if _in(name, TORCH_FREE) and _in(target, TORCH_SIDE):
                bad.append(f"{name} -> {target}")
            if _in(name, ("marsedge.edge",)) and _in(target, ("marsedge.bench",)):
                bad.append(f"{name} -> {target}")
            below_edge = _in(name, ("marsedge.data", "marsedge.metrics"))
            if below_edge and _in(target, ("marsedge.edge", "marsedge.bench")):
                bad.append(f"{name} -> {target}")
    assert not bad, bad


def test_no_module_grows_far_past_400_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in all_modules().items()}
    long = {name: n for name, n in sizes.items() if n > LIMIT}
    assert not long, f"modules over {LIMIT} lines: {long}"
