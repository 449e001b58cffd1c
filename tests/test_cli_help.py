"""Every console script's ``--help`` (and each sub-command's) renders: argparse %-formats help strings, so a bare
``%`` in one (``5% move``) crashes ``--help`` with a ``ValueError`` only when a user asks for help."""

from __future__ import annotations

import argparse
import importlib
from importlib import metadata

import pytest

# the installed console scripts; detbench itself is pytest (detbench.bench.plugin.cli), whose options' help
# tests/bench/core/test_config.py renders
SCRIPTS = {ep.name: ep.value for ep in metadata.distribution("detbench").entry_points
           if ep.group == "console_scripts" and ep.name != "detbench"}


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and, depth first, every sub-command's."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_renders(script: str) -> None:
    module = importlib.import_module(SCRIPTS[script].split(":")[0])
    parsers = _parsers(module.build_parser())
    for parser in parsers:
        text = parser.format_help()  # raises ValueError on a bare % in any help string
        assert parser.prog.split()[0] in text
    assert len(parsers) >= 1


def test_every_script_has_a_parser_builder() -> None:
    """The test above reaches every script: each module exposes ``build_parser``."""
    assert sorted(SCRIPTS) == ["detbench-ab", "detbench-history", "detbench-report", "envcheck"]
    for target in SCRIPTS.values():
        assert callable(getattr(importlib.import_module(target.split(":")[0]), "build_parser", None)), target
