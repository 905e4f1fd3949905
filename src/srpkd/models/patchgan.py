"""The PatchGAN discriminator of pix2pix (70x70 receptive field with n_layers=3)."""
from __future__ import annotations

import torch.nn as nn

from .base import norm_layer, uses_bias
from .registry import register


class PatchGAN(nn.Sequential):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        bias = uses_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        super().__init__(*layers)


@register("discriminator", "patchgan")
def patchgan(**kw) -> PatchGAN:
    return PatchGAN(**kw)
