"""envcheck's command line, round three (issue 24): a timed-out check's remedy names a --timeout envcheck accepts;
the exit code in the printed JSON is the process's, also when --json-out cannot be written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from detbench.envcheck import cli
from detbench.envcheck.options import MAX_TIMEOUT_S
from detbench.envcheck.registry import Check
from detbench.envcheck.result import Outcome, passed
from detbench.envcheck.runner import longer_timeout, run_check


def test_the_remedy_of_a_hang_names_a_timeout_envcheck_accepts(make_ctx):
    release = threading.Event()

    def hang(ctx) -> Outcome:
        release.wait(30)
        return passed("never")

    result, _ = run_check(Check("hang", "hangs", "critical", hang), make_ctx(timeout_s=0.000001))
    release.set()
    suggested = result.remedy.split("--timeout ", 1)[1].split()[0]
    assert cli._timeout(suggested) >= 60, result.remedy  # the parser takes it (not "--timeout 0")


@pytest.mark.parametrize("timeout_s", [0.000001, 0.3, 2.0, 30000.0, 86400.0])
def test_the_longer_timeout_suggested_is_longer_and_within_what_envcheck_takes(timeout_s):
    suggested = cli._timeout(f"{longer_timeout(timeout_s):g}")
    assert suggested >= min(4 * timeout_s, MAX_TIMEOUT_S) and suggested <= MAX_TIMEOUT_S


def test_a_json_out_that_cannot_be_written_is_exit_2_in_the_printed_json_too():
    proc = subprocess.run([sys.executable, "-m", "detbench.envcheck", "--json", "--json-out", "/dev/full", "--only",
                           "host"],
                          capture_output=True, text=True, timeout=120)
    document = json.loads(proc.stdout)
    assert proc.returncode == 2 and document["exit_code"] == 2, (proc.returncode, document["exit_code"])
    assert "cannot write the JSON report to /dev/full" in document["output_error"]
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert err == [f"envcheck: error: {document['output_error']}"], proc.stderr


def test_the_table_shows_the_exit_code_the_process_returns():
    proc = subprocess.run([sys.executable, "-m", "detbench.envcheck", "--json-out", "/dev/full", "--only", "host"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "(exit 2)" in proc.stdout and "(exit 0)" not in proc.stdout, proc.stdout[-500:]
