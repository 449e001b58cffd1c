"""The README's quick start is what CI runs: keep the two in step."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "envcheck" in main_job and "pytest bench/" in main_job and "detbench-report" in main_job
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()


def test_what_the_readme_command_leaves_out_runs_in_ci():
    """The command's first pytest leaves out `timing` (its second runs them) and `slow`, which the constraints'
    line's nox session runs, in CI's main venv: every test runs in CI."""
    _, tests = quick_start_commands()
    assert re.findall(r'python -m pytest [^&]*?-m ("[^"]+"|\S+)', tests) == ['"not timing and not slow"', "timing"]
    noxfile = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    selections = {target.id: node.value for node in noxfile.body if isinstance(node, ast.Assign)
                  for target in node.targets if isinstance(target, ast.Name)}
    assert ast.literal_eval(selections["SLOW_TEST_SELECTION"]) == ("-m", "slow")
    assert "compat_stream torch-2.14.1 --no-venv --session torch-2.14.1" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_is_a_page_and_the_docs_index_reaches_every_page():
    """README ≤ 10 KB (lab results and notes live in docs/); docs/index.md links every page of docs/."""
    assert len((ROOT / "README.md").read_bytes()) <= 10_000
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"docs/index.md does not link {sorted(pages - linked)}"
