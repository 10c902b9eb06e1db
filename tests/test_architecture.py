"""The package's imports run one way, with no cycles and no imports hidden in functions.

The layers, lowest first (a module may import its own layer and those below):

    errors, config, staging -> data -> models -> decoding -> inference, export -> bundle, batch_predict
    -> evaluation -> training (trainer, tuner, recipes) -> cli

``serving`` (a separate top-level package) may use only ``tfpipeline.errors``,
``tfpipeline.export`` and ``tfpipeline.bundle``. Imports inside functions are
allowed only for optional heavy dependencies, so nothing can dodge a cycle by
importing late. The test reads the source (ast); it imports nothing.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tfpipeline", "serving")

LAYERS: List[Tuple[str, ...]] = [
    ("tfpipeline", "tfpipeline._env", "tfpipeline.errors", "tfpipeline.config", "tfpipeline.staging"),
    ("tfpipeline.data",),
    ("tfpipeline.models",),
    ("tfpipeline.decoding",),
    ("tfpipeline.inference", "tfpipeline.export"),
    ("tfpipeline.bundle", "tfpipeline.batch_predict"),
    ("tfpipeline.evaluation",),
    ("tfpipeline.training",),
    ("tfpipeline.cli",),
]
SERVING_MAY_USE = ("tfpipeline._env", "tfpipeline.errors", "tfpipeline.export", "tfpipeline.bundle")
# optional dependencies that only some commands need (extras: compress, bench)
LATE_IMPORTS_ALLOWED = ("tensorflow_model_optimization", "torch", "onnxruntime")


def module_files() -> Dict[str, str]:
    """{dotted module name: path} for every module of the two packages."""
    out = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = path
    return out


MODULES = module_files()


def resolve(name: str) -> str:
    """The project module an imported name refers to (a submodule if one exists, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imported_names(node: ast.AST) -> List[str]:
    """Dotted names an import statement loads: ``from a import b`` is ``a.b`` when that is a module, else ``a``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
        return names if len(names) == len(node.names) else [node.module] + names
    return []


def late_imports(tree: ast.AST) -> List[Tuple[int, str]]:
    """(line, name) of every import inside a function that is not an allowed optional dependency."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                names = [sub.module] if isinstance(sub, ast.ImportFrom) else imported_names(sub)
                found += [(sub.lineno, name) for name in names
                          if name and not name.startswith(LATE_IMPORTS_ALLOWED)]
    return sorted(set(found))


def module_imports() -> Tuple[Dict[str, Set[str]], List[str]]:
    """({module: project modules it imports at module level}, [late imports that are not allowed])."""
    graph: Dict[str, Set[str]] = {}
    late: List[str] = []
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        edges: Set[str] = set()
        for node in tree.body:
            for name in imported_names(node):
                target = resolve(name)
                if target and target != module:
                    edges.add(target)
            if isinstance(node, ast.Try):   # guarded top-level imports still count
                for sub in ast.walk(node):
                    edges.update(t for n in imported_names(sub) if (t := resolve(n)) and t != module)
        late += [f"{os.path.relpath(path, ROOT)}:{line}: {name}" for line, name in late_imports(tree)]
        graph[module] = edges
    return graph, sorted(set(late))


def layer_of(module: str) -> int:
    best, layer = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    assert layer is not None, f"{module} is in no layer: add it to LAYERS"
    return layer


GRAPH, LATE = module_imports()


def test_every_module_has_a_layer():
    for module in MODULES:
        if module.startswith("tfpipeline"):
            layer_of(module)


def test_no_upward_imports():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() if m.startswith("tfpipeline")
              for t in targets if t.startswith("tfpipeline") and layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(sorted(upward))


def test_serving_uses_only_the_export_and_bundle_api():
    def allowed(target):
        return target == "tfpipeline" or any(target == p or target.startswith(p + ".") for p in SERVING_MAY_USE)

    wrong = [f"{m} imports {t}" for m, targets in GRAPH.items() if m.startswith("serving")
             for t in targets if t.startswith("tfpipeline") and not allowed(t)]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    cycles, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


def test_no_imports_hidden_in_functions():
    assert not LATE, "imports inside functions (move them to the top of the module):\n" + "\n".join(LATE)


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    import tfpipeline.bundle\n", [(2, "tfpipeline.bundle")]),
    ("class A:\n    def f(self):\n        from tfpipeline.data import catalog\n",
     [(3, "tfpipeline.data")]),
    ("def f():\n    import torch\n", []),
    ("import tfpipeline.bundle\n", []),
])
def test_the_checker_sees_late_imports(source, expected):
    """The walker itself can fail: a late project import is reported, an allowed or top-level one is not."""
    assert late_imports(ast.parse(source)) == expected
