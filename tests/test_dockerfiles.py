"""The container images agree with envcheck's tables, with each other and with the package they install.

No Docker engine is needed: the Dockerfiles are parsed, and the entrypoint scripts run with a fake `envcheck`.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import os
import re
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from envcheck import tables

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(ROOT.glob("Dockerfile.*"))
IMAGE_DIR_IN_CONTAINER = "/opt/detbench/"
# pytorch/pytorch:<torch>-cuda<major.minor>-cudnn<n>-<runtime|devel>
PYTORCH_TAG = re.compile(r"^(?P<torch>\d+\.\d+(?:\.\d+)?)-cuda(?P<cuda>\d+\.\d+)(?:\.\d+)?-cudnn\d+-(?:runtime|devel)$")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # the rest of the (joined) line
    stage: int  # index of the FROM it belongs to; -1 before the first FROM


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for these files)."""
    instructions: list[Instruction] = []
    logical = ""
    stage = -1
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1].rstrip() + " "
            continue
        logical += line
        keyword, _, args = logical.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
        logical = ""
    return instructions


def arg_defaults(instructions: list[Instruction], stage: int) -> dict[str, str]:
    """ARG defaults visible in a stage: global ones (before the first FROM) and the stage's own."""
    values: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG" and ins.stage in (-1, stage):
            name, eq, default = ins.args.partition("=")
            if eq:
                values[name.strip()] = default.strip().strip('"')
    return values


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def stages(instructions: list[Instruction]) -> list[tuple[str, str | None]]:
    """(image, alias) for each FROM, the image with global ARG defaults expanded."""
    result = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append((expand(words[0], arg_defaults(instructions, -1)), alias))
    return result


def external_bases(instructions: list[Instruction]) -> list[str]:
    """FROM images that are not earlier stages of the same file."""
    aliases: set[str] = set()
    bases = []
    for image, alias in stages(instructions):
        if image not in aliases:
            bases.append(image)
        if alias:
            aliases.add(alias)
    return bases


def pytorch_tag(image: str) -> re.Match[str]:
    name, _, tag = image.split("@")[0].rpartition(":")
    assert name.endswith("pytorch/pytorch"), f"{image}: expected an official pytorch/pytorch base"
    match = PYTORCH_TAG.match(tag)
    assert match, f"{image}: tag does not look like <torch>-cuda<X.Y>-cudnn<N>-runtime"
    return match


def final_stage(instructions: list[Instruction]) -> int:
    return max(ins.stage for ins in instructions)


def stage_chain(instructions: list[Instruction], stage: int) -> list[int]:
    """The stage and the stages it is built FROM, nearest first (instructions are inherited along it)."""
    by_alias = {alias: i for i, (_, alias) in enumerate(stages(instructions)) if alias}
    chain = [stage]
    image, _ = stages(instructions)[stage]
    while image in by_alias:
        chain.append(by_alias[image])
        image, _ = stages(instructions)[by_alias[image]]
    return chain


def effective(instructions: list[Instruction], stage: int, keyword: str) -> Instruction | None:
    """The instruction of a kind in force in a stage (the stage's own last one, else its parent's)."""
    for index in stage_chain(instructions, stage):
        found = [ins for ins in instructions if ins.stage == index and ins.keyword == keyword]
        if found:
            return found[-1]
    return None


def runs_envcheck(ins: Instruction) -> bool:
    """The instruction's command is envcheck, or a script of docker/ that runs it."""
    if re.search(r"\benvcheck\b", ins.args):
        return True
    for path in re.findall(re.escape(IMAGE_DIR_IN_CONTAINER) + r"([\w./-]+)", ins.args):
        script = ROOT / path
        if script.is_file() and re.search(r"^\s*(exec\s+)?envcheck\b", script.read_text(), re.MULTILINE):
            return True
    return False


@pytest.fixture(scope="module", params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request) -> tuple[Path, list[Instruction]]:
    return request.param, parse_dockerfile(request.param.read_text())


def test_the_images_exist():
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile.cu118", "Dockerfile.cu121"} <= names
    assert any(re.fullmatch(r"Dockerfile\.cu(12[89]|1[3-9]\d)", n) for n in names), "no CUDA 12.8+ image"


def test_parser_reads_continuations_and_stages():
    text = 'ARG B=img:1\nFROM ${B} AS one\nRUN a \\\n  # note\n  && b\nFROM one AS two\nUSER 1000\n'
    instructions = parse_dockerfile(text)
    assert [i.keyword for i in instructions] == ["ARG", "FROM", "RUN", "FROM", "USER"]
    assert instructions[2].args == "a && b"
    assert external_bases(instructions) == ["img:1"]
    assert effective(instructions, 1, "USER").args == "1000"


def test_base_cuda_is_in_the_driver_tables(dockerfile):
    path, instructions = dockerfile
    bases = external_bases(instructions)
    assert bases, f"{path.name}: no base image"
    for image in bases:
        cuda = pytorch_tag(image)["cuda"]
        assert cuda in tables.CUDA_MIN_DRIVER, f"{path.name}: CUDA {cuda} missing from CUDA_MIN_DRIVER"
        major = int(cuda.split(".")[0])
        assert major in tables.CUDA_MINOR_COMPAT_DRIVER, (
            f"{path.name}: CUDA {major} missing from CUDA_MINOR_COMPAT_DRIVER"
        )
        full, compat = tables.min_driver_for_cuda(cuda)
        assert full and compat
        assert tables.parse_version(compat) <= tables.parse_version(full)


def test_base_torch_is_supported_and_paired(dockerfile):
    path, instructions = dockerfile
    for image in external_bases(instructions):
        torch_version = pytorch_tag(image)["torch"]
        assert tables.parse_version(torch_version) >= tables.parse_version(tables.MIN_TORCH), (
            f"{path.name}: torch {torch_version} is older than detbench's minimum {tables.MIN_TORCH}"
        )
        assert tables.expected_torchvision(torch_version), f"{path.name}: no torchvision pairing for {torch_version}"
        major_minor = ".".join(torch_version.split(".")[:2])
        assert major_minor in tables.TORCH_TORCHVISION, f"{path.name}: torch {major_minor} not in the pairing table"


def nox_torch_lines() -> dict[str, tuple[str, str]]:
    """noxfile.py's compatibility sessions: {what ships the line: (torch, torchvision)}, read without nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    (table,) = [
        node.value for node in tree.body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["TORCH_LINE_TABLE"]
    ]
    return {shipped_by: (torch, torchvision) for torch, torchvision, shipped_by in ast.literal_eval(table)}


def test_every_image_torch_line_has_a_compat_session(dockerfile):
    """CI has no Docker engine: the nox session of the image's torch line is what tests that torch."""
    path, instructions = dockerfile
    (image,) = external_bases(instructions)
    torch_version = pytorch_tag(image)["torch"]
    lines = nox_torch_lines()
    assert path.name in lines, f"{path.name}: no compatibility session in noxfile.py for torch {torch_version}"
    session_torch, session_torchvision = lines[path.name]
    assert session_torch == torch_version, f"{path.name} ships torch {torch_version}, its session tests {session_torch}"
    paired = tables.expected_torchvision(torch_version)
    assert session_torchvision.startswith(paired + "."), f"torchvision {session_torchvision} is not {paired}.x"


def test_the_constraints_torch_line_has_a_compat_session_and_nothing_else_does():
    pins = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    lines = nox_torch_lines()
    assert lines.get("constraints.txt") == (pins["torch"], pins["torchvision"])
    assert set(lines) == {p.name for p in DOCKERFILES} | {"constraints.txt"}, "a session for a line nothing ships"


def test_file_name_matches_base_cuda_and_image_name(dockerfile):
    path, instructions = dockerfile
    suffix = path.name.split(".", 1)[1]  # cu118
    for image in external_bases(instructions):
        assert "cu" + pytorch_tag(image)["cuda"].replace(".", "") == suffix, f"{path.name}: base {image}"
    defaults = arg_defaults(instructions, 0)
    assert defaults.get("IMAGE_NAME") == f"detbench:{suffix}"
    env = " ".join(i.args for i in instructions if i.keyword == "ENV")
    assert "DETBENCH_IMAGE=${IMAGE_NAME}" in env, "results must record the image (DETBENCH_IMAGE)"


def test_every_stage_runs_as_non_root(dockerfile):
    path, instructions = dockerfile
    for stage in range(final_stage(instructions) + 1):
        user = effective(instructions, stage, "USER")
        assert user is not None, f"{path.name}: stage {stage} has no USER (runs as root)"
        value = expand(user.args, arg_defaults(instructions, stage) | arg_defaults(instructions, 0))
        name = value.split(":")[0]
        assert name not in ("root", "0") and not name.startswith("$"), f"{path.name}: stage {stage} USER {value}"


def test_every_stage_runs_envcheck_and_has_a_volume(dockerfile):
    path, instructions = dockerfile
    for stage in range(final_stage(instructions) + 1):
        checks = [effective(instructions, stage, k) for k in ("HEALTHCHECK", "ENTRYPOINT")]
        assert any(c is not None and runs_envcheck(c) for c in checks), (
            f"{path.name}: stage {stage} never runs envcheck"
        )
        volume = effective(instructions, stage, "VOLUME")
        assert volume is not None and "/results" in volume.args, f"{path.name}: stage {stage} has no /results VOLUME"


def test_default_target_is_the_benchmark_image(dockerfile):
    path, instructions = dockerfile
    _image, alias = stages(instructions)[final_stage(instructions)]
    assert alias == "runtime", f"{path.name}: `docker build` without --target must give the benchmark image"
    entry = effective(instructions, final_stage(instructions), "ENTRYPOINT")
    assert "entrypoint.sh" in entry.args


def test_copied_sources_exist_and_are_not_dockerignored(dockerfile):
    path, instructions = dockerfile
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for ins in instructions:
        if ins.keyword != "COPY" or "--from" in ins.args:
            continue
        sources = [w for w in shlex.split(ins.args) if not w.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"
            assert source.rstrip("/") not in ignored, f"{path.name}: COPY {source} is excluded by .dockerignore"


def test_images_do_not_drift_apart():
    """The Dockerfiles differ only in their base, image name and descriptions."""

    def body(path: Path) -> list[tuple[str, str]]:
        suffix = path.name.split(".", 1)[1]
        return [
            (i.keyword, i.args.replace(suffix, "<tag>"))
            for i in parse_dockerfile(path.read_text())
            if i.stage >= 0 and i.keyword != "LABEL"
        ]

    first, *others = DOCKERFILES
    for other in others:
        assert body(other) == body(first), f"{other.name} differs from {first.name} beyond its base and name"


def test_image_requirements_cover_the_package_dependencies():
    """The image installs detbench with --no-deps: docker/requirements.txt must pin every other dependency."""
    tomllib = pytest.importorskip("tomllib")
    declared = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    pinned = {}
    for line in (ROOT / "docker" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"docker/requirements.txt: {line} is not pinned with =="
            pinned[req.name.lower()] = spec.version
    for req in declared:
        name = req.name.lower()
        if name in ("torch", "torchvision"):
            continue  # the base image's, held by the generated constraints
        assert name in pinned, f"pyproject.toml depends on {req.name}, docker/requirements.txt does not pin it"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} does not satisfy pyproject's {req}"


def test_base_constraints_pin_the_installed_torch():
    out = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "base-constraints.py")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert f"torch=={metadata.version('torch')}" in out  # the distribution's version, as pip compares it
    assert f"torchvision=={metadata.version('torchvision')}" in out
    assert all("==" in line for line in out)


def test_container_scripts_are_executable():
    for script in (ROOT / "docker").glob("*.sh"):
        assert os.access(script, os.X_OK), f"{script.name} is not executable (git update-index --chmod=+x)"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")


# ---- the entrypoint scripts, with a fake envcheck on PATH ------------------------------------------------------


@pytest.fixture
def fake_envcheck(tmp_path):
    """A PATH with an `envcheck` that logs its arguments and exits with $FAKE_ENVCHECK_RC."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "envcheck"
    script.write_text('#!/usr/bin/env bash\necho "envcheck $*" >> "$FAKE_LOG"\nexit "${FAKE_ENVCHECK_RC:-0}"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "log"

    def run(script_name: str, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, str]:
        environ = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_TOKEN", "DETBENCH_SKIP_PREFLIGHT")}
        environ |= {"PATH": f"{bin_dir}:{environ['PATH']}", "FAKE_LOG": str(log)} | env
        proc = subprocess.run(
            ["bash", str(ROOT / "docker" / script_name), *args], env=environ, capture_output=True, text=True, timeout=30
        )
        return proc, log.read_text() if log.exists() else ""

    return run


def test_entrypoint_runs_preflight_then_the_command(fake_envcheck):
    proc, log = fake_envcheck("entrypoint.sh", "echo", "benchmark", DETBENCH_PREFLIGHT_ARGS="--require-gpu")
    assert proc.returncode == 0
    assert proc.stdout.strip() == "benchmark"
    assert log.strip() == "envcheck --quick --require-gpu"


def test_entrypoint_stops_on_a_failed_preflight(fake_envcheck):
    proc, _log = fake_envcheck("entrypoint.sh", "echo", "benchmark", FAKE_ENVCHECK_RC="1")
    assert proc.returncode == 1
    assert "benchmark" not in proc.stdout
    assert "preflight failed" in proc.stderr


def test_entrypoint_skip_and_envcheck_command(fake_envcheck):
    proc, log = fake_envcheck("entrypoint.sh", "echo", "x", DETBENCH_SKIP_PREFLIGHT="1", FAKE_ENVCHECK_RC="1")
    assert proc.returncode == 0 and log == ""
    proc, log = fake_envcheck("entrypoint.sh", "envcheck", "--json")
    assert proc.returncode == 0 and log.strip() == "envcheck --json"  # run once, not twice


def test_healthcheck_requires_a_gpu_and_launches_no_kernels(fake_envcheck):
    proc, log = fake_envcheck("healthcheck.sh", FAKE_ENVCHECK_RC="1")
    assert proc.returncode == 1
    args = log.split()
    assert args[0] == "envcheck" and "--require-gpu" in args
    only = {args[i + 1] for i, a in enumerate(args) if a == "--only"}
    assert only, "the health check must select checks (it runs during the benchmark)"
    from envcheck.registry import check_ids, get_check

    assert only <= set(check_ids()), f"unknown check ids in docker/healthcheck.sh: {only - set(check_ids())}"
    assert not any(get_check(i).slow for i in only)
    assert not {"cudnn", "tv_ops", "speed", "nccl"} & only  # these launch GPU kernels


@pytest.mark.parametrize("token", ["", "short"])
def test_jupyter_refuses_an_empty_or_weak_token(fake_envcheck, token):
    proc, log = fake_envcheck("jupyter.sh", JUPYTER_TOKEN=token)
    assert proc.returncode == 2
    assert "refusing" in proc.stderr
    assert log == ""  # refused before anything else ran


def test_jupyter_generates_a_token_when_none_is_set(fake_envcheck, tmp_path):
    # tmp_path is the fixture's: put a fake `jupyter` beside the fake envcheck
    jupyter = tmp_path / "bin" / "jupyter"
    jupyter.write_text('#!/usr/bin/env bash\necho "jupyter token=${JUPYTER_TOKEN} $*"\n')
    jupyter.chmod(jupyter.stat().st_mode | stat.S_IEXEC)
    proc, _log = fake_envcheck("jupyter.sh")
    assert proc.returncode == 0, proc.stderr
    generated = re.search(r"generated JUPYTER_TOKEN=(\S+)", proc.stderr)
    assert generated and len(generated.group(1)) >= 32
    assert f"token={generated.group(1)}" in proc.stdout
    assert "lab" in proc.stdout and "token=''" not in proc.stdout
