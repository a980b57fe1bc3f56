"""The import graph of w4s: imports run downward only (flows -> tasks -> models, storage ->
core) and no module imports itself back through others. Every import counts: module-level,
inside functions, and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the source folders and the names they install under (pyproject's package-dir)
FOLDERS = {"w4s": "w4s", "flows": "w4s.flows", "tasks": "w4s.tasks", "models": "w4s.models",
           "storage": "w4s.storage"}
LAYERS = ("flows", "tasks", "models", "storage")
# what each layer may import besides itself: core is w4s.* outside the four subpackages
ALLOWED = {"core": {"core"}, "models": {"core"}, "storage": {"core"},
           "tasks": {"core", "models", "storage"}, "flows": {"core", "models", "storage", "tasks"}}

# Cycles inside flows/ that its rewrite (the CLI on cyclopts, issue 16 items 1 and 3) removes;
# each is (smallest module, ...) in import order. The lead empties this after the merge.
FLOWS_CYCLES_PENDING: set[tuple[str, ...]] = set()  # none left: the CLI rewrite removed them


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The w4s module `name` lives in (a module itself, or the one defining it)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the w4s modules it imports, anywhere in its file."""
    known = modules()
    graph = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_owner(a.name, known) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                for a in node.names:  # `from pkg import submodule` imports the submodule
                    full = f"{base}.{a.name}"
                    targets.add(full if full in known else _owner(base, known))
        graph[name] = targets - {None, name}
    return graph


def layer(module: str) -> str:
    second = module.split(".")[1] if "." in module else ""
    return second if second in LAYERS else "core"


def simple_cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every elementary cycle, each once: starting at its smallest module."""
    found = set()
    for start in sorted(graph):
        stack = [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    found.add(path)
                elif nxt > start and nxt not in path:
                    stack.append((nxt, (*path, nxt)))
    return found


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert len(graph) > 100 and "w4s.flows.cli" in graph and "w4s.sandbox.worker" in graph
    # relative (sandbox worker), function-level (factory's backends) and absolute imports
    assert "w4s.sandbox.worker.jail" in graph["w4s.sandbox.worker.program"]
    assert "w4s.models.llamacpp" in graph["w4s.models.factory"]
    assert "w4s.storage.run_store" in graph["w4s.tasks.stages"]


def test_imports_run_downward_only():
    upward = [f"{a} -> {b}" for a, targets in sorted(import_graph().items())
              for b in sorted(targets)
              if layer(b) != layer(a) and layer(b) not in ALLOWED[layer(a)]]
    assert not upward, "imports against the layers: " + "; ".join(upward)


def test_no_import_cycles():
    cycles = simple_cycles(import_graph())
    pending = {tuple(f"w4s.flows.{m}" for m in c) for c in FLOWS_CYCLES_PENDING}
    new = sorted(" -> ".join(c) for c in cycles - pending)
    assert not new, "import cycles: " + "; ".join(new)
    gone = sorted(" -> ".join(c) for c in pending - cycles)
    assert not gone, "no longer cycles, remove them from FLOWS_CYCLES_PENDING: " + "; ".join(gone)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}
    assert simple_cycles(graph) == {("a", "b"), ("a", "b", "c")}
    assert layer("w4s.models.factory") == "models" and layer("w4s.sandbox.pool") == "core"
