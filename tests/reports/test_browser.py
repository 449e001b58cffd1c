"""Open the report in headless Chromium from disk: the script runs without errors, tables get wired,
images decode, the telemetry plots are drawn, and a screenshot is taken."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from detbench.reports.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI sets DETBENCH_REQUIRE_BROWSER=1 after installing chromium, so a missing browser fails there, not skips.
if CHROMIUM is None and os.environ.get("DETBENCH_REQUIRE_BROWSER") == "1":
    raise RuntimeError("DETBENCH_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install -y chromium)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)"
)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture
def report(tmp_path, run_file) -> Path:
    base, cand = run_file("base.json", seed=1), run_file("cand.json", seed=1, speed=0.85)
    assert main([str(base), str(cand), "--out", str(tmp_path / "out"), "--title", "browser <test>"]) in (0, 3)
    return tmp_path / "out" / "report.html"


def self_test(tmp_path: Path, report: Path) -> tuple[str, subprocess.CompletedProcess]:
    """The report opened at ``#selftest`` in headless Chromium: its ``<body>`` tag, checked to say the page's
    script ran and its self-test (sorting, the status filter) passed, and the dumped DOM."""
    url = report.resolve().as_uri() + "#selftest"
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stdout[:500]
    tag = body.group(0)
    assert 'data-js="ready"' in tag and "data-js-error" not in tag, tag
    assert 'data-selftest="pass"' in tag, tag
    return tag, dom


def test_report_renders_in_a_real_browser(tmp_path, report):
    url = report.resolve().as_uri() + "#selftest"
    tag, dom = self_test(tmp_path, report)
    images = re.search(r'data-images="ok:(\d+)"', tag)
    assert images and int(images.group(1)) >= 5, tag  # every <img> decoded (complete, naturalWidth > 0)
    assert re.search(r'<table class="sortable" id="matrix-table" data-sortable="1"', dom.stdout)
    assert 'data-wired="1"' in dom.stdout
    assert re.search(r'id="telemetry-plots" data-drawn="[^"]+"', dom.stdout)
    assert dom.stdout.count("<polyline") >= 5  # the telemetry series of the first cell were drawn
    assert not re.search(r"Uncaught|CONSOLE\(\d+\)\].*Error", dom.stderr), dom.stderr[-2000:]

    shot = tmp_path / "report.png"
    result = _chromium(
        tmp_path,
        "--virtual-time-budget=5000",
        "--hide-scrollbars",
        "--window-size=1400,2000",
        f"--screenshot={shot}",
        url,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
