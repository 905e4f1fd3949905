"""Shift-tolerant LPIPS (ST-LPIPS, AlexNet), rebuilt in plain PyTorch.

ST-LPIPS (Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric",
ECCV 2022) is LPIPS (Zhang et al., CVPR 2018) computed on an anti-aliased
AlexNet trunk that is tolerant to small pixel shifts. The weights (trunk and
linear heads, trained jointly) ship with the ``stlpips-pytorch`` package as
``weights/vST0.0/alex_shift_tolerant.pth``; srpkd reads only that file
(``torch.load(weights_only=True)``), never the package, whose imports need
torchvision.

Architecture (the package's ``alexnet(variant="shift_tolerant")``):

* input in [-1, 1], then LPIPS' scaling layer (x - shift) / scale;
* conv 11x11/1 pad 2 (3->64) -> blur-pool -> ReLU               = relu1
* max-pool 3/1 -> blur-pool -> conv 5x5 pad 2 (64->192) -> ReLU    = relu2
* max-pool 3/1 -> blur-pool -> conv 3x3 (192->384) -> ReLU         = relu3
* conv 3x3 (384->256) -> ReLU                                      = relu4
* conv 3x3 (256->256) -> ReLU                                      = relu5

where blur-pool is a depthwise [1 2 1]^T[1 2 1]/16 filter with stride 2
after reflection padding of 2 on every side ("pad_more"). Each tap is
unit-normalised over channels, the squared difference of the two images'
taps is weighted by a non-negative 1x1 linear head, averaged over positions,
and the five layers are summed: distance >= 0, 0 for identical images,
lower = more similar.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..assets import asset_path
from ..errors import SrpkdError
from .shared import per_device

CHANNELS = (64, 192, 384, 256, 256)


class BlurPool(nn.Module):
    """Depthwise binomial blur with stride 2 after reflection padding (weights loaded from the file)."""

    def __init__(self, channels: int, pad: int = 2):
        super().__init__()
        self.pad = pad
        self.register_buffer("filt", torch.zeros(channels, 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])


def _seq(layers: dict[int, nn.Module]) -> nn.Sequential:
    s = nn.Sequential()
    for index, layer in layers.items():  # indices as in the weight file's keys
        s.add_module(str(index), layer)
    return s


class _Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.slice1 = _seq({0: nn.Conv2d(3, 64, 11, stride=1, padding=2), 1: BlurPool(64), 2: nn.ReLU()})
        self.slice2 = _seq({
            3: nn.MaxPool2d(3, stride=1), 4: BlurPool(64), 5: nn.Conv2d(64, 192, 5, padding=2), 6: nn.ReLU()
        })
        self.slice3 = _seq({
            7: nn.MaxPool2d(3, stride=1), 8: BlurPool(192), 9: nn.Conv2d(192, 384, 3, padding=1), 10: nn.ReLU()
        })
        self.slice4 = _seq({11: nn.Conv2d(384, 256, 3, padding=1), 12: nn.ReLU()})
        self.slice5 = _seq({13: nn.Conv2d(256, 256, 3, padding=1), 14: nn.ReLU()})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for s in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = s(x)
            taps.append(x)
        return taps


class _Lin(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = _seq({1: nn.Conv2d(channels, 1, 1, bias=False)})  # index 0 was dropout (training only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Scaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def locate_stlpips_weights() -> Path:
    """The ST-LPIPS AlexNet weight file of the installed stlpips-pytorch, found without importing it."""
    return asset_path("stlpips_pytorch", "weights/vST0.0/alex_shift_tolerant.pth")


class STLPIPS(nn.Module):
    """Shift-tolerant LPIPS distance between batches of [-1, 1] images, per image (N,)."""

    metric_id = "st-lpips-alex-vST0.0"

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        self.scaling_layer = _Scaling()
        self.net = _Trunk()
        self.lins = nn.ModuleList(_Lin(c) for c in CHANNELS)
        path = Path(weights) if weights else locate_stlpips_weights()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise SrpkdError(f"cannot read ST-LPIPS weights {path}: {str(e).splitlines()[0]}") from None
        state = {k.replace("lin", "lins.", 1) if k.startswith("lin") else k: v for k, v in state.items()}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SrpkdError(
                f"{path} does not fit the ST-LPIPS AlexNet (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        self.requires_grad_(False)
        self.eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(
                f"expected two (N, 3, H, W) batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if min(a.shape[-2:]) < 32:
            raise SrpkdError(f"ST-LPIPS needs images of at least 32 x 32 pixels, got {tuple(a.shape[-2:])}")
        fa, fb = self.net(self.scaling_layer(a)), self.net(self.scaling_layer(b))
        total = 0
        for lin, x, y in zip(self.lins, fa, fb):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((x - y).pow(2)).mean((2, 3))
        return total.flatten()


stlpips = per_device(STLPIPS)


@torch.no_grad()
def perceptual_distance(a: torch.Tensor, b: torch.Tensor, model: STLPIPS | None = None, chunk: int = 8) -> float:
    """Mean ST-LPIPS over a batch of [-1, 1] image pairs (lower is better), ``chunk`` pairs at a time on the
    model's device (the images may live elsewhere, e.g. on the CPU)."""
    model = model or stlpips(a.device)
    device = next(model.buffers()).device
    d = [model(a[i : i + chunk].to(device).float(), b[i : i + chunk].to(device).float()).cpu()
         for i in range(0, len(a), chunk)]
    return float(torch.cat(d).mean())
