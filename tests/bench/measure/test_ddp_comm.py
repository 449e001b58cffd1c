"""The all-reduce timing comm hook: interval arithmetic, and the hook inside a real 1-rank gloo DDP."""

import socket

import pytest
import torch
import torch.distributed as dist

from detbench.bench.measure.ddp_comm import AllReduceTimer, HostClock, busy_ms, summarise, wait_ms


def test_busy_is_the_union_of_overlapping_all_reduces():
    assert busy_ms([(0.0, 4.0), (2.0, 6.0), (10.0, 11.0)]) == pytest.approx(7.0)
    assert busy_ms([(1.0, 5.0), (2.0, 3.0)]) == pytest.approx(4.0)
    assert busy_ms([]) == 0.0


def test_wait_runs_from_the_last_bucket_handed_over_to_the_last_finish():
    # buckets handed over at 10, 20, 30 ms of backward; the last all-reduce ends at 42 ms
    assert wait_ms([(10.0, 18.0), (20.0, 31.0), (30.0, 42.0)]) == pytest.approx(12.0)
    assert wait_ms([(10.0, 12.0), (30.0, 29.0)]) == 0.0  # all hidden behind backward


def test_summary_shares_are_over_the_timed_steps():
    steps = [[(10.0, 18.0), (30.0, 40.0)], [(10.0, 15.0), (30.0, 35.0)]]
    stats = summarise(steps, [50.0, 50.0], "perf-counter")
    assert stats.steps == 2 and stats.buckets_per_step == 2
    assert stats.wait_share == pytest.approx((10.0 + 5.0) / 100.0)
    assert stats.busy_share == pytest.approx((18.0 + 10.0) / 100.0)
    assert summarise([[], []], [1.0, 1.0], "perf-counter") is None


@pytest.fixture
def one_rank_gloo():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_hook_marks_every_bucket_of_every_step_and_keeps_ddp_numerics(one_rank_gloo):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    reference = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    reference.load_state_dict(model.state_dict())
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.001)  # several buckets
    timer = AllReduceTimer(HostClock())
    timer.attach(ddp)
    inputs = torch.randn(8, 64)
    for _ in range(3):
        ddp(inputs).sum().backward()
    steps = timer.intervals()
    # DDP rebuilds its buckets after the first step (then in gradient-ready order)
    assert len(steps) == 3 and len(steps[0]) >= 1 and all(len(s) >= 2 for s in steps[1:])
    assert all(0 <= start <= end for s in steps for start, end in s)
    reference(inputs).sum().backward()
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad * 3)  # 3 accumulated steps, world size 1
    timer.reset()
    assert timer.intervals() == []
