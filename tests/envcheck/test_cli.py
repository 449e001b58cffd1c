"""The real CLI in a subprocess on this (CPU) machine, the JSON schema, and secret redaction."""

import json
import subprocess
import sys

import pytest

from envcheck.report import REDACTED, SCHEMA_NAME, SCHEMA_VERSION, redact_environment


def envcheck(*args, env=None):
    return subprocess.run([sys.executable, "-m", "envcheck", *args], capture_output=True, text=True, timeout=180,
                          env=env)


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
    assert env["HF_TOKEN"] == REDACTED and env["MY_API_KEY"] == REDACTED
    assert env["DB_URL"] == f"postgres://{REDACTED}@db/x"
    assert "hf_secret_value" not in cpu_report.stdout and "k-123" not in cpu_report.stdout


def test_redaction_rules():
    env = redact_environment({"GITHUB_TOKEN": "x", "aws_secret_access_key": "y", "DB_PASSWD": "z", "NCCL_DEBUG": "INFO",
                              "GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "HTTP_AUTH": "b", "PATH": "/bin"})
    assert env == {"GITHUB_TOKEN": REDACTED, "aws_secret_access_key": REDACTED, "DB_PASSWD": REDACTED,
                   "NCCL_DEBUG": "INFO", "GOOGLE_APPLICATION_CREDENTIALS": REDACTED, "HTTP_AUTH": REDACTED,
                   "PATH": "/bin"}


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
    (["--timeout", "0"], "must be a number of seconds > 0"),
    (["--gpus", "0"], "must be a whole number >= 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_usage_errors_exit_2(args, words, capsys):
    from envcheck.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


def test_usage_error_message_in_subprocess():
    proc = envcheck("--only", "drivers")
    assert proc.returncode == 2
    assert "invalid choice: 'drivers'" in proc.stderr and "speed" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error:" in line]) == 1
