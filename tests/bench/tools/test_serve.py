"""``detbench serve``: bad options are one-line usage errors (in this process), and end to end, a server process that
hangs in a trial is killed, its trial recorded as a timeout, and a fresh server serves the next scenario."""

from __future__ import annotations

import json

import pytest

from detbench.bench.core.record import load_results
from detbench.bench.tools.serve import main
from tests.extras import require_extra

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(("argv", "message"), [
    (["--scenarios", "multi-stream"], "unknown scenario multi-stream; valid: single-stream, server, offline"),
    (["--runtimes", "tensorrt"], "unknown runtime 'tensorrt'; valid: eager, torchscript, onnxruntime, aot-inductor"),
    (["--max-batch", "0"], "bad --max-batch '0'; valid: positive integers"),
    (["--batch-wait-ms", "5"], "--batch-wait-ms needs dynamic batching; valid: --max-batch 2 or more"),
    (["--queries", "10"], "bad --queries 10; valid: 100..1e+07"),
    (["--p99-bound-ms", "0"], "bad --p99-bound-ms 0.0; valid: 0.01..1e+07"),
    (["--trial-timeout", "-1"], "bad --trial-timeout -1.0; valid: a positive number"),
    (["--image-size", "20x20"], "bad image size '20x20'; use HEIGHTxWIDTH"),
])
def test_bad_options_are_one_line_errors_naming_the_valid_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "ssdlite320_mobilenet_v3_large", *argv])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and error.startswith("detbench serve: error: ") and message in error


def test_an_unknown_model_names_the_registered_ones(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "yolo_v99"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown model 'yolo_v99'; valid: " in error and "ssdlite320_mobilenet_v3_large" in error


@pytest.mark.timing  # --trial-timeout 2 must not fire on a server that is only slow
@pytest.mark.waits  # two server processes' start and a 2 s wait: it runs beside the measuring tests
def test_a_server_that_hangs_is_a_timeout_trial_and_a_fresh_server_serves_the_next(tmp_path, monkeypatch):
    """The fake detector spins forever on its 15th call in the first server process (the single-stream trial): after
    --trial-timeout 2 s that process is killed and the trial recorded as a timeout; the offline trial runs on a new
    server process and measures 100 queries of 2 ms each."""
    require_extra("serve")
    monkeypatch.setenv("DETBENCH_TEST_SERVE_HANG", str(tmp_path / "hung-once"))
    out = tmp_path / "serve.json"
    code = main(["--model", "serve_busy_detector", "--model-modules", "tests.fakes.serve", "--scenarios",
                 "single-stream,offline", "--queries", "100", "--trial-timeout", "2", "--output", str(out),
                 "--log-dir", str(tmp_path / "logs")])
    assert code == 1 and (tmp_path / "hung-once").exists()
    offline, single = sorted(load_results(out), key=lambda c: str(c.cell.scenario))
    assert single.cell.scenario == "single-stream" and single.status == "timeout"
    assert "no reply within 2 s; the server process was killed" in single.reason
    assert offline.status == "ok" and offline.serve.trials[0].queries >= 100 and offline.throughput_ips > 0
    assert offline.serve.notes["server_restarts"] == "1" and offline.serve.step_ms >= 2.0
    assert json.loads(out.read_text())["detbench"]["study"] == "serve"
    assert (tmp_path / "logs" / "serve_busy_detector-eager-batch1" / "server-2" / "trial-02-offline" /
            "mlperf_log_summary.txt").exists()
