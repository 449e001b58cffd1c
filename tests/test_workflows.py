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
IMAGE_TAGS = sorted(p.stem for p in (ROOT / "docker" / "images").glob("*.env"))  # an image: its build arguments


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
    build = next(s for s in job["steps"] if s.get("name") == "Build")["run"]
    assert "docker build -f Dockerfile " in build and '"${image_args[@]}"' in build
    assert 'docker/images/${{ matrix.image }}.env' in build
    assert "envcheck --require-gpu" in text
    assert "pytest bench/" in text and "--benchmark-json=" in text
    assert "--gpus all" in text and "--shm-size=8g" in text
    assert "actions/upload-artifact" in text


def test_the_workflow_reads_each_images_build_arguments_as_the_tests_do(images_workflow):
    """The build steps turn docker/images/<tag>.env into --build-arg words with sed: run it on every file."""
    from tests.test_dockerfiles import IMAGE_ARG_FILES, read_image_args  # the files, read as that test reads them

    job = images_workflow["jobs"]["gpu-bench"]
    scripts = [step["run"] for step in job["steps"] if "image_args < <(sed" in step.get("run", "")]
    programs = {re.search(r"sed -n '([^']+)'", script).group(1) for script in scripts}
    assert len(scripts) == 2 and len(programs) == 1, "the image and its baseline read the file alike"
    (program,) = programs
    assert IMAGE_ARG_FILES
    for path in IMAGE_ARG_FILES:
        words = subprocess.run(["sed", "-n", program, str(path)], capture_output=True, text=True, check=True)
        expected = [f"--build-arg={key}={value}" for key, value in read_image_args(path).items()]
        assert words.stdout.splitlines() == expected, path.name


def test_report_job_merges_and_summarises_without_gating_images_against_each_other(images_workflow):
    job = images_workflow["jobs"]["report"]
    assert job["needs"] == "gpu-bench"
    text = steps_text(job)
    assert "actions/download-artifact" in text
    assert "detbench-report" in text and "GITHUB_STEP_SUMMARY" in text
    assert "--fail-on-regression" not in text  # images differ on purpose; the gate is detbench-ab per image


def test_each_image_is_gated_by_detbench_ab_against_the_baseline_commits_image(images_workflow):
    job = images_workflow["jobs"]["gpu-bench"]
    steps = {step.get("name", ""): step for step in job["steps"]}
    build = next(s for n, s in steps.items() if n.startswith("Build the baseline image"))["run"]
    assert "git worktree add" in build and '-t "${BASELINE_IMAGE}"' in build and "BASELINE_BUILT=" in build
    assert "::warning::" in build  # no baseline commit or a new image: said, not failed
    # the baseline commit's own build arguments (a new base or torch is what the gate is for), and its
    # per-image Dockerfile where it predates the one Dockerfile
    assert '"$src/docker/images/${{ matrix.image }}.env"' in build and '-f "$dockerfile"' in build
    assert '"$src/Dockerfile.${{ matrix.image }}"' in build
    gate_name, gate_step = next((n, s) for n, s in steps.items() if n.startswith("Regression gate"))
    assert "detbench-ab" in gate_name and gate_step["if"] == "${{ env.BASELINE_BUILT != '' }}"
    assert '.ci/ab-gate "${{ matrix.image }}" "${BASELINE_IMAGE}" "${IMAGE}"' in gate_step["run"]
    assert "${AB_BENCH_ARGS}" in gate_step["run"]
    names = list(steps)
    assert names.index(gate_name) > names.index("Benchmark matrix") and names.index(gate_name) < names.index(
        "Upload results")  # the gate's rounds are uploaded too, even when it fails
    env = images_workflow["env"]
    assert float(env["AB_BUDGET_S"]) > 0 and "AB_PAIRS" not in env and "--profile" in env["AB_BENCH_ARGS"]
    assert "--modes infer" in env["AB_BENCH_ARGS"] and "--batch-sizes 8" in env["AB_BENCH_ARGS"]
    assert job["steps"][0]["with"]["fetch-depth"] == 0


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
    assert services["matrix"]["build"]["dockerfile"] == "Dockerfile"  # the build arguments: test_dockerfiles.py
    default_tag = re.search(r"DETBENCH_CUDA:-(\w+)", services["matrix"]["image"]).group(1)
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
    text = (ROOT / ".ci" / "run").read_text()
    lines = text.splitlines()
    main_tests = next(i for i, line in enumerate(lines) if "python -m pytest -n 4 --dist loadgroup -m timing" in line)
    compat = [i for i, line in enumerate(lines) if "--session torch-" in line]
    assert compat and min(compat) > main_tests
    named = set(re.findall(r"torch-[0-9.]+[0-9]", "\n".join(lines[i] for i in compat)))
    assert named == set(nox_sessions())  # every torch line, none twice
    assert "--no-venv --session torch-2.14.1" in text  # the constraints' line: the main venv, no fresh install
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


# ---- .ci/ab-gate: detbench-ab over two docker run templates, its exit codes for the job -------------------


@pytest.fixture
def fake_ab(tmp_path):
    """A detbench-ab that logs each argument on its own line, writes summary.md and exits $FAKE_AB_RC."""
    tool = tmp_path / "detbench-ab"
    log = tmp_path / "ab.log"
    tool.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "' + str(log) + '"\n'
                    'while [ "$1" != "--out" ]; do shift; done\n'
                    'echo "**VERDICT: fake**" > "$2/summary.md"\nexit "${FAKE_AB_RC:-0}"\n')
    tool.chmod(0o755)
    env = {**os.environ, "DETBENCH_AB": str(tool), "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md")}
    return env, log


def ab_gate(env: dict, out: Path, rc: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / ".ci" / "ab-gate"), "cu128", "img:base", "img:cand", str(out),
                           "--profile", "quick", "--models", "a b"], env={**env, "FAKE_AB_RC": str(rc)},
                          capture_output=True, text=True)


def test_ab_gate_runs_both_images_as_long_lived_sides_and_passes_the_matrix_options(fake_ab, tmp_path):
    env, log = fake_ab
    result = ab_gate({**env, "AB_ROUNDS": "7", "AB_PAIRS": "5"}, tmp_path / "out")
    assert result.returncode == 0 and "cu128: no regression against img:base" in result.stdout
    args = log.read_text().splitlines()
    base, cand = args[args.index("--baseline-cmd") + 1], args[args.index("--candidate-cmd") + 1]
    for template, image in ((base, "img:base"), (cand, "img:cand")):
        assert template.startswith("docker run --rm --gpus all --shm-size=8g")
        assert template.endswith(f" -i {image} {{worker}}")  # the side speaks over stdin/stdout
    assert args[args.index("--rounds") + 1] == "7" and args[args.index("--pairs") + 1] == "5"
    assert args[args.index("--threshold") + 1] == "0.03"
    assert args[args.index("--out") + 1] == str(tmp_path / "out")
    assert args[args.index("--") + 1:] == ["--profile", "quick", "--models", "a b"]
    assert "VERDICT: fake" in (tmp_path / "step-summary.md").read_text()


@pytest.mark.parametrize("rc, words", [(3, "::error::cu128: regression beyond 0.03 against img:base"),
                                       (4, "::error::cu128: nothing comparable"),
                                       (2, "::error::cu128: detbench-ab failed (exit 2")])
def test_ab_gate_fails_the_job_on_a_regression_nothing_comparable_or_a_broken_run(fake_ab, tmp_path, rc, words):
    env, _ = fake_ab
    result = ab_gate(env, tmp_path / "out", rc)
    assert result.returncode == 1 and words in result.stdout


def test_ab_gate_usage(tmp_path):
    result = subprocess.run(["bash", str(ROOT / ".ci" / "ab-gate"), "cu128"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr
