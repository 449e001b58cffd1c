"""detbench-ab's sides mode on the CPU: the line protocol of a real long-lived side, the gate end to end with tiny
models (a planted change, a side that dies, one that hangs, a `docker run -i` template through a fake docker, a
side speaking another protocol version, a budget with its first look, a SIGTERM that keeps the sides' results),
and its usage errors. The judge on synthetic data: tests/bench/core/test_judge.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detbench.bench.core.record import load_results
from detbench.bench.runtime.faults import FAULT_ENV, SLOWDOWN_ENV
from detbench.bench.runtime.protocol import PROTOCOL_VERSION, decode
from detbench.bench.tools import ab
from detbench.envcheck.isolate import is_alive

ROOT = Path(__file__).resolve().parents[3]
CELL = "tiny_convnet-infer-eager-fp32-bs4-gpu1-64x64"
NHWC = "tiny_convnet-infer-eager-fp32-channels_last-bs4-gpu1-64x64"
MATRIX = ["--models", "tiny_convnet", "--model-modules", "tests.bench.tiny_models", "--modes", "infer",
          "--precisions", "fp32", "--compile", "eager", "--batch-sizes", "4", "--image-size", "64x64",
          "--memory-format", "contiguous,channels_last"]


@pytest.fixture
def side_env(monkeypatch):
    """The sides import this checkout's bench and tests; one torch thread each (2-core CI machines)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in (SLOWDOWN_ENV, FAULT_ENV):
        monkeypatch.delenv(name, raising=False)


def gate(out: Path, *options: str) -> tuple[int, dict]:
    code = ab.main(["--out", str(out), "--block-s", "0.05", "--pin-cpus", "none", *options, "--", *MATRIX])
    return code, json.loads((out / "ab.json").read_text())


def test_a_side_speaks_the_line_protocol(side_env):
    cell = {"model": "tiny_convnet", "mode": "infer", "batch_size": 2, "image_size": [32, 32]}
    options = {"model_modules": ["tests.bench.tiny_models"], "count_flops": False, "telemetry_hz": 0}
    commands = [{"cmd": "setup", "cells": [cell, {**cell, "model": "no_such_model"}], "options": options,
                 "warmup_iterations": 2},
                {"cmd": "probe", "cell": "tiny_convnet-infer-eager-fp32-bs2-gpu1-32x32", "iterations": 2},
                {"cmd": "block", "cell": "tiny_convnet-infer-eager-fp32-bs2-gpu1-32x32", "round": 1, "iterations": 3},
                {"cmd": "result", "cell": "tiny_convnet-infer-eager-fp32-bs2-gpu1-32x32"}, {"cmd": "dance"},
                {"cmd": "quit"}]
    lines = "\n".join(json.dumps(c) for c in commands) + "\nnot json\n"
    proc = subprocess.run([sys.executable, "-m", "detbench.bench.runtime.side"], input=lines, capture_output=True,
                          text=True,
                          timeout=120)
    events = [e for e in map(decode, proc.stdout.splitlines()) if e is not None]
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds = [e["event"] for e in events]
    assert kinds == ["hello", "ready", "result", "ok", "ok", "block", "result", "error"], kinds
    assert events[0]["protocol"] == PROTOCOL_VERSION and events[0]["environment"]["torch"]
    assert events[2]["result"]["status"] in ("error", "skipped") and "no_such_model" in events[2]["result"]["reason"]
    assert events[1]["setup_s"] > 0 and events[1]["postprocess"] is None  # a classifier: nothing to calibrate
    assert events[4]["iterations"] == 2 and events[4]["median_ms"] > 0  # the probe that sizes the blocks
    block = events[5]["block"]
    assert block["round"] == 1 and block["iterations"] == 3 and len(events[5]["times_ms"]) == 3
    assert block["median_ms"] == pytest.approx(sorted(events[5]["times_ms"])[1], abs=1e-5)
    assert events[6]["final"] and events[6]["result"]["status"] == "ok"
    assert "unknown command 'dance'" in events[7]["message"]  # "quit" ends it before the unreadable line


@pytest.mark.timing
def test_a_planted_slowdown_is_a_regression_and_the_unplanted_cell_keeps_its_speed(side_env, tmp_path):
    """Three worker pairs: with two (one degree of freedom; t = 25.5 at Holm's 1.25 % against 6.2 with two), pairs
    that disagreed by ~18 % left the 3x plant inconclusive, 0.290 (0.034-2.508), in a clean clone (2026-12-06).
    The unplanted cell is checked for its ratio, not its verdict: once the plant is rejected, Holm's step-down tests
    it at the full 5 %, so even a true model flags it in about one run in twenty, and 3 pairs of 4 short rounds are
    not that model's design (docs/ab.md: the gate's error rates are its simulation's, at 8 pairs). 2026-12-06 the
    old check failed 2 of 3 timing phases (the one message kept: this cell a regression); the cell was a regression
    in 1 of 6 lab runs alone (0.974, 0.943-1.006) and an improvement in 1 of 6 beside a neighbour importing torch in
    a loop (1.054, 1.014-1.095); its ratio was 0.962-1.066 in all 12. A plant leaking into it would put it near 1/3.
    """
    code, payload = gate(tmp_path, "--pairs", "3", "--rounds", "4",
                         "--candidate-env", f"{SLOWDOWN_ENV}=tiny_convnet-infer-eager-fp32-bs4:2.0")
    assert code == ab.EXIT_REGRESSION, payload["verdict_line"]
    planted, other = payload["verdicts"][CELL], payload["verdicts"][NHWC]
    assert planted["verdict"] == "regression" and planted["ratio"] < 0.6  # 1 / 3 planted
    assert 0.8 < other["ratio"] < 1.25, other  # the plant is the one cell's, nothing of it in the other
    assert planted["units"] == 3 and sum(map(len, planted["ratios"])) == 12 and planted["cells"] == 2
    assert 0 < planted["detectable"] < 1 and ">= " in (tmp_path / "summary.md").read_text()
    # the order is random: both sides went first in some rounds; every side had its own environment padding
    firsts = {r["first"] for rounds in payload["cells"][CELL]["blocks"].values() for r in rounds}
    assert firsts <= {"baseline", "candidate"} and payload["seed"] is not None
    assert len({s["env_pad"] for s in payload["sides_started"]}) > 1
    assert payload["mode"] == "sides" and 0 < payload["duty_cycle"] < 1 and payload["timed_s"] > 0
    # every side's cells as an ordinary run file; no side process left
    runs = sorted(p.name for p in tmp_path.glob("*-?.json"))
    assert runs == [f"{side}-{pair}.json" for side in ("baseline", "candidate") for pair in range(3)]
    assert not list(tmp_path.glob(".calibration-*"))  # the run's calibration cache goes with the run
    assert not [s["pid"] for s in payload["sides_started"] if s["pid"] and is_alive(s["pid"])]
    assert "| regression |" in (tmp_path / "summary.md").read_text()


def test_a_side_that_dies_is_recorded_and_the_other_pairs_go_on(side_env, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "tiny_convnet-infer-eager-fp32-bs4:exit@round2")
    code, payload = gate(tmp_path, "--pairs", "2", "--rounds", "3", "--candidate-env", "UNUSED=1")
    # the fault fires in every side at round 2: every side dies there, and rounds 1's ratios remain
    verdict = payload["verdicts"][CELL]
    assert any("exited with code 3 while block" in note for note in payload["notes"]), payload["notes"]
    assert sum(map(len, verdict["ratios"])) >= 2 and verdict["verdict"] in ("inconclusive", "unchanged")
    assert code in (ab.EXIT_OK, ab.EXIT_REGRESSION)


@pytest.mark.timing  # its sides must answer within 8 s: both "hung" beside xdist workers under load
@pytest.mark.waits  # ~7 / ~14 CPU-s over 26 / 49 s of wall: it waits on the timeout
def test_a_hung_side_is_killed_at_the_side_timeout(side_env, tmp_path):
    began = time.monotonic()
    code, payload = gate(tmp_path, "--pairs", "2", "--rounds", "3", "--side-timeout", "20", "--candidate-env",
                         f"{FAULT_ENV}=tiny_convnet-infer-eager-fp32-channels_last-bs4:hang@round2")
    assert time.monotonic() - began < 150
    for name in ("candidate-0", "candidate-1"):
        assert any(f"{name} hung: no answer to block" in n for n in payload["notes"]), payload["notes"]
    assert sum(map(len, payload["verdicts"][NHWC]["ratios"])) == 2  # round 1 only; both candidates lost in round 2
    assert not [s["pid"] for s in payload["sides_started"] if s["pid"] and is_alive(s["pid"])]
    # a candidate that hangs mid-run fails the gate (it used to pass on the round it had finished)
    assert payload["verdicts"][NHWC]["verdict"] == "regression", payload["verdicts"][NHWC]
    assert "the candidate failed mid-run" in payload["verdicts"][NHWC]["reason"]
    assert code == ab.EXIT_REGRESSION


def test_a_docker_template_runs_the_side_through_docker_run_i(side_env, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls"
    fake = bin_dir / "docker"
    # a fake docker: records its arguments, drops `run` and the options and the image, runs the rest here, with this
    # interpreter as the image's `python` (the one on PATH may lack torch where the venv is not activated)
    fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
shift
while [[ $1 == -* ]]; do shift; done
shift
if [[ $1 == python ]]; then shift; exec "{sys.executable}" "$@"; fi
exec "$@"
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, payload = gate(tmp_path / "out", "--pairs", "2", "--rounds", "3",
                         "--baseline-cmd", "docker run -i --rm base:1 {worker}",
                         "--candidate-cmd", "docker run -i --rm cand:2 {worker}")
    assert code in (ab.EXIT_OK, ab.EXIT_REGRESSION), payload["verdict_line"]
    recorded = calls.read_text().splitlines()
    assert sorted(recorded) == ["run -i --rm base:1 python -m detbench.bench.runtime.side"] * 2 + [
        "run -i --rm cand:2 python -m detbench.bench.runtime.side"] * 2
    assert sum(map(len, payload["verdicts"][CELL]["ratios"])) == 6
    assert payload["sides"][0]["template"] == "docker run -i --rm base:1 {worker}"


def test_a_side_speaking_another_protocol_is_refused_naming_both_versions(side_env, tmp_path):
    old = tmp_path / "old_side.py"
    old.write_text("import json, sys\nprint('@detbench ' + json.dumps({'event': 'hello', 'protocol': 0}))\n"
                   "sys.stdout.flush()\nsys.stdin.readline()\n")
    code, payload = gate(tmp_path / "out", "--pairs", "2", "--rounds", "3", "--candidate-cmd",
                         f"{sys.executable} {old} {{worker}}")
    assert any(f"speaks protocol 0, this detbench-ab {PROTOCOL_VERSION}" in n for n in payload["notes"])
    assert payload["verdicts"][CELL]["verdict"] == "regression"  # the candidate measured nothing
    assert code == ab.EXIT_REGRESSION


@pytest.mark.parametrize("argv, message", [
    (["--candidate-cmd", "docker run img"], "needs {worker} (sides) or {json} (rounds)"),
    (["--mode", "sides", "--candidate-cmd", "docker run img --out {json}"], "must start the side with {worker}"),
    (["--baseline-cmd", "docker run -i b {worker}", "--candidate-cmd", "x --json {json}"], "give both sides the same"),
    (["--pin-cpus", "99999"], "bad --pin-cpus '99999'; valid: auto, none, or CPUs"),
    (["--pairs", "1"], "--pairs must be 0 (auto) or within 2..16"),
    (["--budget-s", "5"], "--budget-s must be within [10, 1e6] seconds"),
    (["--", "--gpus", "2"], "unknown matrix option(s) for the sides mode: --gpus 2"),
    (["--", "--precisions", "fp64"], "unknown precision 'fp64'"),
])
def test_bad_sides_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert ab.main(["--out", str(tmp_path), *argv]) == ab.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err


@pytest.mark.timing
@pytest.mark.xdist_group("timing-budget")  # a measuring worker of its own: its wall is its 60 s budget
@pytest.mark.timeout(300)
def test_a_budget_stops_the_cells_decided_at_the_first_look_and_the_rest_go_on(side_env, tmp_path):
    """The channels_last cell's candidate is planted 1 % slower (1.8 % as measured here), inside the 2 % floor, off its
    centre: `regression` needs the change past the floor, and `unchanged` an interval inside +-2 % around it, which
    three worker pairs give at the first look only if they agree within a few hundredths of a percent; so it almost
    always goes on. Unplanted, a quiet machine let two pairs agree within the floor at the first look: both cells
    stopped there (CI, 2026-12-05) and the test had nothing left to watch; planted at 2.04 % the cell measured 0.975
    and was itself decided at the first look. Either way a stopped cell must say how it was decided.
    Three pairs, not two: with two pairs (one degree of freedom) the 4x plant (ratio ~0.16) is decided at Holm's
    0.5 % only if the pairs agree within ~3 %, which they did not after 64 rounds in CI (2026-12-06); with three
    (two degrees of freedom), within ~22 %."""
    code, payload = gate(tmp_path, "--pairs", "3", "--budget-s", "60", "--seed", "3", "--candidate-env",
                         f"{SLOWDOWN_ENV}=tiny_convnet-infer-eager-fp32-bs4:4.0,channels_last:0.01")
    planted, other = payload["verdicts"][CELL], payload["verdicts"][NHWC]
    assert payload["budget_s"] == 60 and payload["looks"] == 2 and payload["wall_s"] < 60 + 30
    assert planted["verdict"] == "regression" and "decided at the first look" in planted["reason"]
    assert payload["cells"][CELL]["stopped_at_first_look"]
    if payload["cells"][NHWC]["stopped_at_first_look"]:  # the chance above: then it says how it was decided
        assert "decided at the first look" in other["reason"], other
    else:  # the undecided cell got the time the decided one gave up
        assert sum(map(len, other["ratios"])) > sum(map(len, planted["ratios"]))
    assert code == ab.EXIT_REGRESSION


@pytest.mark.timeout(300)
def test_a_run_cut_by_sigterm_writes_the_sides_run_files_for_what_they_measured(side_env, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "detbench.bench.tools.ab", "--out", str(out), "--block-s", "0.05",
                             "--pin-cpus", "none", "--pairs", "2", "--rounds", "10000", "--", *MATRIX],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:  # until two rounds are on file
            ab_json = out / "ab.json"
            if ab_json.is_file() and json.loads(ab_json.read_text()).get("rounds_per_pair", 0) >= 2:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == ab.EXIT_INTERRUPTED, output[-2000:]
    payload = json.loads((out / "ab.json").read_text())
    assert payload["cut"] and payload["rounds_per_pair"] >= 2
    # every file says it was cut: the verdict line (ab.json, summary.md) and each side's run file
    assert "CUT BY A SIGNAL" in payload["verdict_line"] and "CUT BY A SIGNAL" in (out / "summary.md").read_text()
    assert json.loads((out / "candidate-1.json").read_text())["detbench"]["cut"] is True
    assert sorted(Path(f).name for f in payload["side_runs"]) == [
        "baseline-0.json", "baseline-1.json", "candidate-0.json", "candidate-1.json"]
    results = load_results(out / "baseline-0.json")
    assert {r.status for r in results} == {"ok"} and all(r.measurement and r.measurement.blocks for r in results)
    assert not [s["pid"] for s in payload["sides_started"] if s["pid"] and is_alive(s["pid"])]


def test_a_side_of_the_same_software_reads_the_leaders_calibration_instead_of_calibrating(monkeypatch, tmp_path):
    """detbench-ab calibrates post-processing once: the leader's set-up writes the run's calibration cache (the
    folder run_gate gives every side), and a side of the same software reads the same threshold there."""
    import io

    from detbench.bench.models.postprocess import CACHE_ENV
    from detbench.bench.runtime.side import SideWorker
    from detbench.bench.runtime.side_client import CALIBRATION_CACHE_ENV

    assert CALIBRATION_CACHE_ENV == CACHE_ENV  # the coordinator names the folder without importing torch
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else the side sets this process's torch threads to 1
    cell = {"model": "ssdlite320_mobilenet_v3_large", "mode": "infer", "batch_size": 1, "image_size": [64, 64]}
    options = {"count_flops": False, "telemetry_hz": 0}
    ready = []
    for _ in range(2):  # the leader, then another side of the same software
        out = io.StringIO()
        SideWorker(out).setup([cell], options)
        ready += [e for e in map(decode, out.getvalue().splitlines()) if e and e["event"] == "ready"]
    assert [e["calibration"] for e in ready] == ["calibrated", "cached"]
    assert ready[0]["postprocess"]["score_thresh"] == ready[1]["postprocess"]["score_thresh"]
    assert ready[1]["calibration_s"] < ready[0]["calibration_s"]
