"""The GPU checks' arithmetic, exercised on the CPU: conv reference, torchvision ops, speed judgement."""

import pytest

from detbench.envcheck.checks import cudnn, speed, tv_ops


def test_conv_reference_against_itself_is_exact():
    # twice in a row: the reference tensors must stay leaves (a bug once made the 2nd call crash)
    for _ in range(2):
        errors = cudnn.conv_errors("cpu", "fp32")
        assert set(errors) == {"output", "grad_input", "grad_weight"}
        assert max(errors.values()) < 1e-6


def test_tv_ops_cpu_against_cpu_agree():
    assert tv_ops.compare_ops("cpu") == []


@pytest.mark.parametrize("measured, peak, status", [(800, 1000, "pass"), (400, 1000, "warn"), (200, 1000, "fail"),
                                                    (1, None, "pass")])
def test_speed_judgement(measured, peak, status):
    assert speed.judge(measured, peak)[0] == status


def test_gpu_checks_skip_without_a_gpu(make_ctx):
    from detbench.envcheck.registry import get_check
    from detbench.envcheck.runner import run_check

    for check_id in ("arch", "cudnn", "tv_ops", "nccl", "speed"):
        result, finished = run_check(get_check(check_id), make_ctx())
        assert finished and result.status == "skip"
        assert "no CUDA GPU" in result.detail
