"""Installed, not in a checkout: the package built as a wheel, installed into a fresh venv, run from an empty
folder: the smoke matrix through the `detbench` command (the pytest11 plugin), the report, and detbench-ab.

The fresh venv holds detbench alone; torch and the other dependencies come from this test's interpreter through
PYTHONPATH (whose .pth files are not read: this checkout's editable install stays out of sight)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.xdist_group("installed")  # one worker builds and installs the wheel once


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("installed")
    wheel_dir, source = base / "wheels", base / "source"
    # built from a copy of the tracked files: a build leaves build/ and *.egg-info where it runs
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheel_dir), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (wheel,) = wheel_dir.glob("detbench-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", purelib,
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    here = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": here, "OMP_NUM_THREADS": "1"}
    env.pop("DETBENCH_MODEL_MODULES", None)
    empty = base / "empty"
    empty.mkdir()
    return python, env, empty


def run(installed, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    python, env, cwd = installed
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_is_the_one_imported(installed):
    done = run(installed, "-c", "import bench, reports, envcheck; print(bench.__file__)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "venv" in done.stdout and str(ROOT / "bench") not in done.stdout


def test_the_smoke_matrix_and_the_report_run_from_an_empty_folder(installed):
    _, _, cwd = installed
    matrix = run(installed, "-m", "bench.plugin.cli", "--profile", "smoke", "--models", "resnet50", "--modes", "infer",
                 "--image-size", "32x32", "--benchmark-json=run.json")
    assert matrix.returncode == 0, matrix.stdout[-3000:] + matrix.stderr[-2000:]
    data = json.loads((cwd / "run.json").read_text())
    assert [b["extra_info"]["detbench"]["cell"]["model"] for b in data["benchmarks"]] == ["resnet50"]
    report = run(installed, "-m", "reports", "run.json", "--out", "report")
    assert report.returncode == 0, report.stderr[-2000:]
    assert (cwd / "report" / "report.html").is_file()


def test_detbench_ab_runs_from_an_empty_folder(installed):
    _, _, cwd = installed
    done = run(installed, "-m", "bench.tools.ab", "--pairs", "2", "--rounds", "3", "--block-s", "0.05", "--pin-cpus",
               "none", "--out", "ab", "--", "--models", "resnet50", "--modes", "infer", "--precisions", "fp32",
               "--batch-sizes", "2", "--image-size", "32x32")
    assert done.returncode in (0, 3), done.stdout[-2000:] + done.stderr[-2000:]
    payload = json.loads((cwd / "ab" / "ab.json").read_text())
    (verdict,) = payload["verdicts"].values()
    assert verdict["units"] == 2 and verdict["unit"] == "worker pair" and payload["mode"] == "sides"
