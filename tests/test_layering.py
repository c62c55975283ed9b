"""The import graph of src/vaebench: no circles, and data flowing downward.

Built with ``ast`` from every module's imports — at module level and inside functions
(a lazy import that goes back up is a circle too) — without importing anything.
The layers, top to bottom: cli (``harness/cli.py``, ``harness/results_cli.py``, ``harness/grid_cli.py``) -> api
(``api.py``, the package's lazy façade) -> harness (on the run path: runner ->
local_executor -> strategies -> workers -> pending -> evaluation / resumption -> messages) -> plugins
-> registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Circles allowed, as (importer, imported) pairs: none (the backends' backend <-> vectorized
#: circle went with the training-loop skeleton).
ALLOWED_CIRCLES: set[tuple[str, str]] = set()

#: The run path inside the harness, top to bottom: a module imports only those after it.
RUN_PATH = (
    "vaebench.harness.runner",
    "vaebench.harness.tasks",
    "vaebench.harness.local_executor",
    "vaebench.harness.strategies",
    "vaebench.harness.workers",
    "vaebench.harness.pending",
    "vaebench.harness.evaluation",
    "vaebench.harness.resumption",
    "vaebench.harness.messages",
)
CLI = ("vaebench.harness.cli", "vaebench.harness.results_cli", "vaebench.harness.grid_cli",
       "vaebench.harness.presets_cli")
API = ("vaebench", "vaebench.api")


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``src/vaebench``."""
    out = {}
    for path in sorted((src / "vaebench").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the vaebench modules it imports anywhere in its body (functions included).
    ``from a import b`` is an import of ``a.b`` when that is a module, else of ``a``."""
    mods = modules(src)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    targets.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in mods else module)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_no_import_circles() -> None:
    graph = import_graph()
    pruned = {m: {t for t in ts if (m, t) not in ALLOWED_CIRCLES} for m, ts in graph.items()}
    found = circles(pruned)
    described = ["; ".join(f"{a} -> {b}" for a in c for b in sorted(pruned[a]) if b in c) for c in found]
    assert not found, "import circles:\n" + "\n".join(described)


def test_lower_layers_never_import_upward() -> None:
    graph = import_graph()
    wrong = []
    for name, targets in graph.items():
        for t in sorted(targets):
            # (the package itself holds the hookimpl marker plugins import; only its lazy
            # public functions reach the api)
            if under(name, "vaebench.plugins", "vaebench.registry", "vaebench.version") and (
                under(t, "vaebench.harness") or t == "vaebench.api"
            ):
                wrong.append(f"{name} -> {t}")
            if under(name, "vaebench.registry") and under(t, "vaebench.plugins"):
                wrong.append(f"{name} -> {t}")
            if under(name, "vaebench.harness") and name not in CLI and (t in API or t in CLI):
                wrong.append(f"{name} -> {t}")
            if name in API and t in CLI:
                wrong.append(f"{name} -> {t}")
            if name in RUN_PATH and t in RUN_PATH and RUN_PATH.index(t) < RUN_PATH.index(name):
                wrong.append(f"{name} -> {t}")
    assert not wrong, "imports that go up a layer:\n" + "\n".join(wrong)


def test_no_private_names_imported_across_modules() -> None:
    wrong = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("vaebench")):
                wrong += [f"{name}:{node.lineno} imports {a.name} from {node.module}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not wrong, "\n".join(wrong)


def test_the_graph_sees_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: a circle closed by a lazy import inside a function is found."""
    pkg = tmp_path / "vaebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from vaebench import b\n")
    (pkg / "b.py").write_text("def f():\n    from vaebench.a import thing\n    return thing\n")
    (pkg / "c.py").write_text("from . import a\n")
    graph = import_graph(tmp_path)
    assert graph["vaebench.b"] == {"vaebench.a"} and graph["vaebench.c"] == {"vaebench.a"}
    assert circles(graph) == [["vaebench.a", "vaebench.b"]]


def test_the_periodic_checkpoint_folder_is_named_in_one_place() -> None:
    """``"partial"`` (a run's periodic-checkpoint folder) is ``staging.PARTIAL``: no other
    module spells the name out."""
    wrong = [f"{name}:{node.lineno}" for name, path in modules().items() if name != "vaebench.registry.staging"
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Constant) and node.value == "partial"]
    assert not wrong, "the literal 'partial' outside registry/staging.py (use staging.PARTIAL): " + ", ".join(wrong)
