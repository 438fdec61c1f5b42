"""The import structure: no cycles between modules and no module importing from a layer above its own.

Every `import` counts, at module level or inside a function (a function-level import is still a dependency;
it only hides it). The layers, lowest first, are also described in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", "benchmarks", "docs", ".venv", "build", "dist"}

# Lowest first; a module may import modules of its own layer or of a lower one. A pattern matches a module and
# everything under it; a `*` segment matches any one name (`skillweave.pipelines.*.nodes` matches
# `skillweave.pipelines.chart_eval.nodes`). The matching pattern with the most segments decides a module's layer
# (for plain prefixes: the longest match wins), so a pipeline folder's files sit in different layers.
LAYERS: list[tuple[str, list[str]]] = [
    # the pipeline spec, the registry and the settings models: import nothing above core (specs name their
    # graph, report and export as "module:attribute" strings, resolved when used)
    # A pipeline folder `pipelines/<name>/`: its `__init__` (spec + settings) is core, its files are not.
    ("core", ["skillweave._version", "skillweave.errors", "skillweave.collector", "skillweave.pipeline",
              "skillweave.pipelines"]),
    ("store", ["skillweave.store", "skillweave.prompts"]),
    ("data", ["skillweave.catalog", "skillweave.charts", "skillweave.metrics", "skillweave.export",
              "skillweave.store.importers"]),
    ("providers", ["skillweave.providers"]),
    ("trainers", ["skillweave.trainers"]),
    ("roles", ["skillweave.agents", "skillweave.pipelines.*.nodes"]),
    ("graphs", ["skillweave.graphs", "skillweave.pipelines.*.graph", "skillweave.pipelines.*.report"]),
    ("services", ["skillweave.decisions", "skillweave.api"]),
    ("interfaces", ["skillweave", "skillweave.__main__", "skillweave.cli", "skillweave.web"]),
]


def module_files(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] in SKIP:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["skillweave", *parts])] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every skillweave module `name` imports (module level and inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "skillweave")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "skillweave":
                continue
            for alias in node.names:  # `from pkg import submodule` depends on the submodule
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
    return {m for m in found if m != name}


def matches(pattern: str, module: str) -> bool:
    """`pattern` is `module` or a package above it; a `*` segment stands for any one name."""
    want, have = pattern.split("."), module.split(".")
    return len(have) >= len(want) and all(w in ("*", h) for w, h in zip(want, have, strict=False))


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            segments = len(pattern.split("."))
            if matches(pattern, module) and segments > best_len:
                best, best_len = index, segments
    return best


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {name: {m for m in imports_of(name, path, known) if m in known} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def inversions(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                out.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
    return out


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if layer_of(m) is None] == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_module_imports_from_a_layer_above_it():
    assert inversions(import_graph()) == []


def test_the_walker_sees_function_level_imports_and_cycles(tmp_path):
    """The checker itself: a cycle hidden in a function body and an upward import are both reported."""
    graph = {"skillweave.trainers.a": {"skillweave.trainers.b"}, "skillweave.trainers.b": {"skillweave.trainers.a"},
             "skillweave.store": {"skillweave.cli"}, "skillweave.cli": set()}
    assert cycles(graph) == [["skillweave.trainers.a", "skillweave.trainers.b"]]
    assert inversions(graph) == ["skillweave.store (store) imports skillweave.cli (interfaces)"]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from skillweave.trainers import less\n    import skillweave.cli.run\n")
    assert imports_of("skillweave.x.m", source, {"skillweave.trainers.less"}) == {
        "skillweave.trainers.less", "skillweave.cli.run"}


def test_layer_patterns_wildcard_and_most_specific_match():
    """A pipeline folder's files take their layers from the `*` patterns; the most specific pattern wins."""
    names = [name for name, _ in LAYERS]
    assert names[layer_of("skillweave.pipelines")] == "core"
    assert names[layer_of("skillweave.pipelines.anything")] == "core"           # a folder's __init__: spec
    assert names[layer_of("skillweave.pipelines.anything.nodes")] == "roles"
    assert names[layer_of("skillweave.pipelines.anything.nodes.helpers")] == "roles"
    assert names[layer_of("skillweave.pipelines.anything.graph")] == "graphs"
    assert names[layer_of("skillweave.pipelines.anything.report")] == "graphs"
    assert names[layer_of("skillweave.pipelines.anything.settings")] == "core"  # any other file: core
    assert names[layer_of("skillweave.pipelines.nodes")] == "core"              # `*` needs a name before it
    assert names[layer_of("skillweave.store.importers.x")] == "data"            # plain prefixes: longest wins
    assert not matches("skillweave.pipelines.*.nodes", "skillweave.pipelines.a.nodesx")
    assert inversions({"skillweave.pipelines.a": {"skillweave.pipelines.a.nodes"},
                       "skillweave.pipelines.a.nodes": set()}) == [
        "skillweave.pipelines.a (core) imports skillweave.pipelines.a.nodes (roles)"]
    assert inversions({"skillweave.pipelines.a.graph": {"skillweave.pipelines.a.nodes", "skillweave.pipelines.a"},
                       "skillweave.pipelines.a.nodes": set(), "skillweave.pipelines.a": set()}) == []


def test_building_the_cli_loads_no_settings_models():
    """Commands that start no run stay quick: pydantic and the settings models load when a run is built."""
    import subprocess
    import sys

    code = ("import sys, skillweave.cli; "
            "print(sorted(m for m in sys.modules if m == 'pydantic' or m.startswith('skillweave.pipeline')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
