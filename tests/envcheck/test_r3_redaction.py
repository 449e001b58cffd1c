"""One redaction for every value that leaves the process (issue 24, high 3): realistic credentials are hidden in
the fingerprint, the envcheck JSON and table, while paths and image tags stay readable. detbench-ab's files:
tests/bench/tools/test_r3_ab.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from detbench.envcheck import fingerprint
from detbench.envcheck.report import REDACTED, redact_environment, redact_setting, redact_value

REGISTRY = "https://ci-bot:Rg5tryPw0rd@registry.example.com/team/detbench:cu128"
PRESIGNED = ("https://bucket.s3.amazonaws.com/images/detbench.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261203%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261203T"
             "000000Z&X-Amz-Expires=3600&X-Amz-Security-Token=FwoGZXIvYXdzSessTok3n&X-Amz-Signature=9f8e7d6c5b4a3f2e1d"
             "&X-Amz-SignedHeaders=host")
# (value, the secrets that must go, what must stay)
VALUES = [
    (REGISTRY, ["ci-bot", "Rg5tryPw0rd"], ["registry.example.com/team/detbench:cu128"]),
    ("ci-bot:Rg5tryPw0rd@registry.example.com/team/detbench:cu128", ["Rg5tryPw0rd"], ["registry.example.com"]),
    (PRESIGNED, ["AKIAIOSFODNN7EXAMPLE", "FwoGZXIvYXdzSessTok3n", "9f8e7d6c5b4a3f2e1d"],
     ["X-Amz-Expires=3600", "bucket.s3.amazonaws.com/images/detbench.tar"]),
    ("registry.example.com/img:1?token=tok_5ecr3t&arch=x86", ["tok_5ecr3t"], ["arch=x86"]),
    ("https://acct.blob.core.windows.net/c/img.tar?sv=2022-11-02&sig=AzUr3SiG%3D", ["AzUr3SiG"], ["sv=2022-11-02"]),
    ("https://auth.example.com/cb?access_token=ya29.A0ARrdaM&state=1", ["ya29.A0ARrdaM"], ["state=1"]),
    ("curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.s1gn' https://api", ["eyJhbGciOiJIUzI1NiJ9"],
     ["Authorization: Bearer"]),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.s1gn", ["eyJhbGciOiJIUzI1NiJ9"], []),
    ("api_key: sk-live-0123456789", ["sk-live-0123456789"], ["api_key:"]),
    ('{"password": "hunter2!", "user": "u"}', ["hunter2!"], ['"user": "u"']),
    ("note: client_secret=Cl13ntS3cret here", ["Cl13ntS3cret"], ["here"]),
    ("docker run -e HF_TOKEN=hf_AbCdEfGh123 -i img", ["hf_AbCdEfGh123"], ["docker run -e HF_TOKEN="]),
    ("docker login --password Pa55word -u me reg", ["Pa55word"], ["-u me reg"]),
    ("postgres://u:p@h/db", ["u:p@"], ["@h/db"]),
    # a key after "-" and "=", the scheme word in any case, user:password to a user option, mysql's -p
    ("train.py --password=hunter2 --epochs 3", ["hunter2"], ["--password=", "--epochs 3"]),
    ("--api-key=sk-abc123 --models a,b", ["sk-abc123"], ["--api-key=", "--models a,b"]),
    ("curl -H 'Authorization: token ghp_T0kenValue' https://api", ["ghp_T0kenValue"], ["Authorization: token"]),
    ("curl -u ci-bot:Rg5tryPw0rd https://registry", ["Rg5tryPw0rd"], ["-u ci-bot:", "https://registry"]),
    ("fetch --user=ci-bot:Rg5tryPw0rd", ["Rg5tryPw0rd"], ["--user=ci-bot:"]),
    ("mysql -u root -p S3cretPw db", ["S3cretPw"], ["mysql -u root -p"]),
    ("mysql -uroot -pS3cretPw db", ["S3cretPw"], ["-uroot", " db"]),
    ("sshpass -p S3cretPw ssh host", ["S3cretPw"], ["ssh host"]),
]
HARMLESS = ["nvcr.io/nvidia/pytorch:24.05-py3", "/usr/local/cuda/bin:/opt/token-tools/bin:/usr/bin",
            "pytorch:24.05-py3@sha256:" + "a" * 64, "ghcr.io/org/detbench@sha256:" + "b" * 64, "/data/weights.pth",
            "--weights retinanet=/w/r.pth --models a,b", "max_split_size_mb:128,expandable_segments:True", "0,1",
            "docker run -i --rm --gpus all detbench:cu128 {worker}", "ssh -p 2222 host", "pytest -p no:cacheprovider",
            "--models=a,b --image-size=320x320", "docker login -u me registry"]


@pytest.mark.parametrize("value, secrets, kept", VALUES)
def test_credentials_inside_values_are_redacted(value, secrets, kept):
    redacted = redact_value(value)
    assert REDACTED in redacted and not [s for s in secrets if s in redacted], redacted
    assert all(k in redacted for k in kept), redacted


@pytest.mark.parametrize("value", HARMLESS)
def test_harmless_values_stay_readable(value):
    assert redact_value(value) == value


@pytest.mark.parametrize("name", ["HF_TOKEN", "MY_API_KEY", "APIKEY", "ACCESS_KEY", "AWS_SECRET_ACCESS_KEY",
                                  "PGPASSWORD", "DB_PASSPHRASE", "GPG_PASSPHRASE", "DETBENCH_API_TOKEN", "GH_PAT",
                                  "CI_JOB_JWT", "accessToken", "X-Amz-Signature", "SLACK_WEBHOOK_SECRET"])
def test_a_setting_whose_name_reads_as_a_secret_is_hidden_whole(name):
    assert redact_setting(name, "plainlooking") == REDACTED


@pytest.mark.parametrize("name", ["DETBENCH_IMAGE", "CUDA_VISIBLE_DEVICES", "PATH", "NCCL_IB_PKEY", "OMP_NUM_THREADS",
                                  "PYTORCH_CUDA_ALLOC_CONF", "KEYBOARD_LAYOUT"])
def test_ordinary_setting_names_keep_their_values(name):
    assert redact_setting(name, "nvcr.io/nvidia/pytorch:24.05-py3") == "nvcr.io/nvidia/pytorch:24.05-py3"


def test_the_allowed_environment_hides_secrets_by_name_and_inside_values():
    env = redact_environment({"DETBENCH_API_KEY": "k3y", "DETBENCH_IMAGE": REGISTRY, "PYTHONPATH": "/src",
                              "CONTAINER_IMAGE": PRESIGNED, "HF_TOKEN": "hf_x"})
    assert env["DETBENCH_API_KEY"] == REDACTED and "Rg5tryPw0rd" not in env["DETBENCH_IMAGE"]
    assert "9f8e7d6c5b4a3f2e1d" not in env["CONTAINER_IMAGE"] and env["PYTHONPATH"] == "/src"
    assert "HF_TOKEN" not in env  # not on the allow-list at all


@pytest.mark.parametrize("variable", fingerprint.IMAGE_ENV_VARS)
def test_the_fingerprint_redacts_the_image_when_it_is_made(monkeypatch, variable):
    for name in fingerprint.IMAGE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, REGISTRY)
    assert fingerprint.image() == f"https://{REDACTED}@registry.example.com/team/detbench:cu128"
    monkeypatch.setenv(variable, "nvcr.io/nvidia/pytorch:24.05-py3")
    assert fingerprint.image() == "nvcr.io/nvidia/pytorch:24.05-py3"


def test_the_envcheck_json_file_stdout_and_table_carry_no_secret(tmp_path):
    env = {**os.environ, "DETBENCH_IMAGE": REGISTRY, "CONTAINER_IMAGE": PRESIGNED, "HF_TOKEN": "hf_AbCdEfGh123",
           "MY_API_KEY": "sk-live-0123456789", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG", "PGPASSWORD":
           "Pg5ecret!", "DETBENCH_AUTH_HEADER": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.s1gn",
           "DETBENCH_DB": "host=db user=u password=Pg5ecret! dbname=x"}
    out = tmp_path / "envcheck.json"
    runs = [subprocess.run([sys.executable, "-m", "detbench.envcheck", *extra, "--only", "host", "--json-out",
                            str(out)],
                           capture_output=True, text=True, env=env, timeout=120) for extra in (["--json"], [])]
    document = json.loads(runs[0].stdout)
    published = out.read_text() + "".join(r.stdout + r.stderr for r in runs)
    secrets = ["Rg5tryPw0rd", "ci-bot", "9f8e7d6c5b4a3f2e1d", "FwoGZXIvYXdzSessTok3n", "hf_AbCdEfGh123",
               "sk-live-0123456789", "wJalrXUtnFEMI", "Pg5ecret!", "eyJhbGciOiJIUzI1NiJ9"]
    assert not [s for s in secrets if s in published]
    assert document["environment"]["DETBENCH_IMAGE"] == f"https://{REDACTED}@registry.example.com/team/detbench:cu128"
    assert document["environment"]["DETBENCH_DB"] == f"host=db user=u password={REDACTED} dbname=x"
