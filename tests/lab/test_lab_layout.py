"""lab/ shows its architecture: a folder per concern, imported one way only (a folder imports
its own modules and those of the folders below it, never above), at import time or inside
functions, and no module grows past ~400 lines without saying why at its top."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "lab"
# Bottom to top: each layer may import the ones before it.
LAYERS = ["api", "progress", "config", "nodes", "runtime", "kube", "cluster", "drivers", "cli"]
LONG = 400
LONG_REASON = "Longer than"     # the phrase a long module's docstring opens its reason with


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def imported(path: Path) -> set[str]:
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lab"):
            targets.add(node.module)
            if node.module == "lab":
                targets |= {f"lab.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.startswith("lab.")}
    return targets


def test_every_module_sits_in_a_known_layer():
    strays = [module_name(p) for p in LAB.rglob("*.py")
              if module_name(p) != "lab" and layer(module_name(p)) not in LAYERS]
    assert strays == [], f"put these in one of {LAYERS}: {strays}"


def test_folders_import_one_way_only():
    wrong = []
    for path in LAB.rglob("*.py"):
        module = module_name(path)
        if module == "lab":
            continue
        rank = LAYERS.index(layer(module))
        for target in imported(path):
            if target != "lab" and LAYERS.index(layer(target)) > rank:
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "a lower layer imports a higher one: " + ", ".join(sorted(wrong))


def test_the_rule_sees_imports_inside_functions():
    # lab.cluster.actions imports the K3s actions inside a function: the walk must find it
    assert "lab.kube.k3s_install" in imported(LAB / "cluster" / "actions.py")


def test_long_modules_say_why():
    unexplained = []
    for path in LAB.rglob("*.py"):
        text = path.read_text()
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > LONG and LONG_REASON not in docstring:
            unexplained.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert unexplained == [], ("split these, or open their docstring's reason with "
                               f"'{LONG_REASON} {LONG} lines: ...': {unexplained}")
