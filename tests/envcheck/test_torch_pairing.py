"""torch/torchvision pairing: a mismatched pair fails with the exact pip command."""

import torch

from detbench.envcheck import tables
from detbench.envcheck.checks import torch_pairing


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
