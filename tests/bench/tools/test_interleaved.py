"""detbench.bench.tools.interleaved, a study over the matrix's engine: variant parsing, rotation, paired ratios, and
real runs of a tiny model on the CPU through the same launcher and CellSession as the matrix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from detbench.bench.core.comparison import ComparisonError, ModelComparison, Ratio, VariantRun, fill_break_even
from detbench.bench.core.groups import rotation
from detbench.bench.core.options import RunOptions
from detbench.bench.tools import interleaved
from detbench.bench.tools.interleaved import InterleavedError, Variant
from tests.extras import require_extra

MODULES = ("tests.bench.tiny_models",)


def test_variant_text_round_trips_and_bad_text_names_the_choices():
    variant = Variant.parse("infer-compiled-bf16")
    assert (variant.mode, variant.compile, variant.precision) == ("infer", "compiled", "amp-bf16")
    assert variant.label == "infer-compiled-bf16"
    assert Variant.parse("train-eager-amp-fp16").label == "train-eager-fp16"
    for bad in ("infer-fast-fp32", "infer-eager", "eval-eager-fp32", "infer-eager-int8"):
        with pytest.raises(InterleavedError, match="precisions fp32, fp16, bf16"):
            Variant.parse(bad)
    with pytest.raises(InterleavedError, match="twice"):
        interleaved.parse_variants("infer-eager-fp32,infer-eager-fp32")


def test_rotation_puts_every_variant_in_every_position():
    orders = [rotation(3, r) for r in range(3)]
    assert orders == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    for position in range(3):
        assert sorted(order[position] for order in orders) == [0, 1, 2]


def test_ratios_are_paired_by_round_so_a_slow_round_cancels():
    # the host is 40% slower in round 1 for both variants; the variant is 2x faster in every round
    baseline = VariantRun("infer-eager-fp32", "m", block_median_ms=[100.0, 140.0, 100.0, 101.0])
    faster = VariantRun("infer-eager-bf16", "m", block_median_ms=[50.0, 70.0, 50.0, 50.5])
    ratio = Ratio.paired(faster, baseline)
    assert ratio.per_round == pytest.approx([2.0, 2.0, 2.0, 2.0])
    assert ratio.median == pytest.approx(2.0) and ratio.q1 == pytest.approx(2.0) and ratio.q3 == pytest.approx(2.0)
    # unpaired, the medians of the blocks would give 100.5 / 50.25 = 2.0 here too, but not when states differ:
    skewed = VariantRun("x", "m", block_median_ms=[70.0, 70.0, 70.0, 70.0])
    assert Ratio.paired(skewed, baseline).per_round[1] == pytest.approx(2.0)
    assert Ratio.paired(skewed, baseline).per_round[0] == pytest.approx(100 / 70)


def test_break_even_is_filled_against_the_eager_twin_only():
    from detbench.bench.core.schema import LatencyStats

    def run(variant: str, median: float, compile_s: float | None = None) -> VariantRun:
        latency = LatencyStats(4, median, median, median, median, median, median, 0.0, 0.0, 0.0)
        return VariantRun(variant, "m", compile_s=compile_s, latency=latency)

    runs = [run("infer-eager-fp32", 100.0), run("infer-compiled-fp32", 60.0, 20.0),
            run("infer-compiled-bf16", 50.0, 20.0), run("infer-compiled-fp16", 150.0, 20.0),
            run("infer-eager-fp16", 120.0)]
    fill_break_even(runs)
    assert runs[1].break_even_iterations == pytest.approx(20.0 / 0.040)  # 20 s / 40 ms saved per iteration
    assert runs[2].break_even_iterations is None  # no eager bf16 to compare with
    assert runs[3].break_even_iterations is None  # slower than eager: never pays off
    assert runs[0].break_even_iterations is None


@pytest.mark.timing  # the train/infer ratio of a tiny model swung to 26x under load beside xdist workers
def test_compare_model_times_every_variant_in_rounds_and_writes_a_readable_result():
    variants = [Variant.parse(v) for v in ("infer-eager-fp32", "infer-eager-bf16", "train-eager-fp32")]
    options = RunOptions(profile="test", telemetry_hz=0, count_flops=False, model_modules=MODULES)
    from detbench.bench.core.options import import_model_modules

    import_model_modules(MODULES)
    result = interleaved.compare_model("tiny_convnet", variants, 2, None, options, rounds=3, block_s=0.02)
    assert result.status == "ok" and result.timer == "perf-counter+sync"
    assert [r.variant for r in result.variants] == ["infer-eager-fp32", "infer-eager-bf16", "train-eager-fp32"]
    for run in result.variants:
        assert run.status == "ok" and len(run.block_median_ms) == 3 and run.throughput_ips > 0
        assert run.latency.n == len(run.times_ms) >= 6
    assert [r.variant for r in result.ratios] == ["infer-eager-bf16", "train-eager-fp32"]
    assert all(r.baseline == "infer-eager-fp32" and len(r.per_round) == 3 for r in result.ratios)
    train = result.ratios[1]
    assert train.median < 1.0  # forward + backward + step is slower than a forward: the ratio can fail
    assert len(result.host_canary_ms) == 9 and all(c > 0 for c in result.host_canary_ms)
    assert result.environment["torch"] == result.torch and result.environment["python"]
    written = json.loads(json.dumps(result.to_dict()))
    again = ModelComparison.from_dict(written)
    assert again.to_dict() == written and again.variants == result.variants and again.ratios == result.ratios
    cells = again.cell_results()  # the matrix's own result format, from the same engine
    assert [c.cell.id for c in cells] == [r.cell_id for r in result.variants]
    assert all(c.measurement.rounds == 3 and len(c.measurement.blocks) == 3 for c in cells)


def test_a_missing_extra_skips_the_model_and_a_bad_schema_is_refused():
    options = RunOptions(profile="test", telemetry_hz=0, count_flops=False, model_modules=MODULES)
    from detbench.bench.core.options import import_model_modules

    import_model_modules(MODULES)
    variants = [Variant.parse("infer-eager-fp32")]
    result = interleaved.compare_model("tiny_needs_extra", variants, 1, None, options, 2, 0.01)
    assert result.status == "skipped" and "pip install" in result.reason and result.ratios == []
    with pytest.raises(ComparisonError, match="schema_version"):
        ModelComparison.from_dict({**result.to_dict(), "schema_version": 99})


def bare_env(**extra: str) -> dict[str, str]:
    """The command's environment: no venv on PATH (it starts its model processes with its own interpreter), plus the
    test run's bytecode cache and OpenMP thread count, without which each of its processes compiled what it imported
    afresh and ran a thread per core beside the other xdist workers."""
    carried = {name: os.environ[name] for name in ("PYTHONPYCACHEPREFIX", "OMP_NUM_THREADS") if name in os.environ}
    return {"PATH": "/usr/bin:/bin", **carried, **extra}


def test_cli_gives_each_model_a_worker_a_crash_is_recorded_and_the_rest_still_runs(tmp_path):
    out = tmp_path / "ratios.json"
    # two test models: the machinery is what is tested (ResNet-50 as the second took 51 CPU-s and 81 s in a main run,
    # beside the other workers; alone, the command takes 22 CPU-s with it and 17 with these two)
    command = [sys.executable, "-m", "detbench.bench.tools.interleaved", "--models", "tiny_convnet,tiny_mlp",
               "--model-modules", MODULES[0], "--variants", "infer-eager-fp32,train-eager-fp32",
               "--batch-size", "2", "--image-size", "32x32", "--rounds", "2", "--block-s", "0.02", "--json", str(out)]
    env = bare_env(DETBENCH_TEST_FAULT="tiny_convnet-train:segfault")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stdout + done.stderr  # one variant failed
    crashed, measured = json.loads(out.read_text())["detbench"]["models"]
    variants = {v["variant"]: v for v in crashed["variants"]}
    assert variants["train-eager-fp32"]["status"] == "error" and "SIGSEGV" in variants["train-eager-fp32"]["reason"]
    assert variants["infer-eager-fp32"]["status"] == "ok"  # measured by the fresh worker
    cells = ModelComparison.from_dict({"schema": "detbench.interleaved", "schema_version": 2, **crashed}).cell_results()
    assert [c.status for c in cells] == ["ok", "error"] and cells[0].measurement.worker_attempt == 2
    assert measured["status"] == "ok" and measured["ratios"][0]["variant"] == "train-eager-fp32"
    assert "died of SIGSEGV" in done.stdout and "train-eager-fp32" in done.stdout


@pytest.mark.timing
@pytest.mark.waits  # ~8 CPU-s over 27 s with a 20 s timeout: it waits on the model timeout (12 s: the timing phase's
# longest chain, 2026-12-06; the worker's start-up, a progress-free stretch that counts, takes 3-6 s there)
def test_a_hanging_variant_is_a_timeout_and_the_other_variants_are_still_measured(tmp_path):
    out = tmp_path / "ratios.json"
    command = [sys.executable, "-m", "detbench.bench.tools.interleaved", "--models", "tiny_convnet",
               "--model-modules", MODULES[0],
               "--variants", "infer-eager-fp32,train-eager-fp32", "--batch-size", "2", "--image-size", "64x64",
               "--rounds", "2", "--block-s", "0.02", "--model-timeout-s", "12", "--json", str(out)]
    env = bare_env(DETBENCH_TEST_FAULT="tiny_convnet-train:hang")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    (model,) = json.loads(out.read_text())["detbench"]["models"]
    infer, train = model["variants"]
    assert train["status"] == "timeout" and "12 s without progress" in train["reason"]
    assert infer["status"] == "ok" and infer["first_call_s"] > 0 and infer["throughput_ips"] > 0


def test_cli_rejects_bad_input_in_one_line_naming_the_choices(capsys):
    """In this process (the command's own main): a fresh interpreter per case cost ~2.3 CPU-s each for the same
    check; the end-to-end start of the command is covered by the tests above."""
    sigterm = signal.getsignal(signal.SIGTERM)  # main() installs its own, for the model process it starts
    try:
        for args, expected in ((["--models", "nope"], "unknown model 'nope'; valid: "),
                               (["--models", "resnet50", "--variants", "infer-fast-fp32"], "bad variant"),
                               (["--models", "resnet50", "--rounds", "1"], "--rounds must be >= 2")):
            with pytest.raises(SystemExit) as stopped:  # argparse's usage error: the usage, then the one line
                interleaved.main(args)
            assert stopped.value.code == 2, args
            assert expected in capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        signal.signal(signal.SIGTERM, sigterm)


def test_terminating_the_command_also_ends_the_model_process(tmp_path):
    import os
    import signal
    import time

    marker = tmp_path / "child-pid"
    command = [sys.executable, "-c", (
        "import os, sys, detbench.bench.tools.interleaved as i, detbench.envcheck.isolate as launch\n"
        "real = launch.subprocess.Popen\n"
        "def spy(*a, **k):\n"
        "    p = real(*a, **k)\n"
        f"    open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "    return p\n"
        "launch.subprocess.Popen = spy\n"
        "sys.exit(i.main(['--models', 'tiny_convnet', '--model-modules', 'tests.bench.tiny_models', "
        "'--variants', 'infer-eager-fp32,train-eager-fp32', '--rounds', '2']))\n")]
    env = {**os.environ, "DETBENCH_TEST_FAULT": "tiny_convnet-train:hang"}
    parent = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 120
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.1)
    child_pid = int(marker.read_text())
    time.sleep(1.0)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the model's child process outlived the command")


def test_deformable_detr_records_which_deformable_attention_ran():
    require_extra("detr")
    options = RunOptions(profile="test", telemetry_hz=0, count_flops=False)
    result = interleaved.compare_model("deformable_detr_resnet50", [Variant.parse("infer-eager-fp32")], 1, (64, 64),
                                       options, rounds=2, block_s=0.01)
    assert result.status == "ok", result.reason
    (run,) = result.variants
    assert run.model_runtime_notes["deformable_attention"] == "pytorch-grid_sample"
    assert run.postprocess["target_candidates_per_image"] == 100
