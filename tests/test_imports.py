"""A function that imports ``torch.<sub>`` binds ``torch`` locally for its whole body: in a module that also
imports torch at the top, every use of ``torch`` before that line raises UnboundLocalError. Such a line in a
GPU-only branch passes every CPU test and breaks every GPU cell (it happened once), so none may exist.

The rule is about modules that bind ``torch`` at module scope, so only those are parametrised (a module that imports
torch in its functions only has no module-level torch to shadow: each function's own import is all it uses)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("bench", "envcheck", "reports") for p in (ROOT / package).rglob("*.py"))
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _binds_torch(node: ast.AST) -> bool:
    return isinstance(node, ast.Import) and any(
        alias.asname is None and alias.name.split(".")[0] == "torch" for alias in node.names)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_scope(nodes: list[ast.stmt]):
    """Statements run at import, at any depth of if/try/with, not in functions or classes nor under TYPE_CHECKING."""
    for node in nodes:
        if isinstance(node, _SCOPES):
            continue
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _module_scope(node.orelse)
        else:
            yield from _module_scope([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])


def binds_torch_at_module_scope(tree: ast.Module) -> bool:
    return any(_binds_torch(node) for node in _module_scope(tree.body))


def local_torch_imports(tree: ast.Module, name: str) -> list[str]:
    """``name:line in function()`` for each ``import torch...`` inside a function (at any nesting)."""
    return [f"{name}:{inner.lineno} in {node.name}()"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for inner in ast.walk(node) if _binds_torch(inner)]


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


TORCH_MODULES = [p for p in SOURCES if binds_torch_at_module_scope(_parse(p))]


@pytest.mark.parametrize("path", TORCH_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_rebinds_torch_in_a_module_that_imports_it(path: Path):
    offenders = local_torch_imports(_parse(path), path.name)
    assert not offenders, f"local `import torch...` shadows the module's torch: {offenders}"


def test_the_modules_that_import_torch_are_found():
    # Guards the parametrisation above: a detector that found nothing would leave it empty, and vacuously green.
    found = {str(p.relative_to(ROOT)) for p in TORCH_MODULES}
    assert {"bench/runtime/session.py", "bench/models/registry.py", "bench/measure/memory.py"} <= found
    assert not any(name.startswith(("bench/core/", "reports/")) for name in found)  # no torch in the domain


@pytest.mark.parametrize(("source", "offends"), [
    ("import torch\n\ndef f():\n    import torch.cuda\n", True),  # the pattern that broke every GPU cell
    ("import torch\n\nclass C:\n    def f(self):\n        def g():\n            import torch\n", True),
    ("try:\n    import torch\nexcept ImportError:\n    pass\n\nasync def f():\n    import torch.nn\n", True),
    ("import torch\n\ndef f():\n    import torch.distributed as dist\n    from torch import nn\n", False),
    ("def f():\n    import torch.cuda\n", False),  # no module-level torch to shadow
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n\ndef f():\n    import torch\n", False),
])
def test_the_rule_catches_a_local_import_that_shadows_torch(source: str, offends: bool):
    tree = ast.parse(source)
    assert bool(binds_torch_at_module_scope(tree) and local_torch_imports(tree, "m.py")) is offends
