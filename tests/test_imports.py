"""A function that imports ``torch.<sub>`` binds ``torch`` locally for its whole body: in a module that also
imports torch at the top, every use of ``torch`` before that line raises UnboundLocalError. Such a line in a
GPU-only branch passes every CPU test and breaks every GPU cell (it happened once), so none may exist."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("bench", "envcheck", "reports") for p in (ROOT / package).rglob("*.py"))


def _binds_torch(node: ast.AST) -> bool:
    return isinstance(node, ast.Import) and any(
        alias.asname is None and alias.name.split(".")[0] == "torch" for alias in node.names)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_rebinds_torch_in_a_module_that_imports_it(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not any(_binds_torch(node) for node in tree.body):
        return  # torch imported lazily in functions only: each function's own import is all it uses
    offenders = [f"{path.name}:{inner.lineno} in {node.name}()"
                 for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for inner in ast.walk(node) if _binds_torch(inner)]
    assert not offenders, f"local `import torch...` shadows the module's torch: {offenders}"
