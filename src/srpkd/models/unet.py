"""The pix2pix U-Net generator, written as two loops instead of nested blocks.

``num_downs`` stride-2 levels (7 for 128 px, 8 for 256 px): ``down1``..``downN``
then ``upN``..``up1`` with skip connections. Taps: every ``downK`` and ``upK``;
``encoder`` is the configurable level ``encoder_level`` (default 3, i.e. 1/8
resolution: the 1x1 bottleneck is too coarse for pixel relations).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import SrpkdError
from .base import Generator, norm_layer, uses_bias
from .registry import register


class UnetGenerator(Generator):
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        dropout: float = 0.0,
        encoder_level: int = 3,
    ) -> None:
        super().__init__()
        if not 5 <= num_downs:
            raise SrpkdError(f"U-Net needs num_downs >= 5, got {num_downs}")
        if not 1 <= encoder_level <= num_downs:
            raise SrpkdError(f"encoder_level must be in 1..{num_downs}, got {encoder_level}")
        bias = uses_bias(norm)
        # channels after each down level: ngf, 2ngf, 4ngf, 8ngf, 8ngf, ...
        ch = [min(ngf * 2**k, ngf * 8) for k in range(num_downs)]
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for k in range(num_downs):
            cin = in_channels if k == 0 else ch[k - 1]
            layers: list[nn.Module] = [] if k == 0 else [nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d(cin, ch[k], 4, 2, 1, bias=bias))
            if 0 < k < num_downs - 1:
                layers.append(norm_layer(norm, ch[k]))
            self.downs.append(nn.Sequential(*layers))
        for k in range(num_downs):
            innermost, outermost = k == num_downs - 1, k == 0
            cin = ch[k] if innermost else 2 * ch[k]
            cout = out_channels if outermost else ch[k - 1]
            layers = [nn.ReLU(True), nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=True if outermost else bias)]
            if outermost:
                layers.append(nn.Tanh())
            else:
                layers.append(norm_layer(norm, cout))
                # pix2pix puts dropout in the 8ngf middle levels only
                if dropout and not innermost and k >= 4:
                    layers.append(nn.Dropout(dropout))
            self.ups.append(nn.Sequential(*layers))
        self.num_downs = num_downs
        self.size_multiple = 2**num_downs
        self.tap_aliases = {"encoder": f"down{encoder_level}"}
        self.tap_channels = {f"down{k + 1}": ch[k] for k in range(num_downs)}
        self.tap_channels.update(
            {f"up{k + 1}": (out_channels if k == 0 else ch[k - 1]) for k in reversed(range(num_downs))}
        )

    def _forward(self, x, keep):
        skips = []
        h = x
        for k, down in enumerate(self.downs):
            h = down(h)
            skips.append(h)
            if keep:
                keep(f"down{k + 1}", h)
        h = self.ups[-1](skips[-1])
        if keep:
            keep(f"up{self.num_downs}", h)
        for k in reversed(range(self.num_downs - 1)):
            h = self.ups[k](torch.cat([skips[k], h], 1))
            if keep:
                keep(f"up{k + 1}", h)
        return h


@register("generator", "unet_128")
def unet_128(**kw) -> UnetGenerator:
    return UnetGenerator(num_downs=7, **kw)


@register("generator", "unet_256")
def unet_256(**kw) -> UnetGenerator:
    return UnetGenerator(num_downs=8, **kw)
