"""The model registry and the torchvision builders, on the CPU at small sizes."""

from __future__ import annotations

import pytest
import torch

from detbench.bench.models import UnknownModelError, get_model, list_models
from detbench.bench.models.registry import configure_size

DETECTORS = [
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
    "keypointrcnn_resnet50_fpn",
]
CLASSIFIERS = ["resnet50", "efficientnet_b3"]
NATIVE = {
    "ssd300_vgg16": (300, 300),
    "ssdlite320_mobilenet_v3_large": (320, 320),
    "resnet50": (224, 224),
    "efficientnet_b3": (300, 300),
}
CPU = torch.device("cpu")


def small_size(name: str) -> tuple[int, int]:
    # Non-square on purpose: checks that H and W are not swapped. SSD300 cannot go below 268.
    return (276, 268) if name == "ssd300_vgg16" else (128, 160)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_lists_every_model() -> None:
    assert set(DETECTORS + CLASSIFIERS) <= set(list_models())


def test_unknown_model_names_the_valid_choices() -> None:
    with pytest.raises(UnknownModelError, match=r"valid: .*fasterrcnn_resnet50_fpn.*resnet50"):
        get_model("fasterrcnn_resnet51")


@pytest.mark.parametrize("name", DETECTORS + CLASSIFIERS)
def test_spec_fields(name: str) -> None:
    spec = get_model(name)
    assert spec.name == name
    assert spec.native_size == NATIVE.get(name, (800, 1333))
    assert spec.task == ("classification" if name in CLASSIFIERS else "detection")
    assert (spec.count_detections is not None) == spec.is_detector
    assert spec.notes["init"].startswith("random init")


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_builds_processes_the_stated_size_and_counts_detections(name: str) -> None:
    spec = get_model(name)
    torch.manual_seed(0)
    model = spec.build(None)
    # build() pins the native size; configure_size moves it.
    assert model.transform.min_size == (min(spec.native_size),)
    size = configure_size(model, spec, small_size(name))
    model.eval()
    images = spec.make_inputs(2, size, CPU, gen())
    batch, _ = model.transform(images)
    assert batch.image_sizes == [size, size]
    if hasattr(model, "rpn"):  # the R-CNN family: ROI heads cost grows with the proposals they get (random weights keep
        # all 1000 an image): Mask R-CNN v2's forward took 9.7 CPU-s with 1000, 1.8 with 100 (2026-12-06, this VM)
        model.rpn._post_nms_top_n = {**model.rpn._post_nms_top_n, "testing": 100}
    with torch.no_grad():
        outputs = model(images)
    counts = spec.count_detections(outputs)
    assert len(counts) == 2 and all(isinstance(c, int) and c >= 0 for c in counts)


def test_ssd300_rejects_a_size_its_feature_maps_cannot_take() -> None:
    spec = get_model("ssd300_vgg16")
    model = spec.build(None)
    with pytest.raises(ValueError, match="ssd300_vgg16 needs image sides >= 268"):
        configure_size(model, spec, (160, 160))


def test_keypoint_rcnn_training_scale_is_pinned() -> None:
    # torchvision's default picks one of six min sizes at random per training image.
    spec = get_model("keypointrcnn_resnet50_fpn")
    model = spec.build(None)
    configure_size(model, spec, (128, 160))
    model.train()
    batch, _ = model.transform(spec.make_inputs(1, (128, 160), CPU, gen()),
                               spec.make_targets(1, (128, 160), CPU, gen()))
    assert batch.image_sizes == [(128, 160)]


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_fpn", "ssdlite320_mobilenet_v3_large",
                                  "retinanet_resnet50_fpn"])
def test_training_loss_is_a_finite_scalar_with_gradients(name: str) -> None:
    spec = get_model(name)
    torch.manual_seed(0)
    model = spec.build(None)
    size = configure_size(model, spec, (128, 128))
    model.train()
    g = gen()
    loss = spec.training_loss(model, spec.make_inputs(2, size, CPU, g), spec.make_targets(2, size, CPU, g))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_detection_inputs_are_seeded_noise_in_unit_range() -> None:
    spec = get_model("retinanet_resnet50_fpn")
    first = spec.make_inputs(2, (64, 96), CPU, gen(1))
    again = spec.make_inputs(2, (64, 96), CPU, gen(1))
    other = spec.make_inputs(2, (64, 96), CPU, gen(2))
    assert len(first) == 2 and first[0].shape == (3, 64, 96) and first[0].dtype == torch.float32
    assert all(float(t.min()) >= 0 and float(t.max()) <= 1 and float(t.std()) > 0.1 for t in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("name", ["maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn", "ssd300_vgg16"])
def test_detection_targets_are_valid(name: str) -> None:
    spec = get_model(name)
    height, width = 96, 128
    num_classes = spec.notes["num_classes"]
    for target in spec.make_targets(3, (height, width), CPU, gen()):
        boxes, labels = target["boxes"], target["labels"]
        n = boxes.shape[0]
        assert 4 <= n <= 8 and labels.shape == (n,)
        assert bool((boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all())
        assert bool((boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())
        assert bool((labels >= 1).all() and (labels < num_classes).all())
        if name.startswith("maskrcnn"):
            assert target["masks"].shape == (n, height, width) and target["masks"].dtype == torch.uint8
            assert bool((target["masks"].flatten(1).sum(1) > 0).all())
        else:
            assert "masks" not in target
        if name.startswith("keypoint"):
            kp = target["keypoints"]
            assert kp.shape == (n, 17, 3) and bool((kp[..., 2] == 2).all())
            assert bool((kp[..., 0] >= boxes[:, None, 0]).all() and (kp[..., 0] <= boxes[:, None, 2]).all())


def test_classifier_forward_and_loss() -> None:
    spec = get_model("resnet50")
    torch.manual_seed(0)
    model = spec.build(None)
    configure_size(model, spec, (64, 64))
    g = gen()
    inputs = spec.make_inputs(2, (64, 64), CPU, g)
    targets = spec.make_targets(2, (64, 64), CPU, g)
    assert inputs.shape == (2, 3, 64, 64) and targets.shape == (2,) and int(targets.max()) < 1000
    model.eval()
    with torch.no_grad():
        assert model(inputs).shape == (2, 1000)
    model.train()
    loss = spec.training_loss(model, inputs, targets)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_local_weights_round_trip(tmp_path) -> None:
    spec = get_model("ssdlite320_mobilenet_v3_large")
    torch.manual_seed(1)
    saved = spec.build(None)
    path = tmp_path / "ssdlite.pt"
    torch.save(saved.state_dict(), path)
    torch.manual_seed(2)
    loaded = spec.build(str(path))
    for (key, a), b in zip(saved.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), key
    assert not torch.equal(next(spec.build(None).parameters()), next(saved.parameters()))


def test_missing_weights_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        get_model("resnet50").build(str(tmp_path / "nope.pt"))


def test_mismatched_weights_are_a_clear_error(tmp_path) -> None:
    path = tmp_path / "wrong.pt"
    torch.save({"not.a.layer": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not match the model"):
        get_model("ssdlite320_mobilenet_v3_large").build(str(path))
