"""detbench-ab: sides, paired ratios and verdicts (the subprocess rounds are faked here; see test_ab_e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detbench.bench.core.schema import Cell
from detbench.bench.tools import ab
from detbench.bench.tools.ab_sides import CellRecord, default_pairs, judge_cells

ROOT = Path(__file__).resolve().parents[3]


def side_round(side: str, index: int, ips: dict[str, float], status: dict[str, str] | None = None) -> ab.SideRound:
    return ab.SideRound(side, index, f"{side}-{index}.json", 0, 1.0, dict(ips),
                        status or {cell: "ok" for cell in ips})


def rounds_of(base: list[float], cand: list[float], cell: str = "m-infer-eager-fp32-bs8-gpu1"):
    return [(side_round("baseline", i, {cell: b}), side_round("candidate", i, {cell: c}))
            for i, (b, c) in enumerate(zip(base, cand))]


def test_host_drift_shared_by_both_sides_cancels_and_a_ten_percent_loss_is_flagged():
    host = [1.0, 0.7, 0.95, 0.65, 1.0]
    verdicts = ab.judge(rounds_of([100 * h for h in host], [90 * h for h in host]), threshold=0.05)
    (verdict,) = verdicts.values()
    assert verdict["verdict"] == "regression"
    assert verdict["ratio"] == pytest.approx(0.9)


def test_same_software_under_the_same_drift_is_unchanged():
    host = [1.0, 0.7, 0.95, 0.65, 1.0]
    noise = [1.004, 0.997, 1.001, 0.999, 1.003]
    verdicts = ab.judge(rounds_of([100 * h for h in host], [100 * h * n for h, n in zip(host, noise)]), 0.05)
    assert next(iter(verdicts.values()))["verdict"] == "unchanged"


def test_a_cell_the_candidate_lost_is_a_regression_naming_its_status():
    cell = "m-infer-eager-fp32-bs8-gpu1"
    rounds = [(side_round("baseline", i, {cell: 100.0}), side_round("candidate", i, {}, {cell: "oom"}))
              for i in range(3)]
    verdict = ab.judge(rounds, 0.05)[cell]
    assert verdict["verdict"] == "regression" and "oom" in verdict["reason"]


def test_nothing_measured_by_the_baseline_is_nothing_comparable():
    rounds = [(side_round("baseline", 0, {}), side_round("candidate", 0, {}))]
    assert ab.judge(rounds, 0.05) == {}
    assert "nothing comparable" in ab.verdict_line({}, 0.05, 1)


def test_one_round_is_inconclusive():
    verdicts = ab.judge(rounds_of([100.0], [50.0]), 0.05)
    assert next(iter(verdicts.values()))["verdict"] == "inconclusive"


def test_interpreter_side_runs_pytest_on_the_installed_bench_package(tmp_path: Path):
    command = ab.SideSpec("baseline", python="/venv/bin/python").command(tmp_path / "b.json", ["--models", "x"])
    # this checkout's bench first (detbench.bench.runtime.side_client.run_module), then pytest on the bench package, the
    # plugin loaded by module (no entry point needed in the side's venv)
    assert command[0] == "/venv/bin/python" and command[4:6] == ["pytest", str(ROOT / "bench")]
    plugin = command.index("detbench.bench.plugin.plugin")
    assert command[plugin - 3:plugin + 1] == ["-p", "no:detbench", "-p", "detbench.bench.plugin.plugin"]
    assert f"--benchmark-json={tmp_path / 'b.json'}" in command and command[-2:] == ["--models", "x"]


def test_template_side_fills_the_fields_quoted(tmp_path: Path):
    side = ab.SideSpec("candidate", template="docker run -v {dir}:/results img pytest bench/ "
                                         "--benchmark-json=/results/{name} {args}")
    command = side.command(tmp_path / "c r.json", ["--models", "a b"])
    assert command == (f"docker run -v {tmp_path}:/results img pytest bench/ --benchmark-json=/results/'c r.json' "
                       "--models 'a b'")


@pytest.mark.parametrize("argv, message", [
    (["--mode", "rounds", "--candidate-cmd", "docker run img"], "must write its result to {json}"),
    (["--baseline-env", "NOVALUE"], "use NAME=VALUE"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--threshold", "1.5"], "--threshold must be a fraction"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert ab.main([*argv, "--out", str(tmp_path)]) == ab.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_the_summary_lists_regressions_and_inconclusive_cells_first_with_the_verdict_line():
    rounds = rounds_of([100.0] * 5, [90.0, 89.0, 91.0, 90.0, 90.5], "a-infer-eager-fp32-bs8-gpu1")
    verdicts = ab.judge(rounds, 0.05)
    verdicts["z-infer-eager-fp32-bs1-gpu1"] = ab.judge(rounds_of([100.0], [100.0]), 0.05)["m-infer-eager-fp32-bs8-gpu1"]
    verdicts["b-infer-eager-fp32-bs1-gpu1"] = ab.judge(rounds_of([100.0] * 3, [100.0] * 3), 0.05)[
        "m-infer-eager-fp32-bs8-gpu1"]
    line = ab.verdict_line(verdicts, 0.05, 5)
    text = ab.summary_markdown(verdicts, line, ab.SideSpec("baseline", template="docker run base:1 {json}"),
                               ab.SideSpec("candidate", env=(("DETBENCH_TEST_SLOWDOWN", "a:0.1"),)))
    rows = [r.split(" | ")[0].lstrip("| ") for r in text.splitlines() if r.startswith("| ") and "-gpu1" in r]
    assert rows == ["a-infer-eager-fp32-bs8-gpu1", "z-infer-eager-fp32-bs1-gpu1", "b-infer-eager-fp32-bs1-gpu1"]
    assert f"**{line}**" in text and "1 inconclusive" in line
    assert "candidate (`this interpreter` with DETBENCH_TEST_SLOWDOWN=a:0.1) vs baseline (`docker run base:1" in text


def test_a_candidate_that_dies_mid_run_is_a_regression_whatever_its_finished_rounds_say():
    """A candidate side that died (or hung) after some rounds used to be judged on the rounds it finished: the gate
    passed ("unchanged") where one that failed at start was a regression. Now both are, naming the failure; a
    side lost on both sides as often (the host, not the candidate) is judged as before."""
    def record(model: str, lost: dict[str, int]) -> CellRecord:
        r = CellRecord(Cell(model, "infer", "eager", "fp32", 8, 1), baseline_ok=True, candidate_ok=True)
        r.blocks = {p: [{"base_ms": 10.0 * (1 + 0.01 * ((p + k) % 3 - 1)), "cand_ms": 10.0} for k in range(4)]
                    for p in range(6)}
        r.lost.update(lost)
        if lost["candidate"]:
            r.failures.append("candidate-3 exited with code -11 while block")
        return r

    verdicts = judge_cells({"died": record("died", {"candidate": 1, "baseline": 0}),
                            "both": record("both", {"candidate": 1, "baseline": 1}),
                            "fine": record("fine", {"candidate": 0, "baseline": 0})}, 0.02)
    assert verdicts["died"].verdict == "regression" and verdicts["died"].ratio is not None
    assert verdicts["died"].reason.startswith("the candidate failed mid-run (its side lost 1 block(s) where the "
                                              "baseline's lost 0: candidate-3 exited with code -11 while block)")
    assert verdicts["both"].verdict in ("unchanged", "inconclusive")
    assert verdicts["fine"].verdict in ("unchanged", "inconclusive")


def test_worker_pairs_are_sized_from_the_first_sides_device():
    assert default_pairs({"free_bytes": 80 << 30, "cpus": 16}) == 8  # an H100: 8 pairs
    assert default_pairs({"free_bytes": 20 << 30}) == 2  # a small GPU: what its memory holds, at least 2
    assert default_pairs({"cpus": 2}) == 8 and default_pairs({"cpus": 1}) == 4  # the CPU: 4 a core, at most 8


def test_the_sides_cells_are_judged_together_and_a_cell_the_candidate_lost_is_a_regression():
    def record(model: str, ratio: float, candidate_ok: bool = True) -> CellRecord:
        r = CellRecord(Cell(model, "infer", "eager", "fp32", 8, 1), baseline_ok=True, candidate_ok=candidate_ok)
        if candidate_ok:
            r.blocks = {p: [{"base_ms": 10.0 * ratio * (1 + 0.01 * ((p + k) % 3 - 1)), "cand_ms": 10.0}
                            for k in range(4)] for p in range(6)}
        return r

    verdicts = judge_cells({"a": record("a", 1.0), "b": record("b", 0.8), "c": record("c", 1.0, False)}, 0.02)
    assert verdicts["b"].verdict == "regression" and verdicts["b"].cells == 2  # the lost cell takes no share
    assert verdicts["c"].verdict == "regression" and "not in the candidate" in verdicts["c"].reason
    assert verdicts["a"].verdict in ("unchanged", "inconclusive")


def test_a_rounds_run_cut_by_a_signal_keeps_its_finished_rounds_and_its_files_say_it_was_cut(tmp_path, monkeypatch):
    """A SIGTERM (raised as KeyboardInterrupt) in round 3: ab.json and summary.md keep rounds 1-2 and say the run was
    cut, in the verdict line a CI job greps; the exit is 130."""
    import json

    cell = "m-infer-eager-fp32-bs8-gpu1"
    calls = []

    def fake_run_side(side, index, out, bench_args, timeout_s):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt("stopped by signal 15 (SIGTERM)")
        return side_round(side.label, index, {cell: 100.0 if side.label == "baseline" else 99.0})

    monkeypatch.setattr(ab, "run_side", fake_run_side)
    code = ab.main(["--mode", "rounds", "--rounds", "5", "--out", str(tmp_path), "--candidate-env", "X=1", "--",
                    "--models", "resnet50"])
    assert code == ab.EXIT_INTERRUPTED and max(calls) == 2
    payload = json.loads((tmp_path / "ab.json").read_text())
    assert payload["cut"] is True and len(payload["rounds"]) == 2
    assert "CUT BY A SIGNAL" in payload["verdict_line"] and "2 paired rounds" in payload["verdict_line"]
    assert "CUT BY A SIGNAL" in (tmp_path / "summary.md").read_text()
    assert len(payload["verdicts"][cell]["ratios"]) == 2


def test_the_side_timeout_bounds_a_timed_block_too():
    """A block waits at most --side-timeout (it used to wait 40 blocks' time whatever the option said), and at most
    40 blocks' time (60 s at least) under a long --side-timeout."""
    from detbench.bench.tools.ab_sides import block_timeout_s

    assert block_timeout_s(0.25, 5.0) == 5.0 and block_timeout_s(1.0, 20.0) == 20.0
    assert block_timeout_s(0.25, 600.0) == 60.0 and block_timeout_s(2.0, 600.0) == 80.0
