"""The plain DDP fidelity reference runs end to end (here over gloo on the CPU, a small detector)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.runtime.torchrun import child_env


# A detector's DDP steps over gloo on 2 CPU cores: it passed the 300 s default on three lines and ran past it on
# torch 2.11.0 in CI's compat stream.
@pytest.mark.timeout(900)
def test_plain_ddp_starts_its_own_torchrun_and_reports_images_per_second(tmp_path):
    out = tmp_path / "plain.json"
    command = [sys.executable, "-m", "bench.tools.plain_ddp", "--model", "ssdlite320_mobilenet_v3_large",
               "--gpus", "2", "--batch", "2", "--precision", "fp32", "--height", "64", "--width", "64",
               "--warmup", "1", "--iterations", "2", "--json", str(out)]
    # two torchrun ranks on a busy 2-core machine
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "plain DDP ssdlite320_mobilenet_v3_large fp32 2x2:" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["gpus"] == 2 and len(figures["rank0_times_ms"]) == 2
    assert figures["throughput_ips"] == 4 * 1000.0 / figures["slowest_rank_median_ms"]
