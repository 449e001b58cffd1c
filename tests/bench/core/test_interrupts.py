"""A stop signal lands after a record, not inside it: the run's JSON and its journal hold the same blocks."""

from __future__ import annotations

import os
import signal

import pytest

from detbench.bench.core import interrupts
from detbench.bench.core.journal import Journal, read_journal
from detbench.bench.core.matrix import Capabilities
from detbench.bench.core.options import RunOptions
from detbench.bench.core.schema import Cell, CellResult, Measurement
from detbench.bench.plugin.plugin import _interrupt_on_sigterm
from detbench.bench.runtime import run as suite


@pytest.fixture
def sigterm_as_ctrl_c():
    """The pytest face's SIGTERM handler, as `pytest bench/` installs it; the previous one back afterwards."""
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_stop_outside_a_section_is_raised_at_once(sigterm_as_ctrl_c):
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the stop was not raised at once")


def test_a_stop_inside_nested_sections_is_raised_as_the_outermost_ends_and_the_first_wins(sigterm_as_ctrl_c):
    done = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), interrupts.whole():
        with interrupts.whole():
            os.kill(os.getpid(), signal.SIGTERM)
            interrupts.interrupt(KeyboardInterrupt("a second stop"))
            done.append("inner")
        done.append("outer")
    assert done == ["inner", "outer"]
    with pytest.raises(KeyboardInterrupt, match="now"):  # nothing left pending: the next stop is its own
        interrupts.interrupt(KeyboardInterrupt("now"))


class _StoppedWhileWriting(Journal):
    """A journal whose append is where SIGTERM arrives (the window a clean clone's CI hit)."""

    def append(self, result: CellResult) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        super().append(result)


def test_a_sigterm_inside_a_blocks_record_leaves_the_json_and_the_journal_agreeing(tmp_path, sigterm_as_ctrl_c):
    cell = Cell("tiny_convnet", batch_size=2)
    journal = _StoppedWhileWriting(tmp_path / "run.journal.jsonl")
    run = suite.BenchRun(RunOptions(), Capabilities(cuda_available=False), [cell], journal)
    block = CellResult(cell, status="partial", measurement=Measurement(timer="perf-counter", iterations=3,
                                                                       timed_s=0.01, isolation="inline", rounds=2))
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run._journal_progress(block)
    journal.close()
    (kept,) = read_journal(journal.path)
    assert run._progress == {cell.id: block} and kept.measurement is not None and kept.measurement.rounds == 2
