"""The CI workflow and the compose file run the images the repo has, in the order the docs promise.

Syntax and semantics are actionlint's and hadolint's job (.ci/lint); these tests hold the project's own rules.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
IMAGE_TAGS = sorted(p.name.split(".", 1)[1] for p in ROOT.glob("Dockerfile.*"))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def images_workflow() -> dict:
    return load(ROOT / ".github" / "workflows" / "images.yml")


def steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + " " + str(step.get("uses", "")) for step in job["steps"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_are_pinned_minimal_and_serialised(path):
    workflow = load(path)
    assert workflow.get("permissions") == {"contents": "read"}, f"{path.name}: permissions must be minimal"
    assert "concurrency" in workflow, f"{path.name}: no concurrency group"
    for name, job in workflow["jobs"].items():
        assert "timeout-minutes" in job, f"{path.name}: job {name} has no timeout"
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses:
                assert re.search(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$", uses), f"{path.name}: {uses} is not pinned"


def test_gpu_job_covers_every_image_on_the_self_hosted_runner(images_workflow):
    job = images_workflow["jobs"]["gpu-bench"]
    assert set(job["runs-on"]) == {"self-hosted", "linux", "gpu"}
    assert sorted(job["strategy"]["matrix"]["image"]) == IMAGE_TAGS
    assert job["strategy"]["fail-fast"] is False  # one image's failure must not hide the others' results
    text = steps_text(job)
    assert 'Dockerfile.${{ matrix.image }}' in text
    assert "envcheck --require-gpu" in text
    assert "pytest bench/" in text and "--benchmark-json=" in text
    assert "--gpus all" in text and "--shm-size=8g" in text
    assert "actions/upload-artifact" in text


def test_report_job_merges_summarises_and_gates(images_workflow):
    job = images_workflow["jobs"]["report"]
    assert job["needs"] == "gpu-bench"
    text = steps_text(job)
    assert "actions/download-artifact" in text
    assert "detbench-report" in text and "--baseline" in text and "--fail-on-regression" in text
    assert "GITHUB_STEP_SUMMARY" in text
    assert "baselines/" in text


def test_lint_and_cpu_jobs_run_on_hosted_runners(images_workflow):
    jobs = images_workflow["jobs"]
    assert jobs["lint"]["runs-on"] == "ubuntu-latest" and ".ci/lint" in steps_text(jobs["lint"])
    assert jobs["cpu-tests"]["runs-on"] == "ubuntu-latest" and "pytest" in steps_text(jobs["cpu-tests"])
    assert set(jobs["gpu-bench"]["needs"]) == {"lint", "cpu-tests", "compat"}


def test_compose_runs_preflight_then_matrix_then_report():
    compose = load(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert services["matrix"]["depends_on"] == {"preflight": {"condition": "service_completed_successfully"}}
    assert services["report"]["depends_on"] == {"matrix": {"condition": "service_completed_successfully"}}
    assert services["preflight"]["command"][0] == "envcheck"
    assert services["matrix"]["command"][:2] == ["pytest", "bench/"]
    assert services["report"]["command"][0] == "detbench-report"
    for name, service in services.items():
        assert "./results:/results" in service["volumes"], f"{name}: results must land in the mounted volume"
        assert service["shm_size"] == "8g"
    gpu = services["matrix"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    dockerfile = services["matrix"]["build"]["dockerfile"]
    default_tag = re.search(r"DETBENCH_CUDA:-(\w+)", dockerfile).group(1)
    assert default_tag in IMAGE_TAGS


# ---- the torch lines: nox sessions here, the same smoke cells inside each image ------------------------------


def nox_sessions() -> list[str]:
    """noxfile.py's compatibility sessions, ``torch-<version>``, read without nox installed."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    (table,) = [
        node.value for node in tree.body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["TORCH_LINE_TABLE"]
    ]
    return [f"torch-{torch}" for torch, _, _ in ast.literal_eval(table)]


def test_compat_job_runs_every_nox_session_on_hosted_runners(images_workflow):
    job = images_workflow["jobs"]["compat"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["strategy"]["fail-fast"] is False
    assert sorted(f"torch-{t}" for t in job["strategy"]["matrix"]["torch"]) == sorted(nox_sessions())
    text = steps_text(job)
    assert 'nox --session "torch-${{ matrix.torch }}"' in text and "nox==" in text


def test_each_image_runs_the_smoke_cells_of_the_nox_sessions(images_workflow):
    text = steps_text(images_workflow["jobs"]["gpu-bench"])
    assert '-v "$PWD/.ci:/ci:ro"' in text and "bash /ci/smoke-cells" in text
    assert '".ci" / "smoke-cells"' in (ROOT / "noxfile.py").read_text()


def test_ci_runs_every_compat_session_after_the_main_tests():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    main_tests = next(i for i, line in enumerate(lines) if line.rstrip().endswith("python -m pytest"))
    compat = next(i for i, line in enumerate(lines) if "nox --tags compat" in line)
    assert compat > main_tests
    assert "compat_status == 0" in lines[-1]  # a failed torch line fails CI


@pytest.fixture
def fake_tools(tmp_path):
    """A PATH whose envcheck, python and detbench-report log their arguments; python exits $FAKE_PYTEST_RC."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name, rc in (("envcheck", "0"), ("python", "${FAKE_PYTEST_RC:-0}"), ("detbench-report", "0")):
        tool = bin_dir / name
        tool.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{log}"\nexit {rc}\n')
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, log


def smoke_cells(out: Path, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / ".ci" / "smoke-cells"), str(out)], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_smoke_cells_run_preflight_strict_cells_then_the_report(fake_tools, tmp_path):
    env, log = fake_tools
    out = tmp_path / "out"
    assert smoke_cells(out, env).returncode == 0
    calls = log.read_text().splitlines()
    assert calls[0] == f"envcheck --quick --json-out {out}/envcheck.json"
    cells = [c for c in calls if c.startswith("python -m pytest bench/")]
    assert len(cells) == 2 and all("--detbench-strict" in c for c in cells)  # an error cell fails the line
    assert "--profile smoke" in cells[0] and f"--benchmark-json={out}/smoke.json" in cells[0]
    assert "--compile compiled" in cells[1]
    assert calls[-1] == f"detbench-report {out}/smoke.json --out {out}/report"


def test_smoke_cells_stop_at_a_failed_cell(fake_tools, tmp_path):
    env, log = fake_tools
    result = smoke_cells(tmp_path / "out", {**env, "FAKE_PYTEST_RC": "1"})
    assert result.returncode == 1
    assert not any(c.startswith("detbench-report") for c in log.read_text().splitlines())


def test_smoke_cells_refuse_to_run_outside_the_source_root(fake_tools, tmp_path):
    env, _ = fake_tools
    result = smoke_cells(tmp_path / "out", env, cwd=tmp_path)
    assert result.returncode == 2 and "source root" in result.stderr
