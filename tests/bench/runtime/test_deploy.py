"""Deployment runtimes on a tiny torchvision RetinaNet (tests/bench/runtime/tiny_detector.py): each runtime exports,
loads back and agrees with eager FP32; a planted wrong output is caught by parity; a model a runtime cannot take is
a ``not-supported`` result through the cell session; AOTInductor on a torch older than 2.6 says why."""

from __future__ import annotations

import pytest
import torch

from detbench.bench.core.options import RoundsPolicy, RunOptions, WarmupPolicy
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.models import get_model
from detbench.bench.runtime.deploy import NotSupportedError, deploy, get_runtime, parity
from detbench.bench.runtime.deploy.aot_inductor import AotInductor
from detbench.bench.runtime.failures import classify_failure
from detbench.bench.runtime.session import CellSession
from tests.bench.runtime import tiny_detector
from tests.extras import require_extra

pytestmark = pytest.mark.xdist_group("deploy")  # one worker builds the shared detector and its artifacts
CPU = torch.device("cpu")
MODULES = ("tests.bench.runtime.tiny_detector",)


@pytest.fixture(scope="module")
def detector():
    spec = get_model("tiny_retinanet")
    torch.manual_seed(0)
    model = spec.build(None).eval()
    inputs = spec.make_inputs(1, tiny_detector.SIZE, CPU, torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(inputs)
    assert len(reference[0]["boxes"]) == 30  # detections_per_img: every image keeps detections to compare
    return model, inputs, reference


@pytest.fixture(scope="module")
def scripted(detector):
    model, inputs, _ = detector
    return deploy(model, inputs, "torchscript", CPU)  # with its cold start in a fresh process


def test_torchscript_exports_loads_in_a_fresh_process_and_agrees_with_eager(scripted):
    info = scripted.info
    assert info.exported == "whole model (torch.jit.script)" and info.artifact_bytes > 10_000
    assert info.export_s > 0 and info.load_s > 0 and info.cold_start_s > 0 and info.cold_import_s > 0
    assert info.serving_peak_rss_bytes > 50 * 2**20  # a process holding torch
    assert info.parity.verdict == "agree", info.parity.failures
    assert info.parity.matched == info.parity.reference_detections == 30 and info.parity.unmatched == 0


# AOTInductor compiles the network's C++ with the host's compiler: 26 CPU-s and 87 s of a worker in the main run's
# timeline (2026-12-06), hence `slow` (CI runs it with 2.14.1's line and on every PyPI line)
@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("aot-inductor", marks=pytest.mark.slow)])
def test_a_runtime_exports_loads_and_agrees_with_eager(detector, runtime):
    if runtime == "onnxruntime":
        require_extra("onnxruntime")
    elif AotInductor().unavailable():
        pytest.skip(AotInductor().unavailable())
    model, inputs, _ = detector
    deployed = deploy(model, inputs, runtime, CPU, cold_start=False)
    info = deployed.info
    assert info.parity.verdict == "agree", info.parity.failures
    assert info.parity.matched == 30 and info.parity.max_box_error_px < 0.5 and info.artifact_bytes > 10_000
    if runtime == "onnxruntime":
        assert info.provider == "CPUExecutionProvider" and "opset" in info.exported
    else:  # RetinaNet's post-processing is data-dependent: the network is exported, the rest runs eagerly
        assert info.exported.startswith("split: backbone + head exported") and "GuardOnDataDependent" in str(info.notes)


def _shifted(outputs, pixels: float):
    out = [dict(o) for o in outputs]
    out[0]["boxes"] = out[0]["boxes"] + torch.tensor([pixels, 0.0, pixels, 0.0])
    return out


def _dropped(outputs, index: int):
    out = [dict(o) for o in outputs]
    keep = [i for i in range(len(out[0]["boxes"])) if i != index % len(out[0]["boxes"])]
    out[0] = {k: v[keep] for k, v in out[0].items()}
    return out


def test_parity_catches_a_planted_wrong_output_of_a_runtime(detector, scripted):
    _, inputs, reference = detector
    with torch.no_grad():
        outputs = scripted.runner(inputs)
    assert parity.compare(reference, outputs).verdict == "agree"
    shifted = parity.compare(reference, _shifted(outputs, 3.0))  # every box of the image 3 px to the right
    assert shifted.verdict == "disagree" and any("px" in f for f in shifted.failures), shifted
    top = parity.compare(reference, _dropped(outputs, 0))  # the best-scored detection lost
    assert top.verdict == "disagree" and top.unmatched == 1 and top.detections == 29
    # the lowest-scored one, at the cut: a last-digit difference decides it, so it is excused, not a disagreement
    cut = parity.compare(reference, _dropped(outputs, -1))
    assert cut.verdict == "agree" and cut.unmatched_excused == 1
    masks = [dict(o, masks=torch.ones(len(o["boxes"]), 1, 8, 8)) for o in reference]
    holed = [dict(o, masks=torch.ones(len(o["boxes"]), 1, 8, 8)) for o in outputs]
    holed[0]["masks"][0, 0, :4] = 0  # half of one mask gone
    assert parity.compare(masks, holed).min_mask_iou == 0.5 and parity.compare(masks, holed).verdict == "disagree"


def _session(cell: Cell) -> CellSession:
    options = RunOptions(model_modules=MODULES, count_flops=False,
                         warmup=WarmupPolicy(window=2, tolerance=0.5, min_iterations=2, max_iterations=4, max_s=1.0),
                         rounds=RoundsPolicy(rounds=1, block_s=0.02, min_block_iterations=2))
    return CellSession(cell, options, CPU)


def test_a_model_the_runtime_cannot_take_is_a_not_supported_result():
    cell = Cell("tiny_retinanet_varargs", runtime="torchscript", image_size=tiny_detector.SIZE)
    session = _session(cell)
    with pytest.raises(NotSupportedError) as raised:
        session.set_up()
    result = classify_failure(cell, raised.value, CPU)
    assert result.status == "not-supported" and result.deploy.runtime == "torchscript"
    assert result.reason.startswith("NotSupportedError: Compiled functions can't take variable number of arguments")
    assert "\n" not in result.reason and CellResult.from_dict(result.to_dict()).status == "not-supported"


def test_a_deployed_cell_is_timed_and_its_result_carries_deploy_and_parity():
    cell = Cell("tiny_retinanet", runtime="torchscript", image_size=tiny_detector.SIZE)
    session = _session(cell)
    session.set_up()
    session.time_block(2)
    result = session.result()
    session.close()
    assert result.status == "ok" and result.cell.id == "tiny_retinanet-infer-torchscript-fp32-bs1-gpu1-64x64"
    assert result.deploy.parity.verdict == "agree" and result.deploy.cold_start_s > 0
    assert result.config["deployed"] == "whole model (torch.jit.script)" and result.detections_per_image["mean"] > 0
    back = CellResult.from_dict(result.to_dict())
    assert back.deploy == result.deploy and back.cell == cell


def test_aot_inductor_on_a_torch_without_aoti_packages_says_which_torch_it_needs(monkeypatch):
    import torch._inductor

    monkeypatch.delattr(torch._inductor, "aoti_compile_and_package", raising=False)
    reason = get_runtime("aot-inductor").unavailable()
    assert reason is not None and "2.6 or later" in reason and torch.__version__ in reason
    with pytest.raises(NotSupportedError, match=r"2\.6 or later"):  # refused before the model is touched
        deploy(None, None, "aot-inductor", CPU)  # type: ignore[arg-type]
