"""The layers point one way: errors -> data / theory -> models -> fit -> lipschitz -> experiment ->
sweep / store / analysis / report -> cli. Every import of every module is read from its source (imports
inside functions too), and the test fails on an import cycle or an arrow to a higher layer."""

import ast
from pathlib import Path

import robustlaw

ROOT = Path(robustlaw.__file__).parent

#: module (or package) -> layer; a module may import its own layer or lower ones, never a cycle
LAYERS = {
    "errors": 0, "registry": 0, "seeding": 0,
    "data": 1, "theory": 1, "effdim": 1, "activations": 1, "executors": 1,
    "models": 2, "constructions": 2, "linearised": 2, "conv": 2,
    "fitting": 3, "pruning": 3,
    "lipschitz": 4, "families": 4,
    "experiment": 5,
    "grid": 6, "sweep": 6, "store": 6, "analysis": 6, "report": 6, "export": 6,
    "cli": 7, "testing": 7, "__init__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every robustlaw module ``path`` imports, at any depth of its code (docstrings are not code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robustlaw"):
            found.add(node.module.removeprefix("robustlaw").lstrip("."))
            if node.module == "robustlaw.lipschitz":  # `from robustlaw.lipschitz import exact` names a module
                found |= {f"lipschitz.{a.name}" for a in node.names if (ROOT / "lipschitz" / f"{a.name}.py").exists()}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("robustlaw").lstrip(".") for a in node.names if a.name.startswith("robustlaw")}
    return {m for m in found if m}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in ROOT.rglob("*.py")}


def layer(module: str) -> int:
    top = module.split(".")[0]
    return LAYERS[top]


def test_every_module_has_a_layer():
    assert {m.split(".")[0] for m in graph()} <= set(LAYERS)


def test_no_import_points_up():
    upward = [(m, i) for m, deps in graph().items() for i in deps
              if not m.endswith("__init__") and layer(i) > layer(m)]
    assert not upward, f"imports that point to a higher layer: {upward}"


def test_no_import_cycle():
    modules = graph()
    edges = {m: {d if d in modules else f"{d}.__init__" for d in deps} - {m} for m, deps in modules.items()}
    edges = {m: {d for d in deps if not d.endswith("__init__")} for m, deps in edges.items() if not m.endswith("__init__")}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            visit(d, path + [m])
        state[m] = 2

    for module in sorted(edges):
        visit(module, [])


def test_the_checker_sees_cycles_and_upward_arrows(tmp_path, monkeypatch):
    """The two checks above can fail: a planted cycle and a planted upward import are reported."""
    (tmp_path / "models.py").write_text("def f():\n    from robustlaw.fitting import x\n")
    (tmp_path / "fitting.py").write_text("from robustlaw.models import y\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    import pytest

    with pytest.raises(AssertionError, match="higher layer"):
        test_no_import_points_up()
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle()
