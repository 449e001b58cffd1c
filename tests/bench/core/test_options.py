"""RunOptions and RoundsPolicy reject impossible values in one line naming what is allowed."""

from __future__ import annotations

import pytest

from detbench.bench.core.options import RoundsPolicy, RunOptions


@pytest.mark.parametrize("kwargs, words", [
    ({"telemetry_hz": float("inf")}, "telemetry rate must be within 0..1000 Hz"),
    ({"telemetry_hz": -1.0}, "telemetry rate"),
    ({"cell_timeout_s": float("nan")}, "cell timeout"),
    ({"isolation": "docker"}, "valid: model, cell, inline"),
    ({"repeats": 0}, r"repeats must be an integer within 1\.\.100, got 0"),
    ({"repeats": 2.5}, "repeats must be an integer"),
])
def test_bad_run_options_are_one_line_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        RunOptions(**kwargs)


def test_process_isolation_is_the_old_name_of_cell_and_policies_round_trip():
    options = RunOptions(isolation="process", rounds=RoundsPolicy(rounds=5, block_s=0.25))
    assert options.isolation == "cell"
    again = RunOptions.from_dict(options.to_dict())
    assert again == options and again.rounds_policy("cuda").rounds == 5
    assert RunOptions().rounds_policy("cuda").block_s == 0.5 and RunOptions().rounds_policy("cpu").block_s == 0.1
    with pytest.raises(ValueError, match="block seconds"):
        RoundsPolicy(block_s=float("inf"))
