"""``detbench <command>``: one front door that lists every tool and hands each its arguments."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from detbench.bench.plugin import cli

ROOT = Path(__file__).resolve().parents[3]


def test_help_lists_every_command_with_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        assert f"  {name}" in out and command.summary in out


def test_every_study_program_is_a_command():
    """Each ``python -m detbench.bench.tools.X`` program with a ``main`` is reachable from the front door (the helpers
    of detbench-ab, which is a command itself, are not programs)."""
    targets = {command.target.partition(":")[0] for command in cli.COMMANDS.values()}
    for path in sorted((ROOT / "bench" / "tools").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        has_main = any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)
        if has_main:
            assert f"detbench.bench.tools.{path.stem}" in targets, f"bench/tools/{path.name} has a main but no command"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_resolves_to_a_function_taking_argv(name):
    function = cli.COMMANDS[name].load()
    assert callable(function) and list(inspect.signature(function).parameters)[:1] in (["argv"],)


def test_a_command_gets_the_rest_of_the_line_and_its_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ab", "--help"])
    assert exit_info.value.code == 0 and "usage: detbench-ab" in capsys.readouterr().out


def test_options_without_a_command_run_the_matrix_and_an_unknown_command_is_one_line(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(cli.pytest, "main", lambda args: seen.append(args) or 0)
    assert cli.main(["--models", "resnet50"]) == 0 and cli.main(["run", "--profile", "smoke"]) == 0
    assert cli.main([]) == 0
    assert seen == [["--pyargs", "detbench.bench", "-p", "no:cacheprovider", "--models", "resnet50"],
                    ["--pyargs", "detbench.bench", "-p", "no:cacheprovider", "--profile", "smoke"],
                    ["--pyargs", "detbench.bench", "-p", "no:cacheprovider"]]
    assert cli.main(["benchmark"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'benchmark'; valid: run, check, report" in err
