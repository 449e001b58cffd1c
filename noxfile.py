"""Compatibility sessions: detbench on every torch line it ships (one per image) or pins (constraints.txt).

Each PyPI line's session installs one torch/torchvision pair into a fresh venv, then detbench without
re-resolving torch, and runs what the images run (``.ci/smoke-cells``: ``envcheck --quick``, the smoke matrix, a
compiled cell, ``detbench-report``) plus the unit tests that exercise torch: those marked ``torch_line``
(tests/conftest.py's folder rule; docs/compat.md), less the ``timing`` ones. The constraints' line (2.14.1) is
the main test run's: .ci/run runs its smoke cells and the ``slow`` tests (which the README's test command leaves out)
in the main venv (``--no-venv``), installing nothing.
Results: ``results/compat/<torch>/``.

    nox -l                      # the sessions
    nox -s torch-2.5.1          # one line
    nox -t compat               # every line, each in a fresh venv
    nox --no-venv -s torch-2.14.1   # the constraints' line in the active venv (.ci/run, beside the three PyPI lines)
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

# The unit tests a PyPI line runs: the torch-facing set (tests/conftest.py), without the timing-sensitive ones,
# which measure the host and run serially in the main test run (four sessions share the 2 cores in CI).
UNIT_TEST_SELECTION = ("-m", "torch_line and not timing")
# What the constraints' line runs beside its smoke cells: the tests the README's command leaves out (`slow`: each over
# 20 CPU-s of a real optional detector's or compiler's run; pyproject.toml). The main test run runs the rest.
SLOW_TEST_SELECTION = ("-m", "slow")

# Where .ci/run prefetches each PyPI line's wheels (<dir>/<torch>/) while the main test run runs.
WHEELS_ENV = "DETBENCH_COMPAT_WHEELS"

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
    """Install ``line`` and detbench into the session's fresh venv, or with ``nox --no-venv`` use the environment
    nox runs in (.ci/run: the main test run's venv, torch 2.14.1), after checking it holds that pair; run the
    smoke cells and the torch-facing unit tests (on the constraints' line the main test run ran them all)."""
    main_venv = session.venv_backend == "none"
    if not main_venv:
        # --no-compile: torch's thousands of modules are byte-compiled on import, only those used (saves ~20 s).
        pair = (f"torch=={line.torch}", f"torchvision=={line.torchvision}")
        wheels = prefetched_wheels(line)
        if wheels is not None:  # .ci/run downloaded this pair's wheels while the main test run ran
            session.install("--no-compile", "--no-index", "--find-links", str(wheels), *pair)
            _drop(wheels)
        else:
            session.install("--no-compile", *pair)
        session.install("--no-compile", *project_dependencies())
        session.install("--no-compile", "--no-deps", "-e", ".")  # --no-deps: torch stays the pair above
    session.run("python", "-c", _VERSION_CHECK, line.torch, line.torchvision, external=main_venv)

    # This job checks what runs on each line, not how fast: one OpenMP thread per process keeps a CPU cell's
    # time independent of what else the 2 cores run (2-thread cells ran 30-270x slower on oversubscribed cores).
    session.env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    out = RESULTS / line.torch
    session.run("bash", str(ROOT / ".ci" / "smoke-cells"), str(out), external=True)
    if line.shipped_by == "constraints.txt" and not session.posargs:
        # the main test run (the README's command) runs the rest of the suite, extras included, on this line. In the
        # main venv (CI) the extras are installed and CI's DETBENCH_REQUIRE_EXTRAS=1 holds; a fresh venv has none.
        session.log(f"unit tests: the main test run ran torch {line.torch}'s (constraints.txt) but the slow ones: here")
        session.run(
            "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={out / 'slow-tests.xml'}",
            "tests", *SLOW_TEST_SELECTION,
            env={"DETBENCH_CHECKOUT_CHECK": "0", **({} if main_venv else {"DETBENCH_REQUIRE_EXTRAS": "0"})},
            external=main_venv,
        )
        if not main_venv:
            _drop_venv(session)
        return
    # No extra is installed here: a test that needs one skips, naming it (tests/extras.py); CI's
    # DETBENCH_REQUIRE_EXTRAS=1 is for the main venv, which has them. Four sessions run at once in CI,
    # each writing its results under the checkout: the checkout check (tests/conftest.py) is the main run's.
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--junitxml={out / 'unit-tests.xml'}",
        *(session.posargs or ("tests", *UNIT_TEST_SELECTION)),  # nox -s torch-2.5.1 -- tests/bench
        env={"DETBENCH_REQUIRE_EXTRAS": "0", "DETBENCH_CHECKOUT_CHECK": "0"},
        external=main_venv,
    )
    if not main_venv:
        _drop_venv(session)


def prefetched_wheels(line: TorchLine) -> Path | None:
    """``$DETBENCH_COMPAT_WHEELS/<torch>``: the pair's wheels and their dependencies, where .ci/run's prefetch
    finished downloading them (it renames the folder when complete); None otherwise (the install downloads)."""
    root = os.environ.get(WHEELS_ENV)
    folder = Path(root) / line.torch if root else None
    return folder if folder is not None and folder.is_dir() else None


def _drop_venv(session: nox.Session) -> None:
    _drop(Path(session.virtualenv.location))


def _drop(path: Path) -> None:
    if os.environ.get("DETBENCH_COMPAT_DROP_VENVS") == "1":  # CI: free the disk (~5 GB a venv, ~2.7 GB of wheels)
        shutil.rmtree(path, ignore_errors=True)


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
