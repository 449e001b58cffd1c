"""The container images agree with envcheck's tables, with noxfile's torch lines and with the package they install.

Every image is the one ``Dockerfile`` (the template) built with the build arguments of one file under
``docker/images/`` (``cu118.env``: ``DETBENCH_CUDA``, ``BASE_IMAGE``, ``TORCH_VERSION``, ``TORCHVISION_VERSION``);
the image workflow and docker compose read those files. ``Dockerfile.<image>`` (what users build, ``docker build -f
Dockerfile.cu118 .``) is generated from the two by ``scripts/sync_dockerfiles.py``: the template with the image's
values as ARG defaults. No Docker engine is needed: the Dockerfiles and the files are parsed, and the entrypoint
scripts run with a fake `envcheck`.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import importlib.util
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

from detbench.envcheck import tables

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
SYNC_SCRIPT = ROOT / "scripts" / "sync_dockerfiles.py"
IMAGE_ARG_FILES = sorted((ROOT / "docker" / "images").glob("*.env"))
IMAGE_ARG_KEYS = {"DETBENCH_CUDA", "BASE_IMAGE", "TORCH_VERSION", "TORCHVISION_VERSION"}
# A line of an image's build arguments, as the workflow's sed reads it: KEY=VALUE from the first column.
IMAGE_ARG_LINE = re.compile(r"([A-Z][A-Z0-9_]*)=(.*)")
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


def declared_args(instructions: list[Instruction], stage: int) -> dict[str, str | None]:
    """ARGs visible in a stage, global ones (before the first FROM) and the stage's own: name -> default."""
    values: dict[str, str | None] = {}
    for ins in instructions:
        if ins.keyword == "ARG" and ins.stage in (-1, stage):
            name, eq, default = ins.args.partition("=")
            values[name.strip()] = default.strip().strip('"') if eq else values.get(name.strip())
    return values


def arg_defaults(instructions: list[Instruction], stage: int) -> dict[str, str]:
    """ARG defaults visible in a stage."""
    return {k: v for k, v in declared_args(instructions, stage).items() if v is not None}


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


def read_image_args(path: Path) -> dict[str, str]:
    """An image's build arguments: KEY=VALUE lines, comments and blank lines skipped; anything else fails.

    Values hold no quotes, blanks or ``$``: the workflow (sed), docker compose (--env-file) and ``docker build
    --build-arg`` then all read the same value.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = IMAGE_ARG_LINE.fullmatch(line)
        assert match, f"{path.name}:{number}: not KEY=VALUE from the first column: {line!r}"
        key, value = match.groups()
        assert value and not re.search(r"[\s'\"$\\]", value), f"{path.name}:{number}: {key}: plain value, please"
        assert key not in values, f"{path.name}:{number}: {key} twice"
        values[key] = value
    return values


IMAGES = {path.stem: read_image_args(path) for path in IMAGE_ARG_FILES}
SYNC_COMMAND = "python scripts/sync_dockerfiles.py"


def load_sync():
    """scripts/sync_dockerfiles.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("sync_dockerfiles", SYNC_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(params=sorted(IMAGES), ids=str)
def image(request) -> tuple[str, dict[str, str]]:
    """(tag, build arguments) of each image, e.g. ("cu118", {"BASE_IMAGE": ..., ...})."""
    return request.param, IMAGES[request.param]


def test_the_images_exist():
    assert {"cu118", "cu121"} <= set(IMAGES)
    assert any(re.fullmatch(r"cu(12[89]|1[3-9]\d)", tag) for tag in IMAGES), "no CUDA 12.8+ image"
    assert DOCKERFILE.is_file()
    # Dockerfile.<image> exists for every image and for nothing else: each is generated from docker/images/<image>.env
    per_image = {p.name for p in ROOT.glob("Dockerfile.*") if not p.name.endswith(".dockerignore")}
    generated = {f"Dockerfile.{tag}" for tag in IMAGES}
    assert not generated - per_image, f"no generated Dockerfile for {sorted(generated - per_image)}: {SYNC_COMMAND}"
    assert not per_image - generated, (
        f"{sorted(per_image - generated)}: no docker/images/<image>.env to generate it from (a hand-written "
        f"per-image Dockerfile drifts from the template): add the env file, or remove it"
    )


def test_parser_reads_continuations_and_stages():
    text = 'ARG B=img:1\nFROM ${B} AS one\nARG X\nARG Y=2\nRUN a \\\n  # note\n  && b\nFROM one AS two\nUSER 1000\n'
    instructions = parse_dockerfile(text)
    assert [i.keyword for i in instructions] == ["ARG", "FROM", "ARG", "ARG", "RUN", "FROM", "USER"]
    assert instructions[4].args == "a && b"
    assert external_bases(instructions) == ["img:1"]
    assert effective(instructions, 1, "USER").args == "1000"
    assert declared_args(instructions, 0) == {"B": "img:1", "X": None, "Y": "2"}


def test_image_args_files_are_read_strictly(tmp_path):
    good = tmp_path / "cu999.env"
    good.write_text("# a comment\n\nDETBENCH_CUDA=cu999\nBASE_IMAGE=pytorch/pytorch:9.9-cuda99.9-cudnn9-runtime\n")
    base = "pytorch/pytorch:9.9-cuda99.9-cudnn9-runtime"
    assert read_image_args(good) == {"DETBENCH_CUDA": "cu999", "BASE_IMAGE": base}
    for bad in ('BASE_IMAGE="quoted"\n', " DETBENCH_CUDA=cu999\n", "export A=1\n", "A=1\nA=2\n", "A=\n"):
        good.write_text(bad)
        with pytest.raises(AssertionError):
            read_image_args(good)


def test_image_args_are_the_dockerfiles_build_args(image, instructions):
    tag, args = image
    assert set(args) == IMAGE_ARG_KEYS, f"{tag}.env: build arguments {sorted(args)}"
    declared = declared_args(instructions, -1) | declared_args(instructions, 0)
    assert set(args) <= set(declared), f"{tag}.env sets arguments the Dockerfile does not declare"
    assert args["DETBENCH_CUDA"] == tag, f"{tag}.env names the image {args['DETBENCH_CUDA']}"


def test_base_cuda_is_in_the_driver_tables_and_names_the_image(image):
    tag, args = image
    cuda = pytorch_tag(args["BASE_IMAGE"])["cuda"]
    assert "cu" + cuda.replace(".", "") == tag, f"{tag}: base {args['BASE_IMAGE']} is CUDA {cuda}"
    assert cuda in tables.CUDA_MIN_DRIVER, f"{tag}: CUDA {cuda} missing from CUDA_MIN_DRIVER"
    major = int(cuda.split(".")[0])
    assert major in tables.CUDA_MINOR_COMPAT_DRIVER, f"{tag}: CUDA {major} missing from CUDA_MINOR_COMPAT_DRIVER"
    full, compat = tables.min_driver_for_cuda(cuda)
    assert full and compat
    assert tables.parse_version(compat) <= tables.parse_version(full)


def test_base_torch_is_supported_paired_and_the_one_stated(image):
    tag, args = image
    torch_version = pytorch_tag(args["BASE_IMAGE"])["torch"]
    assert args["TORCH_VERSION"] == torch_version, f"{tag}: base has torch {torch_version}"
    assert tables.parse_version(torch_version) >= tables.parse_version(tables.MIN_TORCH), (
        f"{tag}: torch {torch_version} is older than detbench's minimum {tables.MIN_TORCH}"
    )
    paired = tables.expected_torchvision(torch_version)
    assert paired, f"{tag}: no torchvision pairing for {torch_version}"
    major_minor = ".".join(torch_version.split(".")[:2])
    assert major_minor in tables.TORCH_TORCHVISION, f"{tag}: torch {major_minor} not in the pairing table"
    assert args["TORCHVISION_VERSION"].startswith(paired + "."), f"{tag}: torchvision is not {paired}.x"


def test_dockerfile_defaults_build_one_of_the_images(instructions):
    """`docker build .` gives a named image: its defaults are one image's arguments, and the name follows them."""
    (base,) = external_bases(instructions)
    defaults = arg_defaults(instructions, 0)
    tag = defaults["DETBENCH_CUDA"]
    assert tag in IMAGES, f"the Dockerfile's default DETBENCH_CUDA={tag} has no docker/images/{tag}.env"
    assert base == IMAGES[tag]["BASE_IMAGE"], f"default base {base} is not {tag}.env's"
    assert defaults["IMAGE_NAME"] == "detbench:${DETBENCH_CUDA}"
    env = " ".join(i.args for i in instructions if i.keyword == "ENV")
    assert "DETBENCH_IMAGE=${IMAGE_NAME}" in env, "results must record the image (DETBENCH_IMAGE)"


def test_the_build_checks_the_base_against_the_arguments_before_installing(instructions):
    runs = [i.args for i in instructions if i.keyword == "RUN" and i.stage == 0]
    (check,) = [r for r in runs if "docker/check-base.py" in r]
    assert '--cuda-tag "${DETBENCH_CUDA}"' in check and '--torch "${TORCH_VERSION}"' in check
    assert '--torchvision "${TORCHVISION_VERSION}"' in check
    at, install = runs.index(check), next(i for i, r in enumerate(runs) if "pip install" in r)
    assert at < install or (at == install and check.index("check-base.py") < check.index("pip install"))


def nox_torch_lines() -> dict[str, tuple[str, str]]:
    """noxfile.py's compatibility sessions: {what ships the line: (torch, torchvision)}, read without nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    (table,) = [
        node.value for node in tree.body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["TORCH_LINE_TABLE"]
    ]
    return {shipped_by: (torch, torchvision) for torch, torchvision, shipped_by in ast.literal_eval(table)}


def test_every_image_torch_line_has_a_compat_session(image):
    """CI has no Docker engine: the nox session of the image's torch line is what tests that torch."""
    tag, args = image
    lines = nox_torch_lines()
    name = f"detbench:{tag}"
    assert name in lines, f"{name}: no compatibility session in noxfile.py for torch {args['TORCH_VERSION']}"
    assert lines[name] == (args["TORCH_VERSION"], args["TORCHVISION_VERSION"]), (
        f"{name} ships torch/torchvision {args['TORCH_VERSION']}/{args['TORCHVISION_VERSION']}, "
        f"its session tests {lines[name]}"
    )


def test_the_constraints_torch_line_has_a_compat_session_and_nothing_else_does():
    pins = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    lines = nox_torch_lines()
    assert lines.get("constraints.txt") == (pins["torch"], pins["torchvision"])
    shipped = {f"detbench:{tag}" for tag in IMAGES} | {"constraints.txt"}
    assert set(lines) == shipped, "a session for a line nothing ships, or a shipped line without one"


def compose_default(value: str, variable: str) -> str:
    match = re.fullmatch(r"\$\{" + variable + r":-([^}]*)\}", value)
    assert match, f"docker-compose.yml: {value!r} is not ${{{variable}:-default}} (--env-file must set it)"
    return match.group(1)


def test_compose_builds_the_one_dockerfile_with_an_images_arguments():
    """`docker compose --env-file docker/images/<tag>.env` builds that image; with no file, the default one."""
    yaml = pytest.importorskip("yaml")
    build = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-detbench"]["build"]
    assert build["dockerfile"] == "Dockerfile"
    args = build["args"]
    assert set(args) >= IMAGE_ARG_KEYS
    defaults = {key: compose_default(args[key], key) for key in IMAGE_ARG_KEYS}
    tag = defaults["DETBENCH_CUDA"]
    assert defaults == IMAGES[tag], f"compose's defaults are not docker/images/{tag}.env"
    assert tag == arg_defaults(parse_dockerfile(DOCKERFILE.read_text()), 0)["DETBENCH_CUDA"]


def test_the_docs_build_each_image_from_its_generated_dockerfile_without_build_arguments():
    """docs/containers.md and README.md build each image from its Dockerfile.<image>, with no --build-arg."""
    docs = (ROOT / "docs" / "containers.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for tag in IMAGES:
        command = f"docker build -f Dockerfile.{tag} -t detbench:{tag} ."
        assert command in docs, f"docs/containers.md: no `{command}`"
        rows = [ln for ln in readme.splitlines() if ln.startswith(f"| `detbench:{tag}`")]
        assert len(rows) == 1 and f"`Dockerfile.{tag}`" in rows[0], f"README.md: one table row per image, naming " \
            f"its Dockerfile: {rows}"
    assert SYNC_COMMAND in docs and f"{SYNC_COMMAND} --check" in docs


# ---- Dockerfile.<image>: generated from the template and the image's build arguments ---------------------------


@pytest.fixture(scope="module")
def sync():
    return load_sync()


def test_the_generated_dockerfiles_are_in_sync(sync):
    """Fails when a Dockerfile.<image> is stale or edited by hand, missing, or has no docker/images/<image>.env."""
    found = sync.problems(ROOT)
    assert not found, "\n".join(found) + f"\nrun `{SYNC_COMMAND}` (edit Dockerfile and docker/images/, never " \
        "Dockerfile.<image>)"


def test_a_generated_dockerfile_is_the_template_with_the_images_defaults(image, instructions):
    """Read as docker reads it, Dockerfile.<image> builds what the template builds with the image's arguments."""
    tag, args = image
    path = ROOT / f"Dockerfile.{tag}"
    text = path.read_text()
    assert text.splitlines()[0] == DOCKERFILE.read_text().splitlines()[0] == "# syntax=docker/dockerfile:1"
    head = "\n".join(text.splitlines()[:6])
    assert "GENERATED FILE - DO NOT EDIT BY HAND" in head and SYNC_COMMAND in head
    assert "`Dockerfile`" in head and f"docker/images/{tag}.env" in head
    generated = parse_dockerfile(text)
    # the same instructions, but for the default of each of the image's arguments
    with_defaults = [
        Instruction("ARG", f"{ins.args.partition('=')[0]}={args[ins.args.partition('=')[0]]}", ins.stage)
        if ins.keyword == "ARG" and "=" in ins.args and ins.args.partition("=")[0] in args else ins
        for ins in instructions
    ]
    assert generated == with_defaults, f"{path.name} is not the template with {tag}.env's ARG defaults"
    defaults = arg_defaults(generated, -1) | arg_defaults(generated, 0)
    assert {key: defaults.get(key) for key in args} == args, f"{path.name}: `docker build -f {path.name} .` " \
        "would not build the image the env file describes"
    assert external_bases(generated) == [args["BASE_IMAGE"]]
    assert expand(arg_defaults(generated, 0)["IMAGE_NAME"], defaults) == f"detbench:{tag}"


def sync_run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SYNC_SCRIPT), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def sync_tree(tmp_path) -> Path:
    """A copy of the template, the images' build arguments and the generated Dockerfiles."""
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "images").mkdir()
    for path in [DOCKERFILE, *IMAGE_ARG_FILES, *(ROOT / f"Dockerfile.{tag}" for tag in IMAGES)]:
        (tmp_path / path.relative_to(ROOT)).write_text(path.read_text())
    return tmp_path


def test_sync_check_names_the_stale_file_and_its_first_differing_line(sync_tree):
    assert sync_run(sync_tree, "--check").returncode == 0
    edited = sync_tree / "Dockerfile.cu121"
    lines = edited.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith("ARG TORCH_VERSION="))
    lines[number - 1] = "ARG TORCH_VERSION=9.9.9"
    edited.write_text("\n".join(lines) + "\n")
    result = sync_run(sync_tree, "--check")
    assert result.returncode == 1
    assert f"Dockerfile.cu121 is stale or edited by hand: line {number} differs" in result.stderr
    assert "expected: ARG TORCH_VERSION=2.5.1" in result.stderr and "found:    ARG TORCH_VERSION=9.9.9" in result.stderr
    assert "Dockerfile.cu118" not in result.stderr.replace("Dockerfile.<image>", "")  # only the stale one named
    assert edited.read_text().count("9.9.9") == 1  # --check writes nothing

    # a template edit makes every generated file stale until the script runs
    template = sync_tree / "Dockerfile"
    template.write_text(template.read_text().replace("EXPOSE 8888", "EXPOSE 8889"))
    result = sync_run(sync_tree, "--check")
    assert result.returncode == 1 and all(f"Dockerfile.{tag} is stale" in result.stderr for tag in IMAGES)
    written = sync_run(sync_tree)
    assert written.returncode == 0, written.stderr
    assert sync_run(sync_tree, "--check").returncode == 0
    assert "EXPOSE 8889" in edited.read_text() and "ARG TORCH_VERSION=2.5.1" in edited.read_text()


def test_sync_check_fails_on_an_image_without_its_dockerfile_and_the_reverse(sync_tree):
    (sync_tree / "Dockerfile.cu118").unlink()
    result = sync_run(sync_tree, "--check")
    assert result.returncode == 1 and "Dockerfile.cu118 is missing" in result.stderr
    assert sync_run(sync_tree).returncode == 0 and (sync_tree / "Dockerfile.cu118").is_file()

    # an image whose env file went: its generated Dockerfile is an orphan (removed by the script); a hand-written
    # Dockerfile.<name> is never removed, only refused
    (sync_tree / "docker" / "images" / "cu118.env").unlink()
    (sync_tree / "Dockerfile.mine").write_text("FROM scratch\n")
    result = sync_run(sync_tree, "--check")
    assert result.returncode == 1
    assert "Dockerfile.cu118 has no docker/images/cu118.env" in result.stderr
    assert "Dockerfile.mine has no docker/images/mine.env" in result.stderr
    result = sync_run(sync_tree)
    assert result.returncode == 1 and "Dockerfile.mine is no generated file" in result.stderr
    assert not (sync_tree / "Dockerfile.cu118").exists() and (sync_tree / "Dockerfile.mine").exists()
    (sync_tree / "Dockerfile.mine").unlink()
    assert sync_run(sync_tree, "--check").returncode == 0


def test_sync_refuses_what_it_cannot_generate(sync_tree):
    env = sync_tree / "docker" / "images" / "cu121.env"
    env.write_text(env.read_text() + "NOT_AN_ARG=1\n")
    result = sync_run(sync_tree, "--check")
    assert result.returncode == 2 and "NOT_AN_ARG" in result.stderr and "no default" in result.stderr
    env.write_text('BASE_IMAGE="quoted"\n')
    result = sync_run(sync_tree)
    assert result.returncode == 2 and "cu121.env:1" in result.stderr


def test_every_stage_runs_as_non_root(instructions):
    for stage in range(final_stage(instructions) + 1):
        user = effective(instructions, stage, "USER")
        assert user is not None, f"stage {stage} has no USER (runs as root)"
        value = expand(user.args, arg_defaults(instructions, stage) | arg_defaults(instructions, 0))
        name = value.split(":")[0]
        assert name not in ("root", "0") and not name.startswith("$"), f"stage {stage} USER {value}"


def test_every_stage_runs_envcheck_and_has_a_volume(instructions):
    for stage in range(final_stage(instructions) + 1):
        checks = [effective(instructions, stage, k) for k in ("HEALTHCHECK", "ENTRYPOINT")]
        assert any(c is not None and runs_envcheck(c) for c in checks), f"stage {stage} never runs envcheck"
        volume = effective(instructions, stage, "VOLUME")
        assert volume is not None and "/results" in volume.args, f"stage {stage} has no /results VOLUME"


def test_default_target_is_the_benchmark_image(instructions):
    _image, alias = stages(instructions)[final_stage(instructions)]
    assert alias == "runtime", "`docker build` without --target must give the benchmark image"
    entry = effective(instructions, final_stage(instructions), "ENTRYPOINT")
    assert "entrypoint.sh" in entry.args


def test_copied_sources_exist_and_are_not_dockerignored(instructions):
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
            assert (ROOT / source).exists(), f"COPY {source} does not exist"
            assert source.rstrip("/") not in ignored, f"COPY {source} is excluded by .dockerignore"


# ---- docker/check-base.py: the build's check of the base against the image's arguments ---------------------------


def load_check_base():
    spec = importlib.util.spec_from_file_location("check_base", ROOT / "docker" / "check-base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cuda_tag, want_torch, want_tv, found", [
    ("cu118", "2.7.1", "0.22.1", []),
    ("", "", "", []),  # nothing stated, nothing checked
    ("dev", "", "", []),  # not a cuNNN tag: not checked
    ("cu128", "2.7.1", "0.22.1", ["DETBENCH_CUDA=cu128 but the base's torch is built for CUDA 11.8"]),
    ("cu118", "2.11.0", "", ["TORCH_VERSION=2.11.0 but the base has torch 2.7.1+cu118"]),
    ("cu118", "", "0.26.0", ["TORCHVISION_VERSION=0.26.0 but the base has torchvision 0.22.1+cu118"]),
])
def test_check_base_compares_the_base_with_the_arguments(cuda_tag, want_torch, want_tv, found):
    check = load_check_base()
    assert check.problems(cuda_tag, want_torch, want_tv, "2.7.1+cu118", "0.22.1+cu118", "11.8") == found
    assert check.problems("cu118", "", "", "2.7.1+cpu", "0.22.1+cpu", None) == [
        "DETBENCH_CUDA=cu118 but the base's torch is built for no CUDA"]


def test_check_base_runs_against_the_installed_torch():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "docker" / "check-base.py"), *args],
                              capture_output=True, text=True, timeout=120)

    here = metadata.version("torch").split("+")[0], metadata.version("torchvision").split("+")[0]
    ok = run("--torch", here[0], "--torchvision", here[1])
    assert ok.returncode == 0, ok.stderr
    wrong = run("--torch", "1.0.0")
    assert wrong.returncode == 1 and "TORCH_VERSION=1.0.0" in wrong.stderr and "docker/images/" in wrong.stderr


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
    from detbench.envcheck.registry import check_ids, get_check

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
