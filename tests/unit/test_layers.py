"""The floors of src/safehold hold: no module imports one above its floor, and no import cycle exists.

Floors, top to bottom (docs/architecture.md): cli → web, scheduler → actions → lifecycle → apps, appconfig →
engines, files → repository → the base modules (config, errors, secrets, models, output, runner,
history, lock, notify, metrics…). An import inside a function counts the same as one at the top:
hiding a cycle in a function is still a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
FLOORS = {"__main__": 8, "cli": 7, "web": 6, "scheduler": 6, "actions": 5, "lifecycle": 4, "apps": 3,
          "appconfig": 3, "engines": 2, "files": 2, "repository": 1}


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, src: Path) -> bool:
    base = src / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module → the safehold modules it imports (`from pkg import module` names the module itself)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in (src / "safehold").rglob("*.py"):
        name = _module_name(path, src)
        graph[name]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "safehold":
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
                graph[name].update(t for t in targets if _is_module(t, src))
                if not all(_is_module(t, src) for t in targets):
                    graph[name].add(node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.split(".")[0] == "safehold")
    return graph


def floor(module: str) -> int:
    """The floor of a module: its first package under safehold, base modules at 0."""
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module on a higher floor, in words."""
    return [f"{module} (floor {floor(module)}) imports {target} (floor {floor(target)})"
            for module, targets in sorted(graph.items()) for target in sorted(targets) if floor(target) > floor(module)]


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each import cycle found by a depth-first walk, as `a → b → a`.

    A package's __init__ importing its own submodules (a registry such as apps.APPS) is not counted:
    those submodules importing a sibling through the package is how registries work.
    """
    state: dict[str, int] = {}
    found: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target.startswith(module + "."):
                continue
            if state.get(target) == 1:
                found.append(" → ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_upward() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_cycle() -> None:
    assert import_cycles(import_graph()) == []


def test_the_checks_see_a_planted_upward_import_and_cycle(tmp_path: Path) -> None:
    """Both checks are only worth something if they can fail: one import at the top of a base module,
    the other hidden in a function, as the old lifecycle↔prune cycle was."""
    package = tmp_path / "safehold"
    (package / "actions").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "actions" / "__init__.py").write_text("")
    (package / "errors.py").write_text("from safehold.actions import run\n")
    (package / "actions" / "run.py").write_text("def f():\n    from safehold import errors\n")
    graph = import_graph(tmp_path)
    assert upward_imports(graph) == ["safehold.errors (floor 0) imports safehold.actions.run (floor 5)"]
    assert import_cycles(graph) == ["safehold.actions.run → safehold.errors → safehold.actions.run"]
