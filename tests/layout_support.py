"""What one import statement names, as absolute module names: shared by the layout tests."""

import ast


def names_imported(node: ast.stmt, package: str) -> set[str]:
    """`import a.b` -> {a.b}; `from .x import y` inside `package` -> {package.x, package.x.y}
    (`from pkg import mod` names `pkg.mod` too); any other statement -> {}."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return {base} | {f"{base}.{alias.name}" for alias in node.names}
