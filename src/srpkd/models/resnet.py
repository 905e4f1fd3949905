"""ResNet generators of CycleGAN / pix2pix, and the depthwise-separable mobile student.

stem (reflect pad, 7x7 conv) -> down1, down2 (3x3 stride 2) -> n residual
blocks -> up1, up2 (3x3 transposed, stride 2) -> head (7x7 conv, tanh).
Taps: ``stem``, ``down1``, ``down2`` (alias ``encoder``), ``block1``..``blockN``
(``blockN`` alias ``body``), ``up1``, ``up2``.

``skip_resnet_9blocks`` is this project's student with a global skip: its head
sees the input image beside the decoder's features (``input_skip``), so the
image's own detail and absolute colour reach the output without passing through
the instance-normalised, 4x down-sampled body. For tasks that keep the image's
layout (photo filters); the paper's pairs use the plain ResNet.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Generator, ReflectionPad2d, norm_layer, uses_bias
from .registry import register


class SeparableConv2d(nn.Sequential):
    """Depthwise 3x3 conv, norm, pointwise 1x1 conv (the GAN Compression mobile block)."""

    def __init__(self, cin: int, cout: int, norm: str, bias: bool) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, groups=cin, bias=bias),
            norm_layer(norm, cin),
            nn.Conv2d(cin, cout, 1, bias=bias),
        )


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, dropout: float, separable: bool = False) -> None:
        super().__init__()
        bias = uses_bias(norm)

        def conv():
            return SeparableConv2d(dim, dim, norm, bias) if separable else nn.Conv2d(dim, dim, 3, bias=bias)

        layers = [ReflectionPad2d(1), conv(), norm_layer(norm, dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [ReflectionPad2d(1), conv(), norm_layer(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(Generator):
    size_multiple = 4

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: float = 0.0,
        separable: bool = False,
        input_skip: bool = False,
    ) -> None:
        super().__init__()
        bias = uses_bias(norm)
        self.stem = nn.Sequential(
            ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True)
        )
        self.down1 = nn.Sequential(
            nn.Conv2d(ngf, ngf * 2, 3, 2, 1, bias=bias), norm_layer(norm, ngf * 2), nn.ReLU(True)
        )
        self.down2 = nn.Sequential(
            nn.Conv2d(ngf * 2, ngf * 4, 3, 2, 1, bias=bias), norm_layer(norm, ngf * 4), nn.ReLU(True)
        )
        self.blocks = nn.ModuleList(ResnetBlock(ngf * 4, norm, dropout, separable) for _ in range(n_blocks))
        self.up1 = nn.Sequential(
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 3, 2, 1, output_padding=1, bias=bias),
            norm_layer(norm, ngf * 2),
            nn.ReLU(True),
        )
        self.up2 = nn.Sequential(
            nn.ConvTranspose2d(ngf * 2, ngf, 3, 2, 1, output_padding=1, bias=bias), norm_layer(norm, ngf), nn.ReLU(True)
        )
        self.input_skip = input_skip
        head_in = ngf + (in_channels if input_skip else 0)
        self.head = nn.Sequential(ReflectionPad2d(3), nn.Conv2d(head_in, out_channels, 7), nn.Tanh())
        self.tap_aliases = {"encoder": "down2", "body": f"block{n_blocks}"}  # body: the last residual block
        self.tap_channels = {"stem": ngf, "down1": ngf * 2, "down2": ngf * 4}
        self.tap_channels.update({f"block{i + 1}": ngf * 4 for i in range(n_blocks)})
        self.tap_channels.update({"up1": ngf * 2, "up2": ngf})

    def _forward(self, x, keep):
        h = x
        for name in ("stem", "down1", "down2"):
            h = getattr(self, name)(h)
            if keep:
                keep(name, h)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if keep:
                keep(f"block{i + 1}", h)
        for name in ("up1", "up2"):
            h = getattr(self, name)(h)
            if keep:
                keep(name, h)
        return self.head(torch.cat([h, x], 1) if self.input_skip else h)


@register("generator", "resnet_9blocks")
def resnet_9blocks(**kw) -> ResnetGenerator:
    return ResnetGenerator(n_blocks=9, **kw)


@register("generator", "resnet_6blocks")
def resnet_6blocks(**kw) -> ResnetGenerator:
    return ResnetGenerator(n_blocks=6, **kw)


@register("generator", "skip_resnet_9blocks")
def skip_resnet_9blocks(**kw) -> ResnetGenerator:
    return ResnetGenerator(n_blocks=9, input_skip=True, **kw)


@register("generator", "mobile_resnet_9blocks")
def mobile_resnet_9blocks(**kw) -> ResnetGenerator:
    return ResnetGenerator(n_blocks=9, separable=True, **kw)
