"""Post-processing calibration: a stated number of candidates enters the head's NMS, measured."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import boxes as box_ops

from detbench.bench.models import get_model
from detbench.bench.models.postprocess import (
    DEFAULT_TARGET_DENSE,
    DEFAULT_TARGET_RCNN,
    PostprocessLoad,
    calibrate_postprocess,
    quantile_threshold,
)
from detbench.bench.models.registry import configure_size

SIZE = (128, 128)
CPU = torch.device("cpu")


def prepared(name: str, batch_size: int = 2, seed: int = 0):
    spec = get_model(name)
    torch.manual_seed(seed)
    model = spec.build(None)
    configure_size(model, spec, SIZE)
    inputs = spec.make_inputs(batch_size, SIZE, CPU, torch.Generator().manual_seed(seed))
    return model, spec, inputs


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("retinanet_resnet50_fpn", DEFAULT_TARGET_DENSE),
        ("ssdlite320_mobilenet_v3_large", DEFAULT_TARGET_DENSE),  # scores all tie without the BN step
        ("fasterrcnn_mobilenet_v3_large_fpn", DEFAULT_TARGET_RCNN),  # R-CNN: roi_heads, not the RPN
        ("retinanet_resnet50_fpn", 250),
    ],
)
def test_calibration_hits_its_target(name: str, target: int) -> None:
    model, spec, inputs = prepared(name)
    explicit = None if target in (DEFAULT_TARGET_DENSE, DEFAULT_TARGET_RCNN) else target
    load = calibrate_postprocess(model, spec, inputs, explicit)
    assert load.target_candidates_per_image == target
    assert load.target_reached
    assert abs(load.candidates_per_image.mean - target) <= 0.1 * target
    # Neither the all-pass nor the none-pass state it started from.
    assert 0 < load.candidates_per_image.mean < load.available_candidates_per_image.mean
    assert load.score_thresh != load.default_score_thresh
    owner = model.roi_heads if load.head == "roi_heads" else model
    assert owner.score_thresh == load.score_thresh  # left set for the timed run
    assert 0 < load.detections_per_image.max <= load.detections_per_img
    assert model.training  # as built: calibration restores the mode it found


def test_calibration_is_deterministic_and_unpatches_nms() -> None:
    real = box_ops.batched_nms
    first = calibrate_postprocess(*prepared("retinanet_resnet50_fpn", seed=3)).to_dict()
    again = calibrate_postprocess(*prepared("retinanet_resnet50_fpn", seed=3)).to_dict()
    assert first == again
    assert box_ops.batched_nms is real


def test_load_dict_states_the_policy_and_round_trips() -> None:
    load = calibrate_postprocess(*prepared("ssdlite320_mobilenet_v3_large", batch_size=1))
    data = load.to_dict()
    for key in ("policy", "target_candidates_per_image", "score_thresh", "nms_thresh", "detections_per_img",
                "candidates_per_image", "detections_per_image"):
        assert key in data
    assert data["policy"] == "score-quantile"
    assert set(data["candidates_per_image"]) == {"mean", "min", "max"}
    assert data["nms_thresh"] == 0.55 and data["detections_per_img"] == 300  # torchvision's SSDlite defaults
    assert data["batchnorm_layers_recalibrated"] > 0
    assert PostprocessLoad.from_dict(data) == load


def test_classifier_is_not_applicable() -> None:
    spec = get_model("resnet50")
    assert calibrate_postprocess(spec.build(None), spec, torch.rand(1, 3, 64, 64)) is None


def test_bad_target_is_rejected() -> None:
    with pytest.raises(ValueError, match="target_candidates_per_image must be >= 1"):
        calibrate_postprocess(*prepared("retinanet_resnet50_fpn", batch_size=1), 0)


def testquantile_threshold_counts_and_ties() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    assert int((scores > quantile_threshold(scores, 2)).sum()) == 2
    assert int((scores > quantile_threshold(scores, 9)).sum()) == 5  # fewer than asked: all pass
    tied = torch.tensor([0.9] + [0.5] * 10 + [0.1])
    # 3 is closer to 1 (above the tie) than to 11 (through it).
    assert int((tied > quantile_threshold(tied, 3)).sum()) == 1
    assert int((tied > quantile_threshold(tied, 8)).sum()) == 11


def test_batchnorm_recalibration_sets_batch_statistics_and_restores_the_model() -> None:
    from torch import nn

    from detbench.bench.models.batchnorm import recalibrate_batchnorm

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.3))
    inputs = torch.rand(1, 3, 8, 8) * 5 + 2
    assert recalibrate_batchnorm(model, inputs) == 1
    features = model[0](inputs).detach()
    bn = model[1]
    assert torch.allclose(bn.running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.3 and model.training
    assert recalibrate_batchnorm(nn.Linear(2, 2), torch.rand(1, 2)) == 0


def test_a_worker_for_a_model_module_model_does_not_import_torchvision_or_scipy():
    """A worker measuring only models of ``--model-modules`` (the tests' tiny models, a user's own) builds and
    calibrates them without importing torchvision: 1.5 of its ~3 CPU-s at start on this VM (2026-12-05). No worker
    imports scipy until it compares a deployed model's outputs (0.7 CPU-s over torch's 2.2 here, 2026-12-06)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    code = ("import sys, torch\n"
            "import detbench.bench.runtime.worker, detbench.bench.runtime.rank, tests.bench.tiny_models\n"
            "import detbench.bench.runtime.engine, detbench.bench.runtime.device  # what a worker's main imports\n"
            "from detbench.bench.models import get_model\n"
            "from detbench.bench.models.postprocess import calibrate_postprocess, thresholds_owner\n"
            "spec = get_model('tiny_convnet')\n"
            "model = spec.build(None)\n"
            "inputs = spec.make_inputs(2, (64, 64), torch.device('cpu'), torch.Generator().manual_seed(0))\n"
            "assert thresholds_owner(model) is None and calibrate_postprocess(model, spec, inputs) is None\n"
            "sys.exit(' and '.join(sorted({'torchvision', 'scipy'} & set(sys.modules))) or None)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
