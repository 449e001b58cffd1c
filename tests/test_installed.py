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
        if (ROOT / name).is_symlink():  # detbench/bench -> ../bench: the namespace's links
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).symlink_to(os.readlink(ROOT / name))
        elif (ROOT / name).is_file():
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


def run(installed, *args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    python, env, empty = installed
    return subprocess.run([str(python), *args], cwd=cwd or empty, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_installed_package_is_the_one_imported_and_takes_one_top_level_name(installed):
    done = run(installed, "-c", "import detbench.bench, detbench.reports, detbench.envcheck; "
                                "print(detbench.bench.__file__)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "venv" in done.stdout and str(ROOT / "bench") not in done.stdout
    python = installed[0]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    names = {p.name for p in Path(purelib).iterdir()  # bin/: the scripts `pip install --target` puts there
             if not p.name.endswith((".dist-info", "__pycache__")) and p.name != "bin"}
    assert names == {"detbench"}, names  # no bench, envcheck or reports of its own beside the user's


# A project of the user's, in the environment detbench is installed in: its own `bench` package and a conftest with
# options of the names the matrix uses. Its tests must run as they did before detbench was installed.
PROJECT = {
    "bench/__init__.py": "",
    "bench/core.py": "VALUE = 42\n",
    "conftest.py": ("def pytest_addoption(parser):\n"
                    "    parser.addoption('--seed', type=int, default=0)\n"
                    "    parser.addoption('--models', default='all')\n"),
    "tests/test_own.py": ("import sys\n"
                          "from bench.core import VALUE\n\n"
                          "def test_its_own_bench_and_options(request):\n"
                          "    assert VALUE == 42 and request.config.getoption('--seed') == 7\n"
                          "    assert request.config.getoption('--models') == 'mine'\n"
                          "    assert 'torch' not in sys.modules  # the plugin imports nothing heavy unless asked\n\n"
                          "def test_another(request):\n"
                          "    assert request.config.getoption('--seed') == 7\n"),
}


def test_a_project_with_its_own_bench_package_and_seed_option_runs_its_tests_beside_detbench(installed, tmp_path):
    python, env, _ = installed
    project = tmp_path / "project"
    for name, text in PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    for xdist in ([], ["-n", "2"]):
        done = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--seed", "7",
                               "--models", "mine", *xdist], cwd=project, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and "2 passed" in done.stdout, (xdist, done.stdout[-3000:], done.stderr[-2000:])
    # detbench's plugin was there all along: its options, namespaced, beside the project's own
    usage = subprocess.run([str(python), "-m", "pytest", "--help"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=120)
    assert "--detbench-seed" in usage.stdout and "--seed=SEED" in usage.stdout, usage.stdout[-3000:]
    # detbench itself, run from that project's folder (its `bench` is not detbench's): collects the matrix
    matrix = subprocess.run([str(python), "-m", "detbench.bench.plugin.cli", "--collect-only", "-q", "--profile",
                             "smoke", "--models", "resnet50", "--modes", "infer"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert matrix.returncode == 0 and "resnet50-infer" in matrix.stdout, matrix.stdout[-3000:] + matrix.stderr[-2000:]


def test_the_smoke_matrix_and_the_report_run_from_an_empty_folder(installed):
    _, _, cwd = installed
    matrix = run(installed, "-m", "detbench.bench.plugin.cli", "--profile", "smoke", "--models", "resnet50", "--modes",
                 "infer",
                 "--image-size", "32x32", "--benchmark-json=run.json")
    assert matrix.returncode == 0, matrix.stdout[-3000:] + matrix.stderr[-2000:]
    data = json.loads((cwd / "run.json").read_text())
    assert [b["extra_info"]["detbench"]["cell"]["model"] for b in data["benchmarks"]] == ["resnet50"]
    report = run(installed, "-m", "detbench.reports", "run.json", "--out", "report")
    assert report.returncode == 0, report.stderr[-2000:]
    assert (cwd / "report" / "report.html").is_file()


# A user's own model module in the folder the gate runs from (its sides import it too): the tests' tiny models, copied
# under a user's name; registry models are the matrix test's above. resnet50 here made each side import torchvision and
# build a real network (the same A/B in the gate-proof test's part took 35 CPU-s with resnet50, 19 with the tiny model;
# 2026-12-06)
USER_MODELS = ROOT / "tests" / "bench" / "tiny_models.py"


def test_detbench_ab_runs_from_a_folder_holding_only_the_users_own_model(installed):
    cwd = installed[2].parent / "with-user-models"  # beside the empty folder, which the other tests keep empty
    cwd.mkdir()
    shutil.copy(USER_MODELS, cwd / "user_models.py")
    done = run(installed, "-m", "detbench.bench.tools.ab", "--pairs", "2", "--rounds", "3", "--block-s", "0.05",
               "--pin-cpus", "none", "--out", "ab", "--", "--models", "tiny_convnet", "--model-modules", "user_models",
               "--modes", "infer", "--precisions", "fp32", "--batch-sizes", "2", "--image-size", "32x32", cwd=cwd)
    assert done.returncode in (0, 3), done.stdout[-2000:] + done.stderr[-2000:]
    payload = json.loads((cwd / "ab" / "ab.json").read_text())
    assert list(payload["verdicts"]) == ["tiny_convnet-infer-eager-fp32-bs2-gpu1-32x32"], payload["verdicts"]
    (verdict,) = payload["verdicts"].values()
    assert verdict["units"] == 2 and verdict["unit"] == "worker pair" and payload["mode"] == "sides"
