"""Compatibility sessions: the suite on every torch line detbench ships (one per image) or pins (constraints.txt).

Each session installs one torch/torchvision pair into a fresh venv, then detbench without re-resolving torch,
and runs what the images run (``.ci/smoke-cells``: ``envcheck --quick``, the smoke matrix, a compiled cell,
``detbench-report``) plus the unit tests (those that need an extra skip). Results: ``results/compat/<torch>/``.

    nox -l                      # the sessions
    nox -s torch-2.5.1          # one line
    nox -t compat               # every line (what .ci/run does)
    nox -R -s torch-2.5.1 -- tests/bench   # again in the same venv, without installing; only these unit tests
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "compat"
nox.options.default_venv_backend = "venv"  # the stdlib's: nothing more to install before the first session
nox.options.reuse_existing_virtualenvs = False  # every run starts from a fresh venv: nothing stale is tested
nox.options.error_on_missing_interpreters = True


@dataclass(frozen=True)
class TorchLine:
    """A torch/torchvision pair and what ships it: an image (its build arguments: docker/images/<tag>.env) or
    constraints.txt. tests/test_dockerfiles.py keeps this table and those files in step."""

    torch: str
    torchvision: str
    shipped_by: str


# A literal, so the tests read it without nox installed (ast.literal_eval).
TORCH_LINE_TABLE = (
    ("2.5.1", "0.20.1", "detbench:cu121"),
    ("2.7.1", "0.22.1", "detbench:cu118"),
    ("2.11.0", "0.26.0", "detbench:cu128"),
    ("2.14.1", "0.29.1", "constraints.txt"),
)
TORCH_LINES = tuple(TorchLine(*row) for row in TORCH_LINE_TABLE)

UNIT_TESTS = ("tests/bench", "tests/envcheck", "tests/test_imports.py")  # what calls torch; reports are pandas
FIDELITY_TIMING_TEST = (
    "tests/bench/tools/test_fidelity.py::test_check_runs_the_suite_region_and_the_bare_loop_in_alternation_on_the_same_setup"
)

# The check that pip kept the pair it was given (a later install could otherwise swap torch unnoticed).
_VERSION_CHECK = (
    "import sys, torch, torchvision; "
    "got = (torch.__version__.split('+')[0], torchvision.__version__.split('+')[0]); "
    "want = tuple(sys.argv[1:]); "
    "print(f'torch {torch.__version__}, torchvision {torchvision.__version__}'); "
    "sys.exit(0 if got == want else f'expected torch/torchvision {want}, found {got}')"
)


def project_dependencies() -> list[str]:
    """detbench's own dependencies and its test extra's, without torch/torchvision (the session pins those)."""
    project = nox.project.load_toml(str(ROOT / "pyproject.toml"))["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    return [r for r in requirements if re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0] not in ("torch", "torchvision")]


def run_line(session: nox.Session, line: TorchLine) -> None:
    """Install ``line`` and detbench into the session's venv; run the smoke cells and the unit tests."""
    # --no-compile: torch's thousands of modules are byte-compiled on import, only those used (saves ~20 s).
    session.install("--no-compile", f"torch=={line.torch}", f"torchvision=={line.torchvision}")
    session.install("--no-compile", *project_dependencies())
    session.install("--no-compile", "--no-deps", "-e", ".")  # --no-deps: torch stays the pair above
    session.run("python", "-c", _VERSION_CHECK, line.torch, line.torchvision)

    # This job checks what runs on each line, not how fast: one OpenMP thread per process keeps a CPU cell's
    # time independent of what else the 2 cores run (2-thread cells ran 30-270x slower on oversubscribed cores).
    session.env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    out = RESULTS / line.torch
    session.run("bash", str(ROOT / ".ci" / "smoke-cells"), str(out), external=True)
    # The unit tests of the packages that call torch (bench, envcheck). No extra is installed here: a test that
    # needs one skips, naming it (tests/extras.py); CI's DETBENCH_REQUIRE_EXTRAS=1 is for the main test run, which
    # installs them. The constraints' line is the main test run's own torch: its whole suite ran there already.
    if line.shipped_by == "constraints.txt" and not session.posargs:
        session.log(f"unit tests: the main test run covers torch {line.torch} (constraints.txt)")
        _drop_venv(session)
        return
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--junitxml={out / 'unit-tests.xml'}",
        # The timing self-check compares a tiny model's suite loop with a bare loop; it is about the host, not
        # the torch line, runs in the main test run, and failed here on 3 of 4 lines when the cores were busy.
        "--deselect", FIDELITY_TIMING_TEST,
        *(session.posargs or UNIT_TESTS),  # nox -s torch-2.5.1 -- tests/bench
        env={"DETBENCH_REQUIRE_EXTRAS": "0"},
    )
    _drop_venv(session)


def _drop_venv(session: nox.Session) -> None:
    if os.environ.get("DETBENCH_COMPAT_DROP_VENVS") == "1":  # CI: free ~5 GB before the next line installs
        shutil.rmtree(session.virtualenv.location, ignore_errors=True)


def _register(line: TorchLine) -> None:
    @nox.session(name=f"torch-{line.torch}", tags=["compat"])
    def compat(session: nox.Session) -> None:
        run_line(session, line)

    compat.__doc__ = f"torch {line.torch} / torchvision {line.torchvision} ({line.shipped_by})"


for _line in TORCH_LINES:
    _register(_line)

# A shared download cache only where the caller made a fresh one (.ci/run does, per run); never ~/.cache.
if "PIP_CACHE_DIR" not in os.environ:
    os.environ["PIP_NO_CACHE_DIR"] = "1"
