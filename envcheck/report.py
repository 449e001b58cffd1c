"""The preflight report: verdict, exit code, JSON document (with secrets redacted) and the rich table."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from detbench.envcheck.options import Options
from detbench.envcheck.redact import (
    REDACTED as REDACTED,  # the one redaction (detbench.envcheck.redact), published from here
)
from detbench.envcheck.redact import is_secret_name as is_secret_name
from detbench.envcheck.redact import redact_setting, redact_tree
from detbench.envcheck.redact import redact_value as redact_value
from detbench.envcheck.requirements import RequirementResult
from detbench.envcheck.result import CheckResult

SCHEMA_NAME = "detbench.envcheck"
SCHEMA_VERSION = 1
# Only the variables that shape a benchmark are recorded (an allow-list: a deny-list of secret-looking names
# misses DB_PASS, GH_PAT, CI_JOB_JWT, webhook URLs, DSNs, ...). Prefixes, then whole names.
ENV_ALLOWED_PREFIXES = (
    "CUDA_", "NCCL_", "NVSHMEM_", "TORCH_", "TORCHINDUCTOR_", "TORCHDYNAMO_", "PYTORCH_", "OMP_", "MKL_", "KMP_",
    "NVIDIA_", "CUBLAS_", "CUBLASLT_", "CUDNN_", "TRITON_", "DETBENCH_",
)
ENV_ALLOWED_NAMES = frozenset({
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "YOLO_OFFLINE", "PATH", "LD_LIBRARY_PATH", "PYTHONPATH",
    "XDG_CACHE_HOME", "CONTAINER_IMAGE", "IMAGE_NAME",
})
EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def env_allowed(name: str) -> bool:
    """Whether a benchmark's record keeps this variable (see ENV_ALLOWED_PREFIXES / ENV_ALLOWED_NAMES)."""
    upper = name.upper()
    return upper in ENV_ALLOWED_NAMES or upper.startswith(ENV_ALLOWED_PREFIXES)


def redact_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The allowed environment variables (see :func:`env_allowed`), credentials inside values redacted."""
    environ = dict(os.environ if environ is None else environ)
    return {name: redact_setting(name, environ[name]) for name in sorted(environ) if env_allowed(name)}


@dataclass
class Report:
    checks: list[CheckResult]
    requirements: list[RequirementResult]
    options: Options
    fingerprint: dict[str, Any] = field(default_factory=dict)
    created_unix_s: float = field(default_factory=time.time)
    output_error: str | None = None  # the --json-out file could not be written: exit 2, whatever the verdict

    @property
    def verdict(self) -> str:
        if any(c.status == "fail" for c in self.checks) or any(not r.met for r in self.requirements):
            return "fail"
        return "warn" if any(c.status == "warn" for c in self.checks) else "pass"

    @property
    def exit_code(self) -> int:
        if self.output_error is not None:
            return EXIT_USAGE
        return EXIT_FAIL if self.verdict == "fail" else EXIT_PASS

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; every value that could carry a credential redacted (:func:`redact_tree`)."""
        document = {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_unix_s)),
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "requirements": {
                "options": self.options.requirements(),
                "results": [r.to_dict() for r in self.requirements],
            },
            "run_options": {"skip": list(self.options.skip), "only": list(self.options.only),
                            "timeout_s": self.options.timeout_s, "quick": self.options.quick,
                            "results_dir": self.options.results_dir},
            "checks": [c.to_dict() for c in self.checks],
            "fingerprint": self.fingerprint,
            "environment": redact_environment(),
        }
        if self.output_error is not None:
            document["output_error"] = self.output_error
        return dict(redact_tree(document))


STATUS_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red", "skip": "dim"}


def render_plain(report: Report, stream: Any) -> None:
    """The table without rich (a bare image): one block per check."""
    for c in report.checks:
        print(f"{c.status.upper():5} {c.id:14} {c.detail}  [{c.duration_s:.1f}s]", file=stream)
        if c.remedy:
            print(f"{'':5} {'':14} remedy: {c.remedy}", file=stream)
    for r in report.requirements:
        print(f"{'PASS' if r.met else 'FAIL':5} {r.option:14} {r.wanted}: {r.detail}", file=stream)
    print(f"verdict: {report.verdict.upper()} (exit {report.exit_code})", file=stream)


def render_table(report: Report, console: Any) -> None:
    """The table for people: status coloured, the remedy beside what went wrong."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="envcheck", show_lines=True, expand=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("measured", ratio=3)
    table.add_column("remedy", ratio=2)
    table.add_column("s", justify="right", no_wrap=True)
    for c in report.checks:
        severity = "" if c.status in ("pass", "skip") else f" ({c.severity})"
        table.add_row(c.id, f"[{STATUS_STYLE[c.status]}]{c.status.upper()}[/]{severity}",
                      c.detail, c.remedy or "", f"{c.duration_s:.1f}")
    for r in report.requirements:
        status = "pass" if r.met else "fail"
        table.add_row(f"{r.option} {r.wanted}", f"[{STATUS_STYLE[status]}]{status.upper()}[/]",
                      r.detail, "" if r.met else "this machine does not meet the job's stated needs", "")
    console.print(table)
    verdict = report.verdict
    console.print(f"verdict: [{STATUS_STYLE.get(verdict, 'bold')}]{verdict.upper()}[/] "
                  f"(exit {report.exit_code})")
