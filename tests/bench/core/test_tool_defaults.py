"""One default per knob: every tool's flag that names an option of the matrix (the option table) or a cell's axis
(``add_cell_arguments``) has the matrix's default, so a study and the matrix measure alike unless told otherwise."""

from __future__ import annotations

import argparse
import importlib

import pytest

from detbench.bench.core import config
from detbench.bench.plugin.cli import COMMANDS


def _defaults(parser: argparse.ArgumentParser) -> dict[str, object]:
    return {a.dest: a.default for a in parser._actions if a.dest != "help"}


CELL_DEFAULTS = {dest: default for dest, default in _defaults(
    (lambda p: (config.add_cell_arguments(p, measuring=True), p)[1])(argparse.ArgumentParser())).items()}
TABLE_DEFAULTS = config.option_defaults()
# every command with a parser of its own (the matrix's is the table itself)
PARSERS = sorted({c.target.partition(":")[0] for name, c in COMMANDS.items() if name != "run"})
# flags that share a name with a matrix option but are another knob (the matrix's own reach the sides after --)
OTHER_KNOBS = {"detbench.bench.tools.ab": {"mode": "the gate's design, sides or rounds",
                                  "seed": "the seed of the gate's random visiting order"}}


def matrix_default(dest: str) -> object:
    """A cell's axis defaults as add_cell_arguments says (one value), any other option as the table says."""
    return CELL_DEFAULTS[dest] if dest in CELL_DEFAULTS else TABLE_DEFAULTS[dest]


@pytest.mark.parametrize("module", PARSERS)
def test_a_tools_flags_default_as_the_matrix_does(module):
    parser = importlib.import_module(module).build_parser()
    other = OTHER_KNOBS.get(module, {})
    differ = {dest: (default, matrix_default(dest)) for dest, default in _defaults(parser).items()
              if dest in TABLE_DEFAULTS.keys() | CELL_DEFAULTS.keys() and dest not in other
              and default != matrix_default(dest)}
    assert not differ, f"{module}: flag defaults (tool, matrix) differ: {differ}"


def test_the_cell_flags_make_the_matrix_default_cell_and_bad_values_are_one_line():
    parser = argparse.ArgumentParser()
    config.add_cell_arguments(parser)
    cell = config.cell_from(parser.parse_args(["--model", "resnet50", "--compile", "compiled"]))
    assert (cell.mode, cell.compile, cell.precision, cell.batch_size, cell.memory_format, cell.image_size) == (
        "infer", "default", "fp32", 1, "contiguous", None)
    with pytest.raises(config.OptionError, match="bad image size '12x'; use HEIGHTxWIDTH"):
        config.cell_from(parser.parse_args(["--model", "resnet50", "--image-size", "12x"]))
