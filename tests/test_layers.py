"""The shape of the code: each stage package imports only the stages before it, nothing
imports the CLI, and no module imports another that imports it back."""

import ast
from pathlib import Path

from helpers import ROOT

# The stages in import order: a module may import its own stage and those before it.
LAYERS = [
    {"errors", "locations", "quiet", "progress", "ray_cluster"},
    {"models"},
    {"store"},
    {"ingest"},
    {"retrieval"},
    {"generation"},
    {"asking"},
    {"evaluation"},
    {"judging", "synthesis"},
    {"serving"},
    {"api", "__init__"},
    {"cli", "__main__"},
]
PACKAGE = ROOT / "ragbatch"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def stage(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if part in names)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """The ragbatch modules `path` imports (anywhere in it, or at its top level only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ragbatch"):
            for alias in node.names:  # `from ragbatch.ingest import readers` imports a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ragbatch")}
    return found


def test_every_import_points_to_an_earlier_or_the_same_stage():
    upward = [
        f"{name} (stage {stage(name)}) imports {target} (stage {stage(target)})"
        for name, path in MODULES.items()
        for target in imports(path, top_level_only=False)
        if target != "ragbatch" and stage(target) > stage(name)
    ]
    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    graph = {name: {t for t in imports(path, top_level_only=False) if t in MODULES and t != name} for name, path in MODULES.items()}
    # Depth-first search for a cycle; each cycle found is printed as its path.
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_own_modules_are_imported_at_the_top_except_the_documented_few():
    """Lazy imports of ragbatch's own modules hide the graph: only `serve` defers its package
    (it imports FastAPI and uvicorn at its top)."""
    lazy = {f"{name}: {target}" for name, path in MODULES.items() for target in imports(path, top_level_only=False) - imports(path, top_level_only=True)}
    assert lazy == {"ragbatch.cli.main: ragbatch.serving.options", "ragbatch.cli.main: ragbatch.serving.server"}
