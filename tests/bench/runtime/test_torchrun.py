"""The torchrun launcher end to end on the CPU (2 ranks over gloo): DDP training, data-parallel inference, paired
ratios between multi-GPU cells, a killed rank, an OOM rank, a hung rank; plus its skip rules and failure parsing."""

from __future__ import annotations

import time

import pytest

from detbench.bench.core.matrix import Capabilities
from detbench.bench.core.scaling import one_gpu_twin
from detbench.bench.runtime import torchrun as launch
from detbench.bench.runtime.launch import run_group as launch_group
from detbench.bench.runtime.torchrun import TorchrunLauncher
from tests.bench.runtime.torchrun_helpers import assert_no_rank_left, fast_options, tiny, write_error_file

CPU = Capabilities(cuda_available=False)


def run_group(cells, options, *, baselines=None, caps=CPU):
    """The one launcher's group run, with the torchrun launcher seeing ``caps``."""
    return launch_group(cells, options, baselines=baselines, launcher=TorchrunLauncher(caps=caps))


def test_a_ddp_training_and_an_inference_cell_run_over_gloo_with_scaling():
    cells = [tiny("train"), tiny("infer")]
    options = fast_options()
    twins = [one_gpu_twin(c) for c in cells]
    baselines = {r.cell.id: r for r in launch_group(twins, fast_options(isolation="inline"))}
    for result in baselines.values():
        result.added_reason = "1-GPU twin of a multi-GPU cell"
    train, infer = run_group(cells, options, baselines=baselines, caps=CPU)
    assert train.status == "ok", (train.reason, train.config.get("output_tail"))
    assert infer.status == "ok", (infer.reason, infer.config.get("output_tail"))
    ddp = train.distributed.to_dict()
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo" and ddp["parallelism"] == "ddp"
    assert "no CUDA: 2 processes on the CPU over gloo" in ddp["notes"][0]
    assert ddp["ddp"]["bucket_cap_mb"] == 25.0
    assert [r["rank"] for r in ddp["ranks"]] == [0, 1]
    assert all(r["allreduce"]["buckets_per_step"] >= 1 for r in ddp["ranks"])
    assert 0 < ddp["allreduce_wait_share"] <= 1
    assert train.throughput_ips == pytest.approx(4 * 1000 / max(r["median_ms"] for r in ddp["ranks"]))
    assert ddp["scaling_efficiency"] > 0
    assert ddp["baseline"]["source"] == "added by the run: 1-GPU twin of a multi-GPU cell"
    assert ddp["baseline"]["cell_id"] in baselines
    dp = infer.distributed.to_dict()
    assert dp["parallelism"] == "data-parallel" and dp["allreduce_wait_share"] is None
    assert infer.throughput_ips == pytest.approx(sum(r["throughput_ips"] for r in dp["ranks"]))
    assert infer.config["isolation"] == "torchrun" and train.warmup_iterations >= 2
    assert_no_rank_left(train)


def test_multi_gpu_cells_of_a_group_are_interleaved_and_paired_like_one_gpu_cells():
    import dataclasses

    base = tiny("infer")
    nhwc = dataclasses.replace(base, memory_format="channels_last")
    results = run_group([base, nhwc], fast_options())
    assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
    rounds = fast_options().rounds.rounds
    for result in results:  # every cell timed in each round: the rounds interleave the cells
        assert sorted(b.round for b in result.measurement.blocks) == list(range(rounds))
    ratio = results[1].ratio
    assert ratio is not None and ratio.baseline_cell_id == base.id and len(ratio.per_round) == rounds
    assert results[1].distributed.to_dict()["world_size"] == 2
    assert_no_rank_left(results[1])


def test_a_killed_rank_fails_its_cell_naming_the_rank_and_the_next_cell_runs(fault):
    fault("tiny_convnet-train", "exit", rank=1)
    train, infer = run_group([tiny("train"), tiny("infer")], fast_options(), caps=CPU)
    # an `error` naming the rank's exit: the exit was seen, not waited out (the cell timeout gives `timeout`). No bound
    # on the wall time: two groups' starts took 82 s on torch 2.7.1 beside CI's other torch lines (2026-12-06)
    assert train.status == "error"
    assert train.reason.startswith("rank 1: process exited with code 3"), train.reason
    assert train.config["failed_rank"] == 1
    assert infer.status == "ok", infer.reason  # a fresh group took the cell that had not started
    assert_no_rank_left(train)
    assert_no_rank_left(infer)


def test_an_oom_rank_is_an_oom_result_with_its_exception_text(fault):
    fault("tiny_convnet-train", "oom", rank=1)
    (train,) = run_group([tiny("train")], fast_options(), caps=CPU)
    assert train.status == "oom"
    assert train.reason.startswith("rank 1: ") and "Tried to allocate 2.50 GiB" in train.reason
    assert_no_rank_left(train)


def test_a_hung_rank_times_out_and_every_process_is_killed(fault):
    fault("tiny_convnet-infer", "hang", rank=1)
    began = time.monotonic()
    # 40 s: the ranks' start (torchrun and two torch imports) must fit inside it; 15 s did not when CI ran two
    # torch lines at once on 2 cores ("no rank reported").
    (infer,) = run_group([tiny("infer")], fast_options(cell_timeout_s=40.0), caps=CPU)
    assert infer.status == "timeout"
    assert "cell timeout of 40 s: rank(s) [1] stopped in set_up" in infer.reason, infer.reason
    assert infer.config["rank_phases"] == {0: "warm_up", 1: "set_up"}
    assert infer.config["launcher"]["killed_pids"]
    assert_no_rank_left(infer)
    assert time.monotonic() - began < 100


def test_a_cell_asking_for_more_gpus_than_visible_is_skipped_with_the_count():
    caps = Capabilities(cuda_available=True, gpu_count=2, bf16_supported=True)
    (result,) = run_group([tiny("train", gpus=4)], fast_options(), caps=caps)
    assert result.status == "skipped" and result.reason == "needs 4 GPUs, 2 visible"


def test_what_skips_the_one_gpu_twin_skips_the_group_cell():
    (result,) = run_group([tiny("infer", precision="amp-bf16")], fast_options(), caps=CPU)
    assert result.status == "skipped" and "autocast is GPU-only" in result.reason


def test_groups_take_one_gpu_count_above_one_and_one_model():
    with pytest.raises(ValueError, match="one GPU count > 1"):
        run_group([tiny("train", gpus=1)], fast_options(), caps=CPU)
    with pytest.raises(ValueError, match="one GPU count > 1, got \\[2, 4\\]"):
        run_group([tiny("train"), tiny("train", gpus=4)], fast_options(), caps=CPU)


def test_children_get_the_users_environment_nothing_imposed(monkeypatch):
    from detbench.envcheck.isolate import child_env

    names = ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    assert not [name for name in names if name in child_env()]
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    assert child_env()["NCCL_NVLS_ENABLE"] == "1"


TORCHRUN_ROOT_CAUSE = """
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 6409)  (SIGTERM)
Root Cause (first observed failure):
[0]:
  time      : 2026-11-27_16:05:39
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 6410)
  error_file: /tmp/x/attempt_0/1/error.json
"""


def test_the_root_cause_rank_is_named_with_its_error_file_message(tmp_path):
    message = "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:3356, unhandled cuda error"
    write_error_file(tmp_path, 1, message)
    failure = launch._rank_failure(TORCHRUN_ROOT_CAUSE, tmp_path, {})
    assert (failure.status, failure.details["failed_rank"]) == ("error", 1)
    assert failure.reason == f"rank 1: {message}"


def test_a_timeout_names_the_rank_furthest_behind():
    statuses = {0: {"phase": "timed"}, 1: {"phase": "set_up"}, 2: {"phase": "timed"}}
    failure = launch._timeout_failure(30.0, statuses, "cell")
    assert failure.status == "timeout" and failure.details["failed_rank"] == 1
    assert "rank(s) [1] stopped in set_up (phases: 0 timed, 1 set_up, 2 timed)" in failure.reason
    assert "no rank reported" in launch._timeout_failure(30.0, {}, None).reason


GLOO_RESET = "RuntimeError: [gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:15244: Connection reset by peer"
TORCHRUN_VICTIM_FIRST = """
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Failures:
[1]:
  time      : 2026-11-27_18:09:02
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 3 (pid: 8250)
  error_file: <N/A>
Root Cause (first observed failure):
[0]:
  time      : 2026-11-27_18:09:01
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 8249)
  error_file: /tmp/x/attempt_0/0/error.json
"""


def test_a_rank_that_died_without_an_exception_is_named_over_the_rank_it_took_down(tmp_path):
    # seen under load: rank 1 os._exit()ed, rank 0 raised gloo's "Connection reset by peer" and torchrun saw that first
    write_error_file(tmp_path, 0, GLOO_RESET)
    failure = launch._rank_failure(TORCHRUN_VICTIM_FIRST, tmp_path, {})
    assert failure.details["failed_rank"] == 1
    assert failure.reason.startswith("rank 1: process exited with code 3"), failure.reason


# torchrun 2.14's output when rank 1 os._exit()ed and torchrun's SIGTERM caught rank 0 writing its error file (seen
# under load in CI): the log line above the summary names the victim, and the summary lists the crashed rank first.
TORCHRUN_VICTIM_SIGTERMED = """
W1204 06:38:15.017000 15326 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 15332 closing \
signal SIGTERM
E1204 06:38:15.049000 15326 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: -15) \
local_rank: 0 (pid: 15332) of binary: /usr/bin/python
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
detbench.bench.runtime.rank FAILED
------------------------------------------------------------
Failures:
[0]:
  time      : 2026-12-04_06:38:15
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 3 (pid: 15333)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------------
Root Cause (first observed failure):
[1]:
  time      : 2026-12-04_06:38:14
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 15332)  (SIGTERM)
  error_file: /tmp/x/attempt_0/0/error.json
  traceback : Traceback (most recent call last):
  RuntimeError: [gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:21901: Connection reset by peer
============================================================
"""


def test_torchruns_log_lines_are_not_read_as_failures(tmp_path):
    # "local_rank: 0" in the log line was once paired with the next "exitcode" line (rank 1's), hiding the crash
    write_error_file(tmp_path, 0, GLOO_RESET)
    failure = launch._rank_failure(TORCHRUN_VICTIM_SIGTERMED, tmp_path, {})
    assert failure.details["failed_rank"] == 1
    assert failure.reason.startswith("rank 1: process exited with code 3"), failure.reason
    assert failure.returncode == 3


def test_a_rank_that_lost_its_peer_yields_to_the_rank_that_failed_on_its_own(tmp_path):
    # rank 1 ran out of memory, rank 0 then raised "Connection reset by peer" in the same second: torchrun's
    # whole-second timestamps tie and its root cause is the lower rank, the victim
    same_second = TORCHRUN_VICTIM_FIRST.replace("18:09:01", "18:09:02").replace("exitcode  : 3", "exitcode  : 1")
    write_error_file(tmp_path, 0, GLOO_RESET)
    write_error_file(tmp_path, 1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB")
    failure = launch._rank_failure(same_second, tmp_path, {})
    assert (failure.status, failure.details["failed_rank"], failure.returncode) == ("oom", 1, 1), failure.reason
    assert failure.reason.startswith("rank 1: torch.OutOfMemoryError")
