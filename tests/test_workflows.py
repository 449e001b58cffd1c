"""The CI workflow and the compose file run the images the repo has, in the order the docs promise.

Syntax and semantics are actionlint's and hadolint's job (.ci/lint); these tests hold the project's own rules.
"""

from __future__ import annotations

import re
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
    assert set(jobs["gpu-bench"]["needs"]) == {"lint", "cpu-tests"}


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
