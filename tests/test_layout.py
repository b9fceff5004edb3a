"""The package's layers: imports run downward only (book -> techniques, toolkit, attribution ->
models, data sets and the estimator core), never back."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "deepinfo"
# tier of each top-level name under deepinfo (a subpackage or a top-level module)
TIERS = {"book": 2, "cli": 3, "__main__": 3, "techniques": 1, "toolkit": 1, "attribution": 1}  # the rest: 0


def _tier(dotted: str) -> int:
    parts = dotted.split(".")
    return TIERS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepinfo"):
            if node.module == "deepinfo":
                yield from (f"deepinfo.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("deepinfo"))


def test_imports_run_downward_only():
    upward = []
    for path in PKG.rglob("*.py"):
        module = "deepinfo." + ".".join(path.relative_to(PKG).with_suffix("").parts)
        if module.endswith(".__init__") and module.count(".") == 1:
            continue  # the package's public names
        for target in _imports(path):
            if _tier(target) > _tier(module):
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_no_relative_imports_hide_the_layers():
    relative = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(p.read_text())))]
    assert not relative, relative
