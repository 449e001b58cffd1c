"""Visibility and requirements: a CPU machine passes unless the job says it needs a GPU."""


from detbench.envcheck.checks import visibility
from detbench.envcheck.requirements import evaluate
from detbench.envcheck.result import CheckResult
from tests.envcheck.conftest import NO_GPU, one_gpu
from tests.fakes.nvml import FakeGpu


def test_cpu_machine_skips(no_nvml, make_ctx):
    outcome = visibility.check_visibility(make_ctx())
    assert outcome.status == "skip" and "no NVIDIA GPU" in outcome.detail


def test_cpu_machine_with_require_gpu_fails(no_nvml, make_ctx, monkeypatch):
    monkeypatch.setattr(visibility.fingerprint, "in_container", lambda: True)
    ctx = make_ctx(require_gpu=True)
    outcome = visibility.check_visibility(ctx)
    assert outcome.status == "fail" and "docker run --gpus all" in outcome.remedy
    (req,) = evaluate(ctx, [])
    assert req.option == "--require-gpu" and not req.met


def test_cuda_visible_devices_hiding_gpus(fake_nvml, make_ctx, monkeypatch):
    fake_nvml([FakeGpu()])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    outcome = visibility.check_visibility(make_ctx())
    assert outcome.status == "fail" and "hides them" in outcome.detail


def test_cpu_only_torch_with_a_gpu(fake_nvml, make_ctx):
    fake_nvml([FakeGpu()])
    outcome = visibility.check_visibility(make_ctx({**NO_GPU, "torch_cuda": None}))
    assert outcome.status == "fail" and "CPU-only build" in outcome.detail
    assert "download.pytorch.org" in outcome.remedy


def test_mig_warns(fake_nvml, make_ctx):
    fake_nvml([FakeGpu(mig_mode=1)])
    outcome = visibility.check_visibility(make_ctx(one_gpu()))
    assert outcome.status == "warn" and "MIG" in outcome.detail


def test_too_few_gpus_fails(fake_nvml, make_ctx):
    fake_nvml([FakeGpu()])
    ctx = make_ctx(one_gpu(), gpus=2)
    assert visibility.check_visibility(ctx).status == "fail"
    (req,) = evaluate(ctx, [])
    assert req.option == "--gpus" and req.measured == 1 and not req.met


def test_probe_timeout_fails(no_nvml, make_ctx):
    facts = {**NO_GPU, "error": "CUDA initialisation did not finish within 5 s", "timed_out": True}
    outcome = visibility.check_visibility(make_ctx(facts))
    assert outcome.status == "fail" and "hung" in outcome.remedy


def test_requirements_met_on_a_good_gpu(make_ctx):
    ctx = make_ctx(one_gpu((9, 0)), require_gpu=True, min_compute_capability="8.0", amp="bf16", require_nccl=True)
    results = [
        CheckResult("cudnn", "t", "critical", "pass", "ok", {"amp_verified": ["fp16", "bf16"]}),
        CheckResult("nccl", "t", "critical", "pass", "ok"),
    ]
    assert all(r.met for r in evaluate(ctx, results))


def test_requirements_unmet(make_ctx):
    ctx = make_ctx(one_gpu((7, 5), bf16=False), min_compute_capability="8.0", amp="bf16", require_nccl=True)
    results = [CheckResult("nccl", "t", "critical", "fail", "hung", remedy="x"),
               CheckResult("cudnn", "t", "critical", "pass", "ok", {"amp_verified": ["fp16"]})]
    by_option = {r.option: r for r in evaluate(ctx, results)}
    assert not by_option["--min-compute-capability"].met and by_option["--min-compute-capability"].measured == "7.5"
    assert not by_option["--require-nccl"].met
    assert not by_option["--amp"].met


def test_no_requirements_no_rows(make_ctx):
    assert evaluate(make_ctx(), []) == []
