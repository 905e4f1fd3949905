"""Parameter and MAC counts, the way the GAN-compression papers count them.

MACs come from ``torchprofile`` (the counter GAN Compression reports with):
it counts convolutions and matrix products only, and a transposed convolution
by its output size. ResNet-9 ngf 64 at 256 px gives 56.8 G MACs.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torchprofile import profile_macs


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int | tuple[int, int] = 256, in_channels: int = 3) -> int:
    h, w = (size, size) if isinstance(size, int) else size
    # the traced input lives where the weights do: a student on a GPU (the end of a CUDA run) or in bf16
    weight = next(model.parameters(), None)
    x = torch.zeros(1, in_channels, h, w) if weight is None else weight.new_zeros(1, in_channels, h, w)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return int(profile_macs(model, x))
    finally:
        model.train(was_training)
