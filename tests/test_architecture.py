"""The house rules, checked on the source: no import cycle between edgetl's
modules (every import, also those inside functions), no import from a lower
stage to a higher one, a device runtime that imports only what a phone has,
and no function over 80 lines outside the model definitions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Stages, lowest first: a module may import its own stage and the ones below, never above.
# (The device runtime sits low: the host's training, export and report read bundles through it.)
STAGES = [
    {"edgetl", "edgetl._files", "edgetl.errors", "edgetl.events"},
    {"edgetl.data"},
    {"edgetl.runtime", "edgetl.heads", "edgetl.zoo", "edgetl.quantize"},
    {"edgetl.export"},
    {"edgetl.features", "edgetl.baselines"},
    {"edgetl.search"},
    {"edgetl.finetune", "edgetl.report"},
    {"edgetl.training", "edgetl.evaluation", "edgetl.imagenet"},
    {"edgetl.demo"},
    {"edgetl.studio"},
    {"edgetl.cli"},
]
RUNTIME_THIRD_PARTY = {"numpy", "onnxruntime", "PIL", "safetensors"}
RUNTIME_EDGETL = ("edgetl.runtime", "edgetl.data", "edgetl.errors")
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "edgetl").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imported_names(module: str, path: Path):
    """Every (absolute name, line) imported anywhere in the file."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield prefix, node.lineno
            for alias in node.names:
                yield f"{prefix}.{alias.name}", node.lineno


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        deps = set()
        for name, _ in _imported_names(module, path):
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            if target and target not in (module, "edgetl") and not target.startswith(module + "."):
                deps.add(target)
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def _stage(module: str) -> int:
    for rank, names in enumerate(STAGES):
        if any(module == n or (n != "edgetl" and module.startswith(n + ".")) for n in names):
            return rank
    raise AssertionError(f"{module} is in no stage: add it to STAGES in {__file__}")


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_no_import_from_a_lower_stage_to_a_higher_one():
    wrong = [f"{m} (stage {_stage(m)}) imports {d} (stage {_stage(d)})"
             for m, deps in _graph().items() for d in deps if _stage(d) > _stage(m)]
    assert wrong == []


def test_device_runtime_imports_only_what_a_phone_has():
    wrong = []
    for module, path in _modules().items():
        if not module.startswith("edgetl.runtime"):
            continue
        for name, line in _imported_names(module, path):
            top = name.split(".")[0]
            if top == "edgetl":
                ok = name.startswith(RUNTIME_EDGETL)
            else:
                ok = top in RUNTIME_THIRD_PARTY or top in sys.stdlib_module_names or top == "__future__"
            if not ok:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert wrong == []


def test_no_function_over_80_lines_outside_model_definitions():
    long = []
    for module, path in _modules().items():
        if module.startswith("edgetl.zoo."):  # model definitions
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected
