"""What every srpkd generator shares: named distillation taps.

A generator declares, in order, the names of the intermediate features it can
return (``tap_channels``) and optional aliases (``encoder`` is the output of
the down-sampling path). Calling ``G(x)`` returns the image; calling
``G(x, taps=["encoder", "block3"])`` returns ``(image, {name: tensor})``.
Distillation code asks for features by these names only, never by layer index.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SrpkdError


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` without running statistics, computed as a group norm with one channel per group.

    Same parameters, state dict and result (within float rounding: 1e-6 on unit-scale
    inputs); on the CPU ``F.group_norm`` is 2-4x faster than instance norm, which
    runs through ``batch_norm`` on a reshaped copy (BENCHMARKS.md section 2). An ONNX
    export keeps torch's instance norm, which ONNX has as one operator.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or self.track_running_stats or torch.onnx.is_in_onnx_export():
            return super().forward(x)  # ONNX: one InstanceNormalization node, not a group norm's reshapes
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


class ReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` whose backward pass is cheap when a gradient flows through it.

    Torch's reflection-pad backward is a scalar loop on the CPU (in bf16, 0.98 ms
    forward + backward for a 4 x 64 x 32 x 32 map, 1 thread; a student's residual
    blocks pad 18 of them a step). While autograd records, the same padding is built
    from flipped slices and a concatenation: the same values bit for bit, and a
    backward made of copies and one add per reflected border (0.57 ms; BENCHMARKS.md
    section 2.1). Otherwise (inference, the frozen teacher, an ONNX export: one Pad
    node) it is torch's own pad.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.padding
        if (not (x.requires_grad and torch.is_grad_enabled()) or x.dim() != 4 or torch.onnx.is_in_onnx_export()
                or max(top, bottom) >= x.shape[2] or max(left, right) >= x.shape[3]):
            return super().forward(x)  # including the error torch gives for a pad wider than the input
        return _reflect(_reflect(x, top, bottom, 2), left, right, 3)


def _reflect(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Reflection padding along one dimension (the edge itself not repeated), from slices."""
    n = x.shape[dim]
    parts = [x.narrow(dim, 1, before).flip(dim)] if before else []
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, n - 1 - after, after).flip(dim))
    return torch.cat(parts, dim) if len(parts) > 1 else x


def norm_layer(norm: str, channels: int) -> nn.Module:
    """``instance`` (no affine, as in CycleGAN), ``instance_affine``, ``batch`` or ``none``."""
    if norm == "instance":
        return InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "instance_affine":
        return InstanceNorm2d(channels, affine=True, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "none":
        return nn.Identity()
    raise SrpkdError(f"unknown norm {norm!r}; choose one of: instance, instance_affine, batch, none")


def uses_bias(norm: str) -> bool:
    """pytorch-CycleGAN-and-pix2pix puts a bias on convolutions unless a BatchNorm follows."""
    return norm != "batch"


class Generator(nn.Module):
    """Base class: subclasses fill ``tap_channels`` and implement ``_forward(x, keep)``."""

    tap_aliases: dict[str, str] = {}
    size_multiple: int = 4  # input height and width must be a multiple of this

    def __init__(self) -> None:
        super().__init__()
        self.tap_channels: dict[str, int] = {}

    @property
    def tap_names(self) -> list[str]:
        return list(self.tap_channels) + list(self.tap_aliases)

    def resolve_tap(self, name: str) -> str:
        real = self.tap_aliases.get(name, name)
        if real not in self.tap_channels:
            raise SrpkdError(
                f"{getattr(self, 'arch', type(self).__name__)} has no feature tap {name!r}; "
                f"available: {', '.join(self.tap_names)}"
            )
        return real

    def channels_of(self, name: str) -> int:
        return self.tap_channels[self.resolve_tap(name)]

    def forward(self, x: torch.Tensor, taps: Iterable[str] | None = None):
        if taps is None:
            return self._forward(x, None)
        taps = list(taps)
        wanted: dict[str, list[str]] = {}
        for name in taps:
            wanted.setdefault(self.resolve_tap(name), []).append(name)
        feats: dict[str, torch.Tensor] = {}

        def keep(real: str, t: torch.Tensor) -> None:
            for alias in wanted.get(real, ()):
                feats[alias] = t

        out = self._forward(x, keep)
        return out, feats

    def _forward(self, x: torch.Tensor, keep: Callable[[str, torch.Tensor], None] | None) -> torch.Tensor:
        raise NotImplementedError


def init_weights(model: nn.Module, gain: float = 0.02) -> nn.Module:
    """The pix2pix/CycleGAN initialisation: N(0, gain) for convolutions, N(1, gain) for norm scales."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return model
