"""FLOP counting: known reference values, scaling with batch and area, the backward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detbench.bench.measure.flops import CONVENTION, count_flops
from detbench.bench.models import get_model

CPU = torch.device("cpu")
RESNET50_224_FLOPS = 8.18e9  # 4.09 GMACs (torchvision's table: 4.09 GFLOPS counted as MACs)


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return get_model("resnet50").build(None)


def test_resnet50_matches_the_known_value(resnet50: nn.Module) -> None:
    count = count_flops(resnet50, torch.rand(1, 3, 224, 224), "infer")
    assert count.flops_per_image == pytest.approx(RESNET50_224_FLOPS, rel=0.02)
    assert count.convention == CONVENTION and "multiply-add counts 2" in count.convention
    assert not count.backward_counted
    assert next(iter(count.top_ops)) == "aten.convolution"
    assert "NMS" in count.not_counted


def test_per_image_flops_do_not_depend_on_batch_and_scale_with_area(resnet50: nn.Module) -> None:
    one = count_flops(resnet50, torch.rand(1, 3, 112, 112), "infer")
    two = count_flops(resnet50, torch.rand(2, 3, 112, 112), "infer")
    assert two.total_flops == 2 * one.total_flops
    assert two.flops_per_image == one.flops_per_image
    assert one.flops_per_image == pytest.approx(RESNET50_224_FLOPS / 4, rel=0.1)  # odd-sized maps round up


def test_detector_flops_scale_with_area() -> None:
    spec = get_model("retinanet_resnet50_fpn")
    torch.manual_seed(0)
    model = spec.build(None)
    counts = []
    for size in ((128, 128), (256, 256)):
        spec.set_image_size(model, size)
        counts.append(count_flops(model, spec.make_inputs(1, size, CPU, torch.Generator().manual_seed(0)), "infer"))
    assert counts[1].flops_per_image == pytest.approx(4 * counts[0].flops_per_image, rel=0.1)


def test_training_counts_backward_and_restores_the_model(resnet50: nn.Module) -> None:
    spec = get_model("resnet50")
    inputs, targets = torch.rand(2, 3, 64, 64), torch.tensor([1, 2])
    resnet50.eval()
    infer = count_flops(resnet50, inputs, "infer")
    train = count_flops(resnet50, inputs, "train", targets=targets, loss_fn=spec.training_loss)
    assert train.backward_counted
    assert train.flops_per_image == pytest.approx(3 * infer.flops_per_image, rel=0.05)
    assert not resnet50.training
    assert all(p.grad is None for p in resnet50.parameters())


def test_depthwise_backward_is_not_overcounted() -> None:
    # torch's own formula counts the weight gradient of a grouped conv as dense (64-fold here).
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False))
    inputs = torch.rand(2, 64, 32, 32)
    infer = count_flops(model, inputs, "infer")
    train = count_flops(model, inputs, "train", loss_fn=lambda m, x, _t: m(x).sum())
    assert infer.flops_per_image == 2 * 64 * 9 * 32 * 32
    # The first layer's input needs no gradient: forward + weight gradient only.
    assert train.flops_per_image == 2 * infer.flops_per_image


def test_bad_arguments_are_clear(resnet50: nn.Module) -> None:
    with pytest.raises(ValueError, match="mode must be one of infer, train"):
        count_flops(resnet50, torch.rand(1, 3, 32, 32), "eval")
    with pytest.raises(ValueError, match="needs loss_fn"):
        count_flops(resnet50, torch.rand(1, 3, 32, 32), "train")
