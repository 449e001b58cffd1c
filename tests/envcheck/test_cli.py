"""The real CLI in a subprocess on this (CPU) machine, the JSON schema, and secret redaction."""

import json
import subprocess
import sys

import pytest

from detbench.envcheck.report import REDACTED, SCHEMA_NAME, SCHEMA_VERSION, redact_environment


def envcheck(*args, env=None):
    return subprocess.run([sys.executable, "-m", "detbench.envcheck", *args], capture_output=True, text=True,
                          timeout=180,
                          env=env)


pytestmark = pytest.mark.xdist_group("envcheck_cli")  # one worker runs the module's envcheck once


@pytest.fixture(scope="module")
def cpu_report():
    import os

    env = dict(os.environ, HF_TOKEN="hf_secret_value", MY_API_KEY="k-123", DB_URL="postgres://me:pw@db/x",
               CUDA_VISIBLE_DEVICES="")
    proc = envcheck("--json", "--skip", "host", env=env)
    return proc


def test_cpu_machine_passes_with_gpu_checks_skipped(cpu_report):
    assert cpu_report.returncode == 0, cpu_report.stderr
    report = json.loads(cpu_report.stdout)
    assert report["schema"] == SCHEMA_NAME and report["schema_version"] == SCHEMA_VERSION
    assert report["verdict"] in ("pass", "warn") and report["exit_code"] == 0
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    for gpu_check in ("arch", "cudnn", "tv_ops", "nccl", "speed"):
        assert statuses[gpu_check] == "skip"
    assert statuses["torch_pairing"] == "pass"
    assert report["fingerprint"]["torch"]
    assert report["requirements"]["options"]["require_gpu"] is False
    assert "Traceback" not in cpu_report.stderr


def test_json_redacts_secrets(cpu_report):
    env = json.loads(cpu_report.stdout)["environment"]
    # not on the allow-list of what a benchmark needs: left out, whatever the name looks like
    assert "HF_TOKEN" not in env and "MY_API_KEY" not in env and "DB_URL" not in env
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "hf_secret_value" not in cpu_report.stdout and "k-123" not in cpu_report.stdout
    assert "me:pw" not in cpu_report.stdout


SLACK = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/abcdefghijklmnopqrstuvwx"


def test_only_the_variables_a_benchmark_needs_are_recorded():
    env = redact_environment({
        "DB_PASS": "hunter2", "GH_PAT": "ghp_abc", "CI_JOB_JWT": "eyJhbGciOi", "SLACK_WEBHOOK": SLACK,
        "PG_DSN": "host=db user=u password=s3cret dbname=x", "HOME": "/root", "AWS_ACCESS_KEY_ID": "AKIA",
        "NCCL_DEBUG": "INFO", "CUDA_VISIBLE_DEVICES": "0,1", "TORCH_HOME": "/cache/torch",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8",
        "NVIDIA_TF32_OVERRIDE": "0", "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "CUDNN_LOGINFO_DBG": "1",
        "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "DETBENCH_IMAGE": "detbench:cu128", "PATH": "/usr/bin",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
    })
    assert set(env) == {"NCCL_DEBUG", "CUDA_VISIBLE_DEVICES", "TORCH_HOME", "PYTORCH_CUDA_ALLOC_CONF",
                        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NVIDIA_TF32_OVERRIDE", "CUBLAS_WORKSPACE_CONFIG",
                        "CUDNN_LOGINFO_DBG", "HF_HUB_OFFLINE", "YOLO_OFFLINE", "DETBENCH_IMAGE", "PATH",
                        "LD_LIBRARY_PATH"}
    assert env["NCCL_DEBUG"] == "INFO" and env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


@pytest.mark.parametrize("value, expected", [
    ("postgres://u:pa/ss@h/db", f"postgres://{REDACTED}@h/db"),
    ("postgres://u:p@ss@h/db", f"postgres://{REDACTED}@h/db"),
    ("https://user:tok@example.com/x?y=1", f"https://{REDACTED}@example.com/x?y=1"),
    ("host=db user=u password=s3cret dbname=x", f"host=db user=u password={REDACTED} dbname=x"),
    ("host=db password='s 3cret' port=5432", f"host=db password='{REDACTED}' port=5432"),
    ("https://h/db?user=u&password=s3cret&ssl=1", f"https://h/db?user=u&password={REDACTED}&ssl=1"),
    (SLACK, f"https://hooks.slack.com/{REDACTED}"),
    ("file:///data/x", "file:///data/x"),
    ("expandable_segments:True", "expandable_segments:True"),
])
def test_credentials_inside_urls_and_dsns_are_redacted_even_for_allowed_names(value, expected):
    assert redact_environment({"DETBENCH_DSN": value}) == {"DETBENCH_DSN": expected}


def test_an_allowed_name_that_reads_as_a_secret_is_redacted():
    env = redact_environment({"DETBENCH_API_TOKEN": "t", "NCCL_IB_PASSWORD": "p", "TORCH_DEBUG": "1"})
    assert env == {"DETBENCH_API_TOKEN": REDACTED, "NCCL_IB_PASSWORD": REDACTED, "TORCH_DEBUG": "1"}


def test_json_out_that_cannot_be_written_prints_the_verdict_then_one_line_and_exits_2(tmp_path):
    proc = envcheck("--quick", "--only", "driver", "--json-out", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "verdict:" in proc.stdout and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(tmp_path) in errors[0] and "JSON report" in errors[0]
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = envcheck("--quick", "--only", "driver", "--json-out", str(blocker / "report.json"))
    assert proc.returncode == 2 and "verdict:" in proc.stdout and "Traceback" not in proc.stderr


def test_require_gpu_fails_on_cpu(tmp_path):
    out = tmp_path / "report.json"
    proc = envcheck("--require-gpu", "--quick", "--only", "visibility", "--json-out", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout
    report = json.loads(out.read_text())
    assert report["verdict"] == "fail" and report["requirements"]["results"][0]["met"] is False


@pytest.mark.parametrize("args, words", [
    (["--amp", "fp8"], "invalid choice: 'fp8' (choose from 'fp16', 'bf16')"),
    (["--only", "drivers"], "invalid choice: 'drivers' (choose from 'torch_pairing', 'driver'"),
    (["--skip", "gpu"], "invalid choice: 'gpu'"),
    (["--min-compute-capability", "eight"], "compute capability must look like 8.0"),
    (["--timeout", "0"], "must be a number of seconds in (0, 86400]"),
    (["--timeout", "nan"], "must be a number of seconds in (0, 86400], got 'nan'"),
    (["--timeout", "inf"], "must be a number of seconds in (0, 86400], got 'inf'"),
    (["--timeout", "1e10"], "must be a number of seconds in (0, 86400], got '1e10'"),
    (["--gpus", "0"], "must be a whole number >= 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_usage_errors_exit_2(args, words, capsys):
    from detbench.envcheck.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


def test_usage_error_message_in_subprocess():
    proc = envcheck("--only", "drivers")
    assert proc.returncode == 2
    assert "invalid choice: 'drivers'" in proc.stderr and "speed" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error:" in line]) == 1
