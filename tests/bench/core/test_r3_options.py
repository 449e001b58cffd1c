"""Issue 24 (round three), the options: CPU ranks bounded by the machine, seeds and weights checked before any work,
empty values and non-ASCII digits refused as one line naming the option."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detbench.bench.core import config
from detbench.bench.core.options import MAX_SEED, OptionError, RunOptions

ROOT = Path(__file__).resolve().parents[3]
MODELS = ["retinanet_resnet50_fpn", "resnet50"]
GIB = 1024**3


def resolve(*argv: str, cuda: bool = False, host: config.CpuHost | None = None) -> config.RunConfig:
    parser = argparse.ArgumentParser()
    config.add_to_argparse(parser)
    return config.resolve(vars(parser.parse_args(list(argv))), cuda_available=cuda, known_models=MODELS,
                          cpu_host=host)


def one_line_error(*argv: str, **kwargs: object) -> str:
    with pytest.raises(OptionError) as err:
        resolve(*argv, **kwargs)  # type: ignore[arg-type]
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("host, bound", [
    (config.CpuHost(cores=2, memory_bytes=64 * GIB), 2),  # the cores bind
    (config.CpuHost(cores=64, memory_bytes=9 * GIB), 4),  # the memory binds: 2 GiB a rank
    (config.CpuHost(cores=8, memory_bytes=None), 8),  # memory unknown: the cores alone
    (config.CpuHost(cores=4, memory_bytes=GIB), 1),  # never below one rank
])
def test_cpu_ranks_are_bounded_by_cores_and_memory_and_the_line_states_the_bound(host, bound):
    assert host.max_ranks == bound
    assert resolve("--gpus", f"1,{bound}", host=host).filters.gpus == tuple(dict.fromkeys((1, bound)))
    text = one_line_error("--gpus", f"1,{bound + 1}", host=host)
    assert f"--gpus {bound + 1} needs {bound + 1} CPU ranks" in text
    assert f"at most {bound}" in text and "2 GiB per rank" in text and f"valid here: --gpus 1..{bound}" in text


def test_on_cuda_more_gpus_than_visible_is_left_to_the_recorded_skip():
    # a CUDA machine skips such cells with "needs N GPUs, M visible" (detbench.bench.core.matrix.skip_reason): kept
    small = config.CpuHost(cores=1, memory_bytes=GIB)
    assert resolve("--gpus", "64", cuda=True, host=small).filters.gpus == (64,)


def test_gpus_64_on_the_cpu_is_a_pytest_usage_error_before_any_rank_starts(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "bench"), "-p", "no:cacheprovider", "--gpus",
                           "64", "--models", "resnet50", f"--benchmark-json={tmp_path / 'run.json'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(errors) == 1 and "--gpus 64 needs 64 CPU ranks" in errors[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "run.json").exists() and not (tmp_path / ".detbench").exists()


@pytest.mark.parametrize("seed", [str(2**64), "-1"])
def test_a_seed_outside_torchs_range_is_refused_with_the_range(seed):
    text = one_line_error("--seed", seed)
    assert seed in text and f"0..{MAX_SEED}" in text
    assert resolve("--seed", str(MAX_SEED)).options.seed == MAX_SEED
    with pytest.raises(OptionError, match="seed must be an integer"):
        RunOptions(seed=2**64)  # whatever fills the options (a resumed journal, detbench-ab) is checked the same


def test_weights_naming_a_missing_file_or_an_unknown_model_are_refused(tmp_path):
    text = one_line_error("--weights", f"resnet50={tmp_path / 'missing.pth'}")
    assert "missing.pth does not exist" in text and "--weights resnet50=" in text
    assert "is a directory" in one_line_error("--weights", f"resnet50={tmp_path}")
    assert "unknown model 'nope' in --weights; valid: retinanet_resnet50_fpn, resnet50" in one_line_error(
        "--weights", f"nope={tmp_path / 'missing.pth'}")
    state_dict = tmp_path / "r.pth"
    state_dict.write_bytes(b"PK\x03\x04")  # how torch.save's zip files start (an empty file is refused)
    assert resolve("--weights", f"resnet50={state_dict}").options.weights == {"resnet50": str(state_dict)}


@pytest.mark.parametrize("option, value", [
    ("--compile", ""), ("--batch-sizes", ","), ("--precisions", ""), ("--modes", " , "), ("--memory-format", ""),
    ("--gpus", ""), ("--image-size", ""), ("--models", ""),
])
def test_an_empty_value_is_refused_rather_than_falling_back_to_the_profile(option, value):
    text = one_line_error(option, value)
    assert text.startswith(f"{option} is empty") and f"e.g. {option} " in text


@pytest.mark.parametrize("option, value, bad, form", [
    ("--batch-sizes", "²", "bad batch size '²'", "positive integers or max"),
    ("--gpus", "1,²", "bad GPU count '²'", "--gpus 1,2,4"),
    ("--image-size", "²x²", "bad image size '²x²'", "HEIGHTxWIDTH"),
])
def test_a_digit_int_cannot_read_names_the_option_and_its_form(option, value, bad, form):
    """'²' is a digit to str.isdigit but not to int(): refused by the parser itself, naming the form."""
    text = one_line_error(option, value)
    assert text.startswith(bad) and form in text and "int()" not in text
