"""torch/torchvision pairing: a mismatched pair fails with the exact pip command; the fingerprint's torchvision
version."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from detbench.envcheck import tables
from detbench.envcheck.checks import torch_pairing

ROOT = Path(__file__).resolve().parents[2]


def test_real_pair_passes(make_ctx):
    outcome = torch_pairing.check_torch_pairing(make_ctx())
    assert outcome.status == "pass", outcome.detail
    assert outcome.measured["torchvision_expected"] == tables.expected_torchvision(torch.__version__)


def test_missing_operator_fails_with_reinstall(make_ctx, monkeypatch):
    def broken(*args):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(torch_pairing, "run_nms_op", broken)
    outcome = torch_pairing.check_torch_pairing(make_ctx())
    assert outcome.status == "fail"
    assert "operator torchvision::nms does not exist" in outcome.detail
    expected = tables.expected_torchvision(torch.__version__)
    assert f'"torchvision=={expected}.*"' in outcome.remedy
    assert outcome.remedy.startswith("reinstall") or "pip install" in outcome.remedy


def test_real_op_failure_is_caught(make_ctx, monkeypatch):
    """The check calls torch.ops.torchvision.nms itself: breaking the op breaks the check."""

    class NoOps:
        def __getattr__(self, name):
            raise RuntimeError(f"operator torchvision::{name} does not exist")

    monkeypatch.setattr(torch.ops, "torchvision", NoOps())
    outcome = torch_pairing.check_torch_pairing(make_ctx())
    assert outcome.status == "fail"
    assert "torchvision::nms does not exist" in outcome.detail


def test_version_mismatch_names_install_command(make_ctx, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision, "__version__", "0.15.2+cu118")  # torch 2.0's: pairs with no supported torch
    outcome = torch_pairing.check_torch_pairing(make_ctx())
    expected = tables.expected_torchvision(torch.__version__)
    assert outcome.status == "fail"
    assert f"needs torchvision {expected}.x" in outcome.detail
    assert outcome.remedy.startswith(f'pip install "torchvision=={expected}.*"')


def test_install_command_uses_the_wheel_index():
    assert torch_pairing.install_command("2.5.1+cu121", "0.20") == (
        'pip install "torchvision==0.20.*" --index-url https://download.pytorch.org/whl/cu121'
    )
    assert torch_pairing.install_command("2.5.1", "0.20") == 'pip install "torchvision==0.20.*"'


def _version_in_a_fresh_process(extra_path: str | None = None) -> list[str]:
    """``_torchvision_version()`` in a fresh interpreter (this process's imports untouched), whether torchvision was
    imported by it, then the version torchvision itself reports (where it imports)."""
    code = ("import sys; from detbench.envcheck.fingerprint import _torchvision_version as read; "
            "print(read()); print('torchvision' in sys.modules)\n"
            "try:\n    import torchvision; print(torchvision.__version__)\nexcept ImportError as exc: print(exc)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [extra_path, str(ROOT)]))}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()[-3:]


def test_the_fingerprint_reads_torchvisions_version_without_importing_it():
    """The run record's torchvision version is the module's own (local tag included), read from its version.py in
    a process that has not imported it: `pytest bench/` of other models is spared the import (on every torch line:
    each torchvision's version.py)."""
    read, imported, actual = _version_in_a_fresh_process()
    assert read == actual and imported == "False"


def test_a_torchvision_that_does_not_import_still_has_its_version_read(tmp_path):
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('a broken build')\n")
    (package / "version.py").write_text("__version__ = '9.9.9+cu999'\nfrom torchvision.extension import nothing\n")
    read, imported, actual = _version_in_a_fresh_process(str(tmp_path))
    assert read == "9.9.9+cu999" and imported == "False" and "a broken build" in actual
