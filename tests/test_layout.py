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


def _graph() -> dict[str, set[str]]:
    """Module -> the deepinfo modules it imports (at the top or inside functions), from the source."""
    modules = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG).with_suffix("").parts
        name = ".".join(("deepinfo",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for t in _imports(path):
            while t not in modules and "." in t:  # an attribute imported from a module
                t = t.rsplit(".", 1)[0]
            if t != name and t in modules:
                targets.add(t)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_core_has_no_import_cycle():
    """The estimator core (top-level modules) imports in one direction: no module of it reaches
    itself again, even through imports inside functions."""
    graph = _graph()
    core = {n: {t for t in ts if _tier(t) == 0 and t.count(".") == 1} for n, ts in graph.items()
            if _tier(n) == 0 and n.count(".") == 1 and n != "deepinfo"}
    assert _cycle(core) is None, " -> ".join(_cycle(core))


def test_the_cycle_check_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_notebooks_define_no_helpers():
    """A notebook's code calls the library: no function or class is defined in one (point 5)."""
    import json

    defined = []
    for nb in sorted((PKG.parent / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.append(f"{nb.name}: {node.name}")
    assert not defined, defined


MAX_CODE_LINES = 120


def _code_lines(nb: Path) -> int:
    """Code lines of a notebook: non-blank, non-comment lines of its code cells."""
    import json

    cells = json.loads(nb.read_text())["cells"]
    return sum(1 for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()
               if line.strip() and not line.strip().startswith("#"))


def test_notebooks_are_short_and_their_analysis_is_in_their_page_module():
    """A page keeps its claims, thresholds, figures and verdict calls; the arithmetic is in
    ``deepinfo/book/pages/p<notebook>.py`` (point 5: about 120 code lines or fewer)."""
    long = {nb.name: n for nb in sorted((PKG.parent / "notebooks").glob("*.ipynb"))
            if (n := _code_lines(nb)) > MAX_CODE_LINES}
    assert not long, long
    pages = PKG / "book" / "pages"
    for nb in sorted((PKG.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        module = pages / f"p{nb.stem}.py"
        assert module.is_file(), f"{nb.name} has no page module {module.name}"
        assert f"from deepinfo.book.pages import p{nb.stem}" in nb.read_text(), f"{nb.name} does not import it"


def test_the_length_check_counts_code_not_comments(tmp_path):
    import json

    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["# a comment\n", "\n", "x = 1\n", "y = 2"]},
                                        {"cell_type": "markdown", "source": ["text"]}]}))
    assert _code_lines(nb) == 2


def test_pages_read_claim_equation_figure_numbers_verdict():
    """Each page opens with the claim and its equation, shows its figures, then how the claims are
    decided, then the verdicts (point 5)."""
    import json

    problems = []
    for nb in sorted((PKG.parent / "notebooks").glob("[0-9]*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        intro = "".join(cells[0]["source"]).split("\n\n")
        text = ["".join(c["source"]) for c in cells]
        first = lambda pred: next((i for i, c in enumerate(cells) if pred(c, text[i])), None)  # noqa: E731
        figure = first(lambda c, t: c["cell_type"] == "code" and "report.figure(" in t)
        rules = first(lambda c, t: c["cell_type"] == "markdown" and t.startswith("## How the claims are decided"))
        claim = first(lambda c, t: c["cell_type"] == "code" and "report.claim(" in t)
        if "claim" not in intro[1].lower():
            problems.append(f"{nb.name}: the paragraph after the title is not the claim")
        if "$$" not in "\n\n".join(intro[2:]):
            problems.append(f"{nb.name}: no displayed equation after the claim")
        if None in (figure, rules, claim) or not figure < rules < claim:
            problems.append(f"{nb.name}: figure {figure}, rules {rules}, verdict {claim}: not in that order")
    assert not problems, "\n".join(problems)
