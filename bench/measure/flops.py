"""FLOPs per image of one inference forward or one training step, counted by torch's FlopCounterMode.

Called once per cell outside the timed region, on the device the inputs are on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

CONVENTION = "torch.utils.flop_counter.FlopCounterMode; a multiply-add counts 2 FLOPs"
NOT_COUNTED = (
    "FlopCounterMode counts matmul/convolution/attention ops (aten mm, addmm, bmm, baddbmm, convolution and "
    "their backward, sdpa) only; NMS, roi_align, interpolation, normalisation, activations, softmax, "
    "elementwise and data-movement ops count 0. Convolution backward uses a corrected formula: torch's "
    "counts grouped/depthwise weight gradients as dense (groups-fold too high)"
)
MODES = ("infer", "train")
TOP_OPS = 8


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward (infer) or forward+backward (train), per image, with the largest ops."""

    flops_per_image: float
    total_flops: int
    batch_size: int
    mode: str
    backward_counted: bool
    convention: str = CONVENTION
    not_counted: str = NOT_COUNTED
    top_ops: dict[str, float] = field(default_factory=dict)  # op name -> FLOPs per image, largest first

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: Any,
    output_mask: list[bool],
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """aten.convolution_backward: each requested gradient (input, weight) costs one forward convolution.

    Replaces torch's formula, whose weight-gradient term ignores groups (depthwise convs: C-fold too high).
    """
    from torch.utils.flop_counter import conv_flop_count  # noqa: PLC0415

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def batch_size_of(inputs: Any) -> int:
    """Images in a batch: a list of [3, H, W] tensors or a [B, 3, H, W] tensor."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, (list, tuple)):
        return len(inputs)
    raise TypeError(f"cannot tell the batch size of {type(inputs).__name__}")


def count_flops(
    model: nn.Module,
    inputs: Any,
    mode: str,
    targets: Any = None,
    loss_fn: Callable[[nn.Module, Any, Any], torch.Tensor] | None = None,
) -> FlopCount:
    """Count FLOPs of one forward under no_grad (``infer``) or one loss forward + backward (``train``).

    ``train`` needs ``loss_fn(model, inputs, targets)`` (a ModelSpec's ``training_loss``). The model's
    train/eval mode is set for the count and restored; gradients it creates are dropped again.
    """
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415 (torch >= 2.1)

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "train" and loss_fn is None:
        raise ValueError("mode 'train' needs loss_fn(model, inputs, targets)")
    batch_size = batch_size_of(inputs)
    was_training = model.training
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}
    )
    try:
        if mode == "infer":
            model.eval()
            # FlopCounterMode fails on some models (DETR's query embeddings: "Expected gradient function to
            # be set") while parameters require grad, even under no_grad; the count does not need them.
            requiring = [p for p in model.parameters() if p.requires_grad]
            try:
                for param in requiring:
                    param.requires_grad_(False)
                with torch.no_grad(), counter:
                    model(inputs)
            finally:
                for param in requiring:
                    param.requires_grad_(True)
        else:
            model.train()
            without_grad = [p for p in model.parameters() if p.grad is None]
            assert loss_fn is not None  # checked above: mode is "train" here
            with counter:
                loss_fn(model, inputs, targets).backward()
            for param in without_grad:
                param.grad = None
    finally:
        model.train(was_training)
    total = int(counter.get_total_flops())
    per_op = counter.get_flop_counts().get("Global", {})
    top = sorted(((str(op), int(n)) for op, n in per_op.items()), key=lambda item: -item[1])[:TOP_OPS]
    return FlopCount(
        flops_per_image=total / batch_size,
        total_flops=total,
        batch_size=batch_size,
        mode=mode,
        backward_counted=mode == "train",
        top_ops={op: n / batch_size for op, n in top},
    )
