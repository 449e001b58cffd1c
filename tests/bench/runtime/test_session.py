"""CellSession on the CPU with a tiny model: the one set-up path fills every field it can, consistently;
classify_failure is the one failure classifier."""

from __future__ import annotations

import pytest
import torch

from detbench.bench.core.journal import Journal, read_journal
from detbench.bench.core.options import RoundsPolicy, RunOptions, WarmupPolicy
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.models.postprocess import thresholds_owner
from detbench.bench.runtime.build import GroupShared
from detbench.bench.runtime.device import device_name
from detbench.bench.runtime.failures import classify_failure, is_sticky_cuda_error
from detbench.bench.runtime.session import CellSession

MODULES = ("tests.bench.tiny_models",)
FAST = dict(model_modules=MODULES, warmup=WarmupPolicy(window=2, tolerance=0.5, min_iterations=2, max_iterations=20,
                                                        max_s=1.0),
            rounds=RoundsPolicy(rounds=2, block_s=0.02, min_block_iterations=3))
CPU = torch.device("cpu")


def session_for(cell: Cell, **options) -> CellSession:
    session = CellSession(cell, RunOptions(**{**FAST, **options}), CPU)
    session.set_up()
    return session


def test_an_inference_session_times_blocks_and_fills_its_result():
    session = session_for(Cell("tiny_convnet", "infer", batch_size=4, image_size=(32, 32)))
    first = session.time_block(5, round_index=0)
    second = session.time_block(5, round_index=1)
    # on the CPU a block may stop early (after 2) when a loaded machine makes it run past twice its plan
    assert all(2 <= len(block) <= 5 for block in (first, second)) and all(t > 0 for t in first + second)
    result = session.result()
    assert result.status == "ok", result.reason
    assert result.timer == "perf-counter+sync" and result.latency.n == len(result.times_ms) == len(first) + len(second)
    blocks = result.measurement.blocks
    assert [b.round for b in blocks] == [0, 1] and [b.iterations for b in blocks] == [len(first), len(second)]
    assert all(b.host_canary_ms > 0 for b in blocks) and blocks[0].start_offset_s == 0.0 < blocks[1].start_offset_s
    block_ips = sorted(4 * 1000.0 / b.median_ms for b in blocks)
    assert result.throughput_ips == pytest.approx(sum(block_ips) / 2)  # median over blocks
    assert result.throughput_ips_p10 <= result.throughput_ips_p90
    assert result.warmup_iterations >= 2 and result.first_call_s > 0 and result.compile_s is None
    assert result.graph_breaks is None and result.peak_memory_bytes is None
    assert result.measurement.memory_method == "not measured on CPU"
    assert result.setup.build_s > 0 and result.setup.total_s >= result.setup.build_s
    assert result.flops_per_image > 0 and result.flops_info.backward_counted is False
    assert result.achieved_tflops == pytest.approx(result.flops_per_image * result.throughput_ips / 1e12)
    assert result.config["inference_context"] == "torch.no_grad()" and "optimizer" not in result.config
    assert CellResult.from_dict(result.to_dict()).to_dict() == result.to_dict()


def test_a_training_session_states_its_optimizer_and_loss():
    session = session_for(Cell("tiny_convnet", "train", batch_size=2, image_size=(32, 32)), optimizer="adamw")
    session.time_block(3)
    result = session.result()
    assert result.config["optimizer"] == {"name": "adamw", "lr": 1e-4, "momentum": None, "grad_scaler": False}
    assert isinstance(result.measurement.final_loss, float) and result.flops_info.backward_counted is True


def test_a_group_counts_flops_once_per_mode_at_batch_1_and_shares_one_inference_model():
    shared = GroupShared()
    options = RunOptions(**FAST)

    def set_up(mode: str, batch_size: int) -> CellSession:
        session = CellSession(Cell("tiny_convnet", mode, batch_size=batch_size, image_size=(32, 32)), options, CPU,
                              shared=shared)
        session.set_up()
        return session

    first, other_batch, train, train_again = set_up("infer", 4), set_up("infer", 2), set_up("train", 2), \
        set_up("train", 4)
    assert first.flop_count.batch_size == 1 and first.flops_info.reused_from is None
    assert other_batch.flop_count is first.flop_count and other_batch.flops_info.reused_from == first.cell.id
    assert train.flop_count.backward_counted and train.flops_info.reused_from is None
    assert train.flop_count.batch_size == 2  # a training step's BatchNorm needs more than one value per channel
    assert train_again.flops_info.reused_from == train.cell.id
    # one set of inference weights for every inference variant; training updates its own weights
    assert other_batch.prepared.model is first.prepared.model
    assert train.prepared.model is not first.prepared.model is not train_again.prepared.model
    assert other_batch.config["model_built_by"] == first.cell.id == first.config["model_built_by"]
    assert len(other_batch.prepared.inputs) == 2 and not first.prepared.model.training


@pytest.mark.timeout(600)  # 290-340 s on the 2-core machine loaded 6-fold (docs/compat.md)
def test_inference_variants_share_a_model_calibrated_once_per_batch_size_in_fp32():
    shared = GroupShared()
    options = RunOptions(model_modules=(), count_flops=False, warmup=FAST["warmup"], rounds=FAST["rounds"])
    cells = [Cell("ssdlite320_mobilenet_v3_large", "infer", precision=precision, batch_size=batch,
                  image_size=(320, 320)) for precision, batch in (("amp-bf16", 1), ("fp32", 2), ("fp32", 1))]
    sessions = [CellSession(cell, options, CPU, shared=shared) for cell in cells]
    for session in sessions:
        session.set_up()
    bf16_1, fp32_2, fp32_1 = (s.postprocess for s in sessions)
    # batch 1 was calibrated in FP32 by the bf16 cell (first in the group); the FP32 cell of batch 1 reuses it
    assert bf16_1["calibrated_by"] == fp32_1["calibrated_by"] == cells[0].id
    assert fp32_1["score_thresh"] == bf16_1["score_thresh"] and fp32_1["candidates_per_image"]["mean"] == 1000
    assert fp32_2["calibrated_by"] == cells[1].id and fp32_2["score_thresh"] != fp32_1["score_thresh"]
    assert fp32_2["target_reached"] and fp32_2["candidates_per_image"]["mean"] == 1000  # its own two images
    assert abs(bf16_1["candidates_per_image"]["mean"] - 1000) <= 100  # restated under bf16 autocast
    layers = {s["batchnorm_layers_recalibrated"] for s in (bf16_1, fp32_2, fp32_1)}
    assert layers == {shared.infer_model.batchnorm_layers}
    assert shared.infer_model.batchnorm_layers > 0 and sessions[2].prepared.model is sessions[0].prepared.model
    head = thresholds_owner(sessions[0].prepared.model)[0]
    for session, load in ((sessions[1], fp32_2), (sessions[2], fp32_1), (sessions[1], fp32_2)):
        session.time_block(2)  # the variants take turns on one model, each with its batch size's threshold
        assert head.score_thresh == load["score_thresh"]
    assert sessions[2].result().postprocess["calibrated_by"] == cells[0].id


def test_a_training_cell_counts_its_flops_where_batchnorm_sees_one_value_per_image():
    # SSDlite at 160x160 has 1x1 maps in its extra blocks: a batch-1 training count raised ValueError there
    options = RunOptions(model_modules=(), warmup=FAST["warmup"], rounds=FAST["rounds"])
    session = CellSession(Cell("ssdlite320_mobilenet_v3_large", "train", batch_size=2, image_size=(160, 160)),
                          options, CPU)
    session.set_up()
    assert session.flop_count.batch_size == 2 and session.flop_count.flops_per_image > 0


def test_a_session_set_up_but_never_timed_says_so():
    result = session_for(Cell("tiny_convnet", "infer", image_size=(32, 32))).result()
    assert result.status == "error" and result.reason == "set up but never timed"


@pytest.mark.parametrize("fault, status, words", [
    ("oom", "oom", ["Tried to allocate 2.50 GiB"]),
    ("raise", "error", ["RuntimeError: injected failure (detbench.bench.runtime.faults)"]),
])
def test_classify_failure_turns_set_up_exceptions_into_results(monkeypatch, fault, status, words):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", f"tiny_convnet-infer:{fault}")
    cell = Cell("tiny_convnet", "infer", image_size=(32, 32))
    with pytest.raises(Exception) as info:
        session_for(cell)
    result = classify_failure(cell, info.value, CPU)
    assert result.status == status and all(w in result.reason for w in words)
    assert result.failure.phase == "set-up" and "faults.py" in result.failure.traceback_tail
    if status == "oom":
        assert result.memory_requested_bytes == int(2.5 * 2**30)


def test_a_missing_extra_is_skipped_with_the_install_command():
    cell = Cell("tiny_needs_extra")
    with pytest.raises(Exception) as info:
        session_for(cell)
    result = classify_failure(cell, info.value, CPU)
    assert result.status == "skipped" and "pip install" in result.reason


def test_sticky_cuda_errors_are_told_apart_from_ordinary_ones():
    assert is_sticky_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_sticky_cuda_error(RuntimeError("shape mismatch"))


def test_journal_is_durable_line_by_line_and_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "j" / "journal.jsonl"
    results = [CellResult(Cell("resnet50", batch_size=b), status="skipped", reason="x") for b in (1, 2)]
    with Journal(path) as journal:
        journal.append(results[0])
        assert len(path.read_text().splitlines()) == 2  # the run header and the cell: on disk before the next cell runs
        journal.append(results[1])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"schema": "detbench.cell", "cell": {"mo')  # a crash mid-write
    assert [r.cell.id for r in read_journal(path)] == [r.cell.id for r in results]


def test_device_name_asks_torch_cuda_for_a_gpu_and_describes_the_cpu(monkeypatch):
    # a GPU path a CPU machine never takes on its own: a typo here broke every GPU cell once
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name",
                        lambda device=None: asked.append(device) or "NVIDIA H100 80GB HBM3")
    assert device_name(torch.device("cuda", 0)) == "NVIDIA H100 80GB HBM3" and asked == [torch.device("cuda", 0)]
    cpu = device_name(CPU)
    assert cpu.startswith("cpu (") and "cores" in cpu and "threads" in cpu


def test_an_exact_block_takes_every_iteration_even_when_the_cpu_runs_slow(monkeypatch):
    # DDP ranks must step together: a rank whose block ended early would leave the others waiting in all-reduce
    session = session_for(Cell("tiny_convnet", "infer", batch_size=2, image_size=(32, 32)))
    monkeypatch.setattr(type(session), "estimate_ms", property(lambda self: 1e-6))  # every block "runs past its plan"
    assert len(session.time_block(6, exact=True)) == 6
    assert len(session.time_block(6)) == 2  # the non-exact block gives up after 2 as designed


def test_channels_last_puts_weights_and_4d_inputs_in_nhwc_and_copies_the_groups_shared_model():
    shared = GroupShared()
    options = RunOptions(**FAST)
    sessions = []
    for layout in ("contiguous", "channels_last"):
        session = CellSession(Cell("tiny_convnet", "infer", batch_size=2, image_size=(32, 32), memory_format=layout),
                              options, CPU, shared=shared)
        session.set_up()
        session.time_block(3)
        sessions.append(session)
    plain, nhwc = sessions
    conv = lambda s: s.prepared.model[0].weight  # noqa: E731
    assert conv(nhwc).is_contiguous(memory_format=torch.channels_last) and not conv(plain).is_contiguous(
        memory_format=torch.channels_last)
    assert nhwc.prepared.inputs.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(conv(nhwc), conv(plain)) and nhwc.prepared.model is not plain.prepared.model
    assert shared.infer_models["channels_last"].owner == f"{nhwc.cell.id} (copy of {plain.cell.id}'s model)"
    result = nhwc.result()
    assert result.status == "ok" and result.cell.id == "tiny_convnet-infer-eager-fp32-channels_last-bs2-gpu1-32x32"
    assert result.config["memory_format"] == "channels_last" and plain.result().cell.id.endswith("fp32-bs2-gpu1-32x32")


def test_channels_last_on_a_model_without_convolutions_is_skipped_with_the_reason():
    cell = Cell("tiny_mlp", "infer", batch_size=2, image_size=(32, 32), memory_format="channels_last")
    session = CellSession(cell, RunOptions(**FAST), CPU)
    with pytest.raises(Exception) as info:
        session.set_up()
    result = classify_failure(cell, info.value, CPU)
    assert result.status == "skipped" and result.reason == ("channels_last applies to convolutional models; tiny_mlp "
                                                            "has no Conv2d layer")


def test_a_batch_search_cell_is_never_set_up_directly():
    with pytest.raises(ValueError, match="must be resolved before set-up"):
        session_for(Cell("tiny_convnet", "infer", batch_size="max", image_size=(32, 32)))


def test_recompilations_are_dynamo_cache_misses_after_the_first_call():
    from detbench.bench.runtime.dynamo import configure_dynamo, dynamo_frames_compiled

    configure_dynamo(reset=True)
    double = torch.compile(lambda x: x * 2, backend="eager")
    double(torch.ones(2))
    first = dynamo_frames_compiled()
    double(torch.ones(2))  # cache hit
    assert dynamo_frames_compiled() == first
    double(torch.ones(2, 3))  # a new rank: the guard fails, dynamo compiles again
    assert dynamo_frames_compiled() == first + 1


def test_cudagraph_skip_reasons_are_collected_from_inductors_log_not_hidden():
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    from detbench.bench.runtime.dynamo import cudagraph_skip_messages

    with cudagraph_skip_messages() as messages:
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to data dependent ops: nonzero")
    log_cudagraph_skip_and_bump_counter("skipping cudagraphs after the block: not collected")
    assert messages == ["skipping cudagraphs due to data dependent ops: nonzero"]
