"""A run cut by a signal at a random moment mid-group keeps every round it finished, and its resume measures only
what was missing (issue 37).

Each test starts a real run of one group (tiny_convnet infer at batch 1, 2 and 4, interleaved) in a pytest
subprocess, waits until the journal holds the group's first block, then a seeded random delay (the seed is the
test's parameter and is named in every failure message), and signals it: SIGTERM (the run ends as Ctrl-C does;
the worker a subprocess, ``--isolation model``, or the run itself, ``inline``) or SIGKILL (nothing cleans up: the
measuring process itself, ``--isolation inline``). The worker writes a witness line after every block it finished
(detbench.bench.runtime.faults.witness); then:

- every block the witness saw is in the journal;
- ``--detbench-resume`` of the journal times only the missing rounds: every block of the cut journal comes back
  unchanged in the final JSON, none twice;
- the final JSON holds, cell for cell, what an uncut run holds: every cell ok with every round (of every repeat).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from detbench.bench.core.journal import read_journal
from detbench.bench.core.record import latest_lines, load_results
from tests.bench.plugin.test_smoke_e2e import ROOT, run_pytest

ROUNDS = 6
GROUP = ("--profile", "smoke", "--models", "tiny_convnet", "--modes", "infer", "--batch-sizes", "1,2,4",
         "--image-size", "32x32", "--model-modules", "tests.bench.tiny_models", "--rounds", str(ROUNDS),
         "--block-s", "0.05")
CELLS = {f"tiny_convnet-infer-eager-fp32-bs{b}-gpu1-32x32" for b in (1, 2, 4)}


def _cut(tmp_path: Path, stop: signal.Signals, seed: int, *extra: str) -> tuple[Path, Path, str]:
    """Start the run, signal it at a seeded random moment after its first block; its JSON, journal and output."""
    out, witness = tmp_path / "r.json", tmp_path / "witness.txt"
    journal = out.with_name("r.journal.jsonl")
    command = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", *GROUP, *extra,
               f"--benchmark-json={out}"]
    delay = random.Random(seed).uniform(0.0, 0.4)  # the group's 3 x 6 blocks of 0.05 s take longer: mid-group
    scratch = tmp_path / "tmp"  # its TMPDIR: a SIGKILLed run cannot remove its group folder (detbench-group-*)
    scratch.mkdir(exist_ok=True)
    with open(tmp_path / "cut.log", "w") as sink:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "DETBENCH_TEST_WITNESS": str(witness), "TMPDIR": str(scratch)})
        try:
            deadline = time.monotonic() + 120
            while not (journal.exists() and '"round":' in journal.read_text()):  # the group's first block is in
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "cut.log").read_text()
                time.sleep(0.02)
            time.sleep(delay)
            proc.send_signal(stop)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out, journal, f"seed {seed} (signal {stop.name} {delay:.3f} s after the first block)"


def _blocks(results) -> dict[str, list[tuple]]:
    """cell id -> its blocks as (repeat, round, iterations, median_ms, wall_s), over the latest line of each repeat."""
    out: dict[str, list[tuple]] = {}
    for r in latest_lines(results):
        if r.repeat is None and any(x.repeat is not None for x in results if x.cell.id == r.cell.id):
            continue  # a merged line of a repeats run: its repeats' lines count
        for b in r.measurement.blocks if r.measurement else []:
            out.setdefault(r.cell.id, []).append((r.repeat or b.repeat, b.round, b.iterations, b.median_ms, b.wall_s))
    return out


def _check_cut_and_resume(tmp_path: Path, stop: signal.Signals, seed: int, repeats: int, *extra: str) -> None:
    out, journal, moment = _cut(tmp_path, stop, seed, *extra, *(("--repeats", str(repeats)) if repeats > 1 else ()))
    witnessed = Counter(line.split()[0] for line in (tmp_path / "witness.txt").read_text().splitlines())
    cut = read_journal(journal)
    kept = _blocks(cut)
    assert sum(map(len, kept.values())) < len(CELLS) * ROUNDS * repeats, f"{moment}: the cut missed the group"
    for cell_id, count in witnessed.items():  # every block finished before the signal is in the journal
        assert len(kept.get(cell_id, [])) >= count, f"{moment}: {cell_id} finished {count} blocks, journal holds {kept}"
    if stop == signal.SIGTERM:  # stopped as Ctrl-C: its JSON holds the cut cells as partial, with what they have,
        data = json.loads(out.read_text())  # never among pytest-benchmark's (complete) benchmarks
        assert all(b["extra_info"]["detbench_status"] == "ok" for b in data["benchmarks"]), moment
        assert {c["status"] for c in data["detbench"]["not_measured"]} <= {"partial"}, moment
        for r in load_results(out):
            has = len(kept.get(r.cell.id, []))
            assert (r.status == "ok") == (has == ROUNDS * repeats), f"{moment}: {r.cell.id}"
            assert r.measurement is None or has == r.measurement.rounds, f"{moment}: {r.cell.id}"

    resumed = run_pytest(*GROUP, *extra, *(("--repeats", str(repeats)) if repeats > 1 else ()),
                         f"--benchmark-json={out}", "--detbench-resume", str(journal), timeout=180)
    assert resumed.returncode == 0, f"{moment}\n{resumed.stdout[-3000:]}{resumed.stderr[-2000:]}"
    final = {r.cell.id: r for r in load_results(out)}
    assert set(final) == CELLS, moment
    for cell_id, result in final.items():  # what an uncut run holds: every round of every repeat, once
        assert result.status == "ok", f"{moment}: {cell_id} {result.status} {result.reason}"
        pairs = [(b.repeat, b.round) for b in result.measurement.blocks]
        assert sorted(pairs) == [(p, r) for p in range(repeats) for r in range(ROUNDS)], f"{moment}: {pairs}"
        assert result.measurement.rounds == ROUNDS * repeats and result.measurement.repeats == repeats, moment
        now = {(b.repeat, b.round): (b.iterations, b.median_ms, b.wall_s) for b in result.measurement.blocks}
        for repeat, round_index, *figures in kept.get(cell_id, []):  # the cut rounds were not timed again
            assert now[repeat, round_index] == tuple(figures), f"{moment}: {cell_id} round {repeat}/{round_index}"
    if repeats == 1:  # a continued cell names the rounds it took from the cut run
        for cell_id, blocks in kept.items():
            taken = len(blocks) if len(blocks) < ROUNDS else 0
            assert final[cell_id].measurement.resumed_rounds == taken, f"{moment}: {cell_id}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [37])
def test_a_run_sigtermed_mid_group_keeps_its_rounds_and_its_resume_times_only_the_missing_ones(tmp_path, seed):
    _check_cut_and_resume(tmp_path, signal.SIGTERM, seed, 1, "--isolation", "model")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [38])
def test_a_run_sigkilled_mid_group_keeps_its_rounds_and_its_resume_times_only_the_missing_ones(tmp_path, seed):
    _check_cut_and_resume(tmp_path, signal.SIGKILL, seed, 1, "--isolation", "inline")


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("stop", "seed"), [(signal.SIGKILL, 39), (signal.SIGTERM, 41)])
def test_a_repeats_run_cut_mid_group_resumes_to_every_round_of_every_repeat(tmp_path, stop, seed):
    _check_cut_and_resume(tmp_path, stop, seed, 3, "--isolation", "inline")
