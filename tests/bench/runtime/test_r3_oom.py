"""Out of host memory on the CPU (issue 24): a cell too large for the host is its own ``oom`` and the group's other
cells are kept (inline isolation: the input estimate refuses it, the address-space cap makes a too-large step fail
to allocate instead of the OOM killer ending pytest); CPU allocator errors, MemoryError and an OOM-killed worker
are ``oom``, and the ``max`` batch search takes them as the boundary."""

from __future__ import annotations

import math
import resource
import signal

import pytest

from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.runtime import batch_search, device, launch, torchrun
from detbench.bench.runtime.failures import classify_failure
from detbench.envcheck.isolate import Supervisor
from tests.bench.runtime.torchrun_helpers import fast_options, tiny, write_error_file

CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 524288000 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("isolation", ["inline", "model"])
def test_a_batch_whose_input_exceeds_the_hosts_memory_is_refused_and_the_small_cell_is_kept(isolation):
    # --batch-sizes 2,30000 at an image size where batch 30000 needs twice the host's memory for its input alone
    available = device.available_memory_bytes()
    assert available, "needs /proc/meminfo"
    side = math.ceil(math.sqrt(2 * available / (30000 * 3 * 4)))
    small, big = (Cell("tiny_convnet", "infer", "eager", "fp32", batch, 1, (side, side)) for batch in (2, 30000))
    small, big = launch.run_group([small, big], fast_options(isolation=isolation))
    assert small.status == "ok", small.reason
    assert big.status == "oom", big.reason
    assert "input alone" in big.reason and "GiB available" in big.reason
    assert big.memory_requested_bytes == 30000 * side * side * 3 * 4


def test_inline_a_step_that_would_exhaust_the_host_fails_to_allocate_and_the_group_goes_on(monkeypatch):
    # the host "has" 256 MiB: the input of batch 8000 (98 MB) passes the estimate, its activations (8 channels,
    # 260 MB each) do not fit: without the cap they would be allocated (here) or end pytest (on a full host)
    monkeypatch.setattr(device, "available_memory_bytes", lambda: 256 * 2**20)
    before = resource.getrlimit(resource.RLIMIT_AS)
    small, big = launch.run_group([tiny("infer", 1, 2), tiny("infer", 1, 8000)], fast_options(isolation="inline"))
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # the cap is lifted after the attempt
    assert small.status == "ok", small.reason
    assert big.status == "oom", (big.status, big.reason)
    assert "can't allocate memory" in big.reason


@pytest.mark.parametrize("exc", [RuntimeError(CPU_OOM), MemoryError()])
def test_host_out_of_memory_is_classified_oom(exc):
    result = classify_failure(tiny("infer", 1), exc, "cpu")
    assert result.status == "oom" and result.reason
    if isinstance(exc, RuntimeError):
        assert result.memory_requested_bytes == 524288000


def test_a_worker_killed_by_the_oom_killer_is_told_apart_from_one_the_supervisor_killed(tmp_path, monkeypatch):
    counts = iter([7, 8])  # the kernel's oom_kill count rose while the child ran
    monkeypatch.setattr("detbench.envcheck.isolate.oom_kill_count", lambda: next(counts))
    job = Supervisor(["sh", "-c", "kill -9 $$"], tmp_path / "out.txt").start()
    job.watch(30)
    done = job.finish()
    assert done.returncode == -signal.SIGKILL and done.oom_killed
    assert "OOM killer" in done.describe()


def test_the_batch_search_takes_a_cpu_oom_as_the_boundary():
    def probe(cell):
        if cell.batch_size > 40:
            return classify_failure(cell, RuntimeError(CPU_OOM), "cpu")
        return CellResult(cell, status="ok", throughput_ips=float(cell.batch_size))

    outcome = batch_search.search(tiny("infer", 1), probe, start=8, limit=512, tolerance=0.0)
    assert outcome.failed is None, outcome.search.stop_reason
    assert (outcome.search.largest_fit, outcome.search.smallest_oom) == (40, 41)


TORCHRUN_KILLED = """
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 6410)
  error_file: <N/A>
"""


def test_a_rank_killed_while_the_oom_killer_struck_is_oom_and_a_rank_out_of_host_memory_too(tmp_path):
    assert torchrun._rank_failure(TORCHRUN_KILLED, tmp_path, {}).status == "error"  # SIGKILL alone says nothing
    failure = torchrun._rank_failure(TORCHRUN_KILLED, tmp_path, {}, oom_killer_struck=True)
    assert failure.status == "oom" and "OOM killer" in failure.reason
    write_error_file(tmp_path, 1, f"RuntimeError: {CPU_OOM}")
    assert torchrun._rank_failure(TORCHRUN_KILLED.replace("-9", "1"), tmp_path, {}).status == "oom"


def test_inline_out_of_memory_outside_a_cells_step_keeps_the_finished_cells(monkeypatch):
    from detbench.bench.runtime import engine

    real = engine.measure_group

    def first_then_out_of_memory(cells, options, device, *, events, prior=None):
        real(cells[:1], options, device, events=events)
        events.phase(cells[1].id, "set-up")
        raise MemoryError()

    monkeypatch.setattr(engine, "measure_group", first_then_out_of_memory)
    small, big = launch.run_group([tiny("infer", 1, 2), tiny("infer", 1, 4)], fast_options(isolation="inline"))
    assert small.status == "ok", small.reason
    assert big.status == "oom" and "out of host memory" in big.reason
