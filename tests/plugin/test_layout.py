"""plugin/ shows its architecture: three parts imported one way only (delivery -> cni ->
crossnode), and no import circle between modules, at import time or inside functions."""
from __future__ import annotations

import ast
from pathlib import Path

from cnitest import REPO

PLUGIN = REPO / "plugin"
# Who may import whom (besides itself).
ALLOWED = {"crossnode": set(), "cni": {"crossnode"}, "delivery": {"cni", "crossnode"}}
SHIMS = {"plugin.build", "plugin.netconf", "plugin.__main__", "plugin"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in PLUGIN.rglob("*.py"):
        name = module_name(path)
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("plugin"):
                # `from package import module` imports that module (the package is
                # imported first anyway, as for every submodule: not a dependency to count)
                submodules = {f"{node.module}.{a.name}" for a in node.names}
                targets |= submodules & MODULES or {node.module}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("plugin")}
        found[name] = {t for t in targets if t in MODULES and t != name}
    return found


MODULES = {module_name(p) for p in PLUGIN.rglob("*.py")}


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_three_parts_import_one_way_only():
    graph = imports()
    assert "plugin.crossnode.errors" in graph["plugin.cni.netconf"]  # the parser sees them
    assert "plugin.cni.skel" in graph["plugin.delivery.resident"]  # ...inside functions too
    wrong = []
    for module, targets in graph.items():
        if module in SHIMS:
            continue
        for target in targets:
            if part(target) != part(module) and part(target) not in ALLOWED[part(module)]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_module_imports_itself_back():
    graph = imports()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for target in graph.get(module, ()):
            if target in path:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif len(path) < 12:
                visit(target, [*path, target])

    for module in graph:
        if module not in SHIMS:
            visit(module, [module])
    assert cycles == []
