"""The plain DDP fidelity reference runs end to end (here over gloo on the CPU, a small detector)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from detbench.bench.runtime.torchrun import child_env
from detbench.bench.tools.plain_ddp import wait_for_agent


# A detector's DDP steps over gloo on 2 CPU cores: it passed the 300 s default on three lines and ran past it on
# torch 2.11.0 in CI's compat stream.
@pytest.mark.timeout(900)
def test_plain_ddp_starts_its_own_torchrun_and_reports_images_per_second(tmp_path):
    out = tmp_path / "plain.json"
    command = [sys.executable, "-m", "detbench.bench.tools.plain_ddp", "--model", "ssdlite320_mobilenet_v3_large",
               "--gpus", "2", "--batch", "2", "--precision", "fp32", "--height", "64", "--width", "64",
               "--warmup", "1", "--iterations", "2", "--json", str(out)]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # two torchrun ranks on a busy 2-core machine
    done = subprocess.run(command, env={**child_env(), "TMPDIR": str(scratch)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # no torchrun log folder left in the user's $TMPDIR (torch's own caches, torchinductor_<user>, are meant to stay)
    assert not list(scratch.glob("torchelastic_*")) and not list(scratch.glob("plain-ddp-*"))
    assert "plain DDP ssdlite320_mobilenet_v3_large fp32 2x2:" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["gpus"] == 2 and len(figures["rank0_times_ms"]) == 2
    assert figures["throughput_ips"] == 4 * 1000.0 / figures["slowest_rank_median_ms"]


@pytest.mark.timeout(60)
def test_an_agent_that_outlives_its_workers_is_ended_after_the_grace():
    """torchrun's agent stayed for minutes after both workers had exited (torch 2.11.0, CI): such an agent is ended
    once it has been alone for the grace; an agent that exits by itself gives its own code."""
    lingering = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                                  "subprocess.run([sys.executable, '-c', 'import time; time.sleep(1)']); "
                                  "time.sleep(600)"])
    assert wait_for_agent(lingering, grace_s=1.0, poll_s=0.1) is None
    assert lingering.poll() is not None  # ended, not left behind
    prompt = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                               "subprocess.run([sys.executable, '-c', 'pass']); sys.exit(3)"])
    assert wait_for_agent(prompt, grace_s=60.0, poll_s=0.1) == 3


@pytest.mark.timeout(60)
def test_an_agent_whose_worker_never_exits_after_the_figures_is_ended_with_it(tmp_path):
    """A gloo worker did not exit after rank 0 had written its figures (torch 2.5.1, CI): the agent is ended the grace
    after the figures, its worker with it; figures from before the run do not end it."""
    figures = tmp_path / "plain.json"
    figures.write_text("{}")  # a previous run's
    worker = tmp_path / "worker.py"
    worker.write_text(f"import time\ntime.sleep(2)\nopen({str(figures)!r}, 'w').write('{{}}')\ntime.sleep(600)\n")
    began = time.time()
    agent = subprocess.Popen([sys.executable, "-c",
                              f"import subprocess, sys; subprocess.run([sys.executable, {str(worker)!r}])"])
    try:
        assert wait_for_agent(agent, str(figures), began, grace_s=1.0, poll_s=0.1) is None
        assert time.time() - began > 3.0  # not ended for the previous run's figures
        assert agent.poll() is not None
    finally:
        agent.kill()
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", str(worker)], capture_output=True).returncode == 1  # the worker is gone too
