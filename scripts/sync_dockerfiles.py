#!/usr/bin/env python3
"""Write the per-image Dockerfiles, Dockerfile.<image>, from the template and the images' build arguments.

One source of truth: the template ``Dockerfile`` and one file of build arguments per image,
``docker/images/<image>.env`` (KEY=VALUE lines: DETBENCH_CUDA, BASE_IMAGE, TORCH_VERSION, TORCHVISION_VERSION).
``Dockerfile.<image>`` is generated from the two, so ``docker build -f Dockerfile.cu121 -t detbench:cu121 .``
builds that image with no ``--build-arg``. A generated file is the template with

- its parser directives (``# syntax=...``) first, as they must be;
- its opening comment (the template's own usage) replaced by a header: generated, from which files, by which
  command, not to be edited; the image's description (the env file's opening comment) and its build commands;
- every ``ARG KEY=default`` of a key the env file sets given the env file's value (``ARG KEY`` lines without a
  default, which inherit the global one, stay as they are);
- every other line unchanged.

    python scripts/sync_dockerfiles.py           # (re)write every Dockerfile.<image>; remove generated orphans
    python scripts/sync_dockerfiles.py --check   # exit 1 naming each stale, missing or orphaned file

``--check`` prints the first differing line of a stale file. tests/test_dockerfiles.py runs the same check.
Exit status: 0 in sync (or written), 1 out of sync (``--check``) or an orphan that is not generated, 2 when the
template or an env file cannot be used.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "Dockerfile"
IMAGES_DIR = Path("docker") / "images"
COMMAND = "python scripts/sync_dockerfiles.py"
# The first line of every generated file's header: how an orphan is recognised as generated (safe to remove).
MARKER = "# GENERATED FILE - DO NOT EDIT BY HAND."
# KEY=VALUE from the first column; values plain, so the workflow (sed), compose (--env-file) and docker agree.
ENV_LINE = re.compile(r"([A-Z][A-Z0-9_]*)=(.*)")
PLAIN_VALUE = re.compile(r"[^\s'\"$\\]+")
DIRECTIVE = re.compile(r"#\s*(syntax|escape|check)\s*=", re.IGNORECASE)
ARG_LINE = re.compile(r"(?P<lead>\s*ARG\s+)(?P<rest>.*)", re.IGNORECASE)
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class SyncError(Exception):
    """The template or an env file cannot be turned into a generated Dockerfile."""


@dataclass(frozen=True)
class Image:
    tag: str  # cu118: the env file's stem, the generated file's suffix
    env_path: Path  # relative to the root
    args: dict[str, str]  # KEY -> VALUE, in the file's order
    description: list[str]  # the env file's opening comment lines, '#' kept


def read_image(root: Path, path: Path) -> Image:
    """An image's env file: KEY=VALUE lines, comments and blank lines skipped, anything else refused."""
    rel = path.relative_to(root)
    if not TAG.fullmatch(path.stem):
        raise SyncError(f"{rel}: {path.stem!r} cannot name a Dockerfile.<image>")
    args: dict[str, str] = {}
    description: list[str] = []
    opening = True
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if opening and line.startswith("#") and line.strip() != "#":
            description.append(line.rstrip())
            continue
        opening = False
        if not line.strip() or line.startswith("#"):
            continue
        match = ENV_LINE.fullmatch(line)
        if not match:
            raise SyncError(f"{rel}:{number}: not KEY=VALUE from the first column: {line!r}")
        key, value = match.groups()
        if not PLAIN_VALUE.fullmatch(value):
            raise SyncError(f"{rel}:{number}: {key}: a plain value, please (no quotes, blanks, $ or \\)")
        if key in args:
            raise SyncError(f"{rel}:{number}: {key} twice")
        args[key] = value
    if not args:
        raise SyncError(f"{rel}: no build arguments")
    return Image(path.stem, rel, args, description)


def images(root: Path) -> list[Image]:
    return [read_image(root, path) for path in sorted((root / IMAGES_DIR).glob("*.env"))]


def generated_name(tag: str) -> str:
    return f"{TEMPLATE}.{tag}"


def header(image: Image) -> list[str]:
    name = generated_name(image.tag)
    env = image.env_path.as_posix()
    base = image.args.get("BASE_IMAGE", "<its base>")
    builds = [
        (f"docker build -f {name} -t detbench:{image.tag} .", "no --build-arg needed"),
        (f"docker build -f {name} --target dev -t detbench:{image.tag}-dev .", "+ JupyterLab (token required)"),
    ]
    width = max(len(command) for command, _ in builds) + 2
    lines = [
        MARKER,
        f"# Generated from `{TEMPLATE}` (the template) and `{env}` (this image's build arguments, set",
        f"# below as the ARG defaults) by `{COMMAND}`. Edit those two files and rerun that",
        f"# command; `{COMMAND} --check` and tests/test_dockerfiles.py fail while this file differs.",
        "#",
    ]
    if image.description:
        lines += [*image.description, "#"]
    lines += [f"#   {command:<{width}}# {note}" for command, note in builds]
    lines += [
        f'#   docker run --rm --gpus all --shm-size=8g -v "$PWD/results:/results" detbench:{image.tag}',
        "#",
        "# The build fails when the base's torch, torchvision or CUDA is not the ARG defaults' (docker/check-base.py).",
        "# Other build arguments (DETBENCH_UID, VCS_REF, BUILD_DATE) and the images' host drivers: docs/containers.md.",
        "# The base is pinned by tag; for a reproducible build pin its digest too:",
        f"#   --build-arg BASE_IMAGE={base}@sha256:<digest>",
    ]
    return lines


def render(template: str, image: Image) -> str:
    """The generated Dockerfile of one image (see the module's docstring)."""
    lines = template.splitlines()
    directives: list[str] = []
    while lines and DIRECTIVE.match(lines[0]):
        directives.append(lines.pop(0))
    while lines and lines[0].lstrip().startswith("#"):
        lines.pop(0)  # the template's opening comment: the header replaces it
    defaults_set = dict.fromkeys(image.args, 0)
    body = []
    for line in lines:
        match = ARG_LINE.fullmatch(line)
        if match:
            words = match["rest"].split()
            keys = [w.partition("=")[0] for w in words]
            ours = [k for k, w in zip(keys, words) if k in image.args and "=" in w]
            if ours:
                if len(words) != 1:
                    raise SyncError(f"{TEMPLATE}: {line.strip()!r}: declare {ours[0]} alone to have its default set")
                key = ours[0]
                line = f"{match['lead']}{key}={image.args[key]}"
                defaults_set[key] += 1
        body.append(line)
    missing = [key for key, count in defaults_set.items() if not count]
    if missing:
        raise SyncError(f"{image.env_path.as_posix()} sets {', '.join(missing)}, which {TEMPLATE} declares with no "
                        f"default (ARG KEY=...)")
    return "\n".join([*directives, *header(image), *body]) + "\n"


def expected(root: Path) -> dict[str, str]:
    """{generated file name: its text} for every image."""
    path = root / TEMPLATE
    if not path.is_file():
        raise SyncError(f"no template {TEMPLATE} in {root}")
    template = path.read_text(encoding="utf-8")
    return {generated_name(image.tag): render(template, image) for image in images(root)}


def present(root: Path) -> list[str]:
    """The per-image Dockerfiles in the root: Dockerfile.<name> (a Dockerfile.<name>.dockerignore is not one)."""
    return sorted(p.name for p in root.glob(f"{TEMPLATE}.*") if TAG.fullmatch(p.name[len(TEMPLATE) + 1:]))


def first_difference(want: str, have: str) -> tuple[int, str, str]:
    """(line number, expected line, found line) of the first line that differs; '<end of file>' past the end.

    Texts whose lines all agree differ in their line endings or final newline: the line after the last."""
    want_lines, have_lines = want.splitlines(), have.splitlines()
    for number in range(1, max(len(want_lines), len(have_lines)) + 1):
        a = want_lines[number - 1] if number <= len(want_lines) else "<end of file>"
        b = have_lines[number - 1] if number <= len(have_lines) else "<end of file>"
        if a != b:
            return number, a, b
    return len(want_lines) + 1, "(the same lines, ending in \\n)", "(other line endings)"


def problems(root: Path) -> list[str]:
    """What is out of sync, one message per file; empty when every generated file is what the script writes."""
    want = expected(root)
    found = []
    for name, text in want.items():
        path = root / name
        if not path.is_file():
            found.append(f"{name} is missing (the Dockerfile of {IMAGES_DIR.as_posix()}/{name.split('.', 1)[1]}.env)")
            continue
        have = path.read_bytes().decode("utf-8", errors="replace")  # no newline translation
        if have != text:
            number, a, b = first_difference(text, have)
            found.append(f"{name} is stale or edited by hand: line {number} differs\n"
                         f"  expected: {a}\n  found:    {b}")
    for name in present(root):
        if name not in want:
            tag = name.split(".", 1)[1]
            found.append(f"{name} has no {IMAGES_DIR.as_posix()}/{tag}.env (an image's Dockerfile is generated "
                         f"from its build arguments: add the file, or remove {name})")
    return found


def sync(root: Path) -> int:
    want = expected(root)
    status = 0
    for name, text in want.items():
        path = root / name
        if path.is_file() and path.read_bytes() == text.encode("utf-8"):
            print(f"{name}: up to date")
            continue
        path.write_bytes(text.encode("utf-8"))  # \n line endings on every platform
        print(f"{name}: written")
    for name in present(root):
        if name in want:
            continue
        path = root / name
        if MARKER in path.read_text(encoding="utf-8", errors="replace").splitlines()[:10]:
            path.unlink()
            print(f"{name}: removed (generated, and {IMAGES_DIR.as_posix()}/{name.split('.', 1)[1]}.env is gone)")
        else:
            print(f"sync_dockerfiles: {name} is no generated file and has no "
                  f"{IMAGES_DIR.as_posix()}/{name.split('.', 1)[1]}.env: add that file or remove {name}",
                  file=sys.stderr)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a generated file is stale, missing or has no env file")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: %(default)s)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if not args.check:
            return sync(root)
        found = problems(root)
    except SyncError as error:
        print(f"sync_dockerfiles: {error}", file=sys.stderr)
        return 2
    for message in found:
        print(f"sync_dockerfiles: {message}", file=sys.stderr)
    if found:
        print(f"sync_dockerfiles: run `{COMMAND}` (edit {TEMPLATE} and {IMAGES_DIR.as_posix()}/<image>.env, "
              f"never {TEMPLATE}.<image>)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
