"""Give a random-initialised model's BatchNorm layers the statistics of real inputs.

Fresh BatchNorm layers hold running_mean=0, running_var=1; in eval mode they then do not normalise, and in
deep random-init nets (MobileNetV3: x1e-3 per stage) activations vanish until every score ties. One
no-grad forward with the BatchNorm layers in train mode sets their running statistics to the batch's, as
a trained network's would be: activations (and fp16/bf16 numerics) then have realistic scale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def recalibrate_batchnorm(model: nn.Module, inputs: Any) -> int:
    """Reset every BatchNorm layer's running statistics to those of ``inputs`` (one no-grad forward).

    The rest of the model stays in eval mode (detectors need no targets). Returns the number of layers set.
    A batch of one image is doubled, since BatchNorm needs more than one value per channel on 1x1 maps.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not layers:
        return 0
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        inputs = list(inputs) * 2
    elif isinstance(inputs, torch.Tensor) and inputs.shape[0] == 1:
        inputs = torch.cat([inputs, inputs])
    was_training = model.training
    momenta = [m.momentum for m in layers]
    model.eval()
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
            layer.train()
        with torch.no_grad():
            model(inputs)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return len(layers)
