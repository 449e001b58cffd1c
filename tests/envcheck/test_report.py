"""The report: verdict and exit code rules, the plain renderer, and the committed H100 example."""

import io
import json
from pathlib import Path

from detbench.envcheck.options import Options
from detbench.envcheck.registry import check_ids
from detbench.envcheck.report import SCHEMA_NAME, SCHEMA_VERSION, Report, render_plain
from detbench.envcheck.requirements import RequirementResult
from detbench.envcheck.result import CheckResult

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "envcheck-h100.json"


def result(status, remedy="fix"):
    return CheckResult("host", "host", "warning", status, "detail",
                       remedy=None if status in ("pass", "skip") else remedy)


def test_verdicts_and_exit_codes():
    assert Report([result("pass"), result("skip")], [], Options()).exit_code == 0
    warn = Report([result("pass"), result("warn")], [], Options())
    assert (warn.verdict, warn.exit_code) == ("warn", 0)
    assert Report([result("fail")], [], Options()).exit_code == 1
    unmet = RequirementResult("--require-gpu", True, 0, False, "no GPU")
    assert Report([result("pass")], [unmet], Options(require_gpu=True)).exit_code == 1


def test_plain_table_shows_remedies():
    out = io.StringIO()
    render_plain(Report([result("fail", remedy="docker run --shm-size=8g")], [], Options()), out)
    text = out.getvalue()
    assert "FAIL" in text and "remedy: docker run --shm-size=8g" in text and "verdict: FAIL (exit 1)" in text


def test_h100_example_matches_the_schema():
    report = json.loads(EXAMPLE.read_text())
    assert report["schema"] == SCHEMA_NAME and report["schema_version"] == SCHEMA_VERSION
    checks = [CheckResult.from_dict(c) for c in report["checks"]]
    assert [c.id for c in checks] == check_ids()
    assert report["verdict"] == "pass" and all(c.status == "pass" for c in checks)
    speed = next(c for c in checks if c.id == "speed").measured["devices"]["cuda:0"]
    assert speed["matmul_bf16_tflops"] > 0.5 * speed["matmul_bf16_peak_tflops"]
