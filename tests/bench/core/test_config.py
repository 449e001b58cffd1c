"""The one option table: every option once, one resolution into a frozen run configuration, per-device defaults
taken for the device the run has, and the pytest plugin safe beside other plugins."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detbench.bench.core import config
from detbench.bench.core.options import CELL_TIMEOUT_S, CPU_ROUNDS, GPU_ROUNDS, OptionError, RunOptions

ROOT = Path(__file__).resolve().parents[3]
MODELS = ["retinanet_resnet50_fpn", "resnet50"]


def resolve(*argv: str, cuda: bool = False) -> config.RunConfig:
    parser = argparse.ArgumentParser()
    config.add_to_argparse(parser)
    return config.resolve(vars(parser.parse_args(list(argv))), cuda_available=cuda, known_models=MODELS)


def test_every_option_is_named_once_and_the_defaults_agree_with_the_options_record():
    names = [o.name for o in config.OPTION_TABLE]
    assert len(names) == len(set(names))
    run = resolve()
    assert run.options.cell_timeout_s == CELL_TIMEOUT_S == RunOptions().cell_timeout_s  # one default, one place
    assert run.options.isolation == "inline" and resolve(cuda=True).options.isolation == "model"
    assert run.profile == "smoke" and resolve(cuda=True).profile == "quick"


def test_rounds_alone_keeps_the_devices_block_length_and_block_s_alone_its_rounds():
    options = resolve("--rounds", "7").options
    assert options.rounds_policy("cpu").block_s == CPU_ROUNDS.block_s and options.rounds_policy("cpu").rounds == 7
    assert options.rounds_policy("cuda").block_s == GPU_ROUNDS.block_s
    options = resolve("--block-s", "0.3").options
    assert options.rounds_policy("cuda").rounds == GPU_ROUNDS.rounds and options.rounds_policy("cuda").block_s == 0.3
    assert RunOptions.from_dict(options.to_dict()) == options  # it travels to the workers as it is


@pytest.mark.parametrize("argv, words", [
    (["--precisions", "fp64"], "unknown precision 'fp64'"),
    (["--cudnn-benchmark", "maybe"], "valid: on, off"),
    (["--isolation", "docker"], "valid: model, cell, inline"),
    (["--weights", "nope=w.pth"], "unknown model 'nope' in --weights; valid: retinanet_resnet50_fpn, resnet50"),
    (["--models", ","], "--models is empty"),
    (["--rounds", "0"], "rounds must be a positive integer"),
    (["--cell-timeout", "-1"], "cell timeout must be a finite number of seconds > 0"),
])
def test_bad_values_are_one_line_option_errors(argv, words):
    with pytest.raises(OptionError, match=words) as err:
        resolve(*argv)
    assert "\n" not in str(err.value)


def test_an_option_name_another_plugin_took_is_offered_with_the_detbench_prefix(tmp_path):
    (tmp_path / "profiling_like.py").write_text(
        "def pytest_addoption(parser):\n    parser.addoption('--profile', action='store_true')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "profiling_like", "--pyargs", "detbench.bench",
                           "--help"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--detbench-profile" in done.stdout and "--detbench-models" in done.stdout and "--models" in done.stdout


def test_another_projects_suite_keeps_its_options_and_imports_no_torch(tmp_path):
    """Installed, the plugin loads in every pytest session of the environment, before any conftest: a project whose
    conftest adds ``--seed`` or ``--models`` used to fail at start-up, and every session imported torch. Now such a
    project's suite runs green with its own options, and nothing of detbench's imports torch there."""
    (tmp_path / "conftest.py").write_text(
        "def pytest_addoption(parser):\n"
        "    parser.addoption('--seed', type=int, default=7)\n"
        "    parser.addoption('--models', default='mine')\n"
        "    parser.addoption('--profile', action='store_true')\n")
    (tmp_path / "test_theirs.py").write_text(
        "import sys\n\n"
        "def test_own_options(request):\n"
        "    assert request.config.getoption('--seed') == 3 and request.config.getoption('--models') == 'mine'\n"
        "    assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--seed", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


def test_a_weights_file_torch_did_not_save_is_refused_before_any_cell(tmp_path):
    """``--weights resnet50=/etc/passwd`` used to error every cell of the model and exit 0."""
    import torch

    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(OptionError, match=r"not a file torch\.save wrote") as err:
        resolve("--weights", f"resnet50={text}")
    assert str(text) in str(err.value) and "\n" not in str(err.value)
    saved = tmp_path / "r.pth"
    torch.save({"w": torch.zeros(1)}, saved)
    assert resolve("--weights", f"resnet50={saved}").options.weights == {"resnet50": str(saved)}


def test_a_cell_timeout_that_bounds_nothing_is_said(tmp_path):
    """Inline isolation runs cells in the measuring process, which no timeout stops: a --cell-timeout there used to
    be ignored silently; it is said once (not refused: the same command line may serve a GPU host)."""
    (note,) = resolve("--cell-timeout", "30").notes
    assert "--cell-timeout 30 bounds nothing here" in note and "--isolation model" in note
    assert resolve("--cell-timeout", "30", "--isolation", "model").notes == ()
    assert resolve().notes == ()
