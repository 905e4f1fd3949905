"""The smallest input a network can take, found by running a thin copy of it on tiny inputs.

A generator's ``size_multiple`` says which sizes fit its down- and up-sampling;
it does not say how small an input may be. A reflection pad needs more pixels
than it pads, an instance norm more than one pixel per channel, a convolution
at least its kernel: a 4x4 image reaches the ResNet's bottleneck as 1x1, and a
PatchGAN deeper than the image allows runs out of pixels. Rather than a table
per architecture, :func:`min_input_size` runs the network on zero inputs of
growing size: a copy one channel wide when it was built from an architecture
record (the smallest size does not depend on the width), else a CPU copy. (The
``meta`` device would need no compute, but its instance norm costs 2 s to set
up on first use.) :func:`check_min_size` is the one check every command makes
before it creates any output (:func:`srpkd.data.images.check_pixels` bounds
sizes from above).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import SrpkdError
from .registry import create_generator

LARGEST = 1 << 15  # no network here needs more than this to run at all
_FOUND: dict[tuple, int] = {}  # (type, arch, kwargs) -> smallest side, for networks built from a record


def in_channels(net: nn.Module) -> int:
    """The channels of the first convolution (3 for a generator, 6 for a conditional discriminator)."""
    conv = next((m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))), None)
    return int(conv.in_channels) if conv is not None else 3


def _runs(net: nn.Module, channels: int, side: int) -> bool:
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, side, side))
        return True
    except (RuntimeError, ValueError, IndexError):
        return False


def min_input_size(net: nn.Module) -> int:
    """The smallest square side, a multiple of the network's ``size_multiple``, that the network runs on."""
    arch = getattr(net, "arch", None)
    if arch is None:
        return _search(net)
    key = (type(net).__name__, arch, repr(getattr(net, "arch_kwargs", None)))
    if key not in _FOUND:
        _FOUND[key] = _search(net)
    return _FOUND[key]


def _search(net: nn.Module) -> int:
    multiple = int(getattr(net, "size_multiple", 1))
    probe = _thin_copy(net)
    channels = in_channels(net)
    failed, k = 0, 1  # counts of multiples: ``failed`` is known to fail, ``k`` is tried next
    while not _runs(probe, channels, k * multiple):
        failed, k = k, 2 * k
        if k * multiple > LARGEST:
            raise SrpkdError(f"{describe(net)} runs on no input up to {LARGEST}x{LARGEST}")
    while k - failed > 1:  # bisect: a larger input never fails where a smaller one runs
        mid = (failed + k) // 2
        if _runs(probe, channels, mid * multiple):
            k = mid
        else:
            failed = mid
    return k * multiple


def _thin_copy(net: nn.Module) -> nn.Module:
    """A CPU copy of ``net`` in eval mode; one channel wide when it can be rebuilt from its architecture record."""
    arch, kwargs = getattr(net, "arch", None), getattr(net, "arch_kwargs", None)
    if isinstance(arch, str) and isinstance(kwargs, dict):
        try:
            with torch.device("cpu"):
                return create_generator(arch, **{**kwargs, "ngf": 1}).eval()
        except (SrpkdError, TypeError, ValueError):
            pass
    return copy.deepcopy(net).to("cpu").eval()


def describe(net: nn.Module) -> str:
    arch = getattr(net, "arch", None)
    if arch is None:
        return type(net).__name__
    kwargs = getattr(net, "arch_kwargs", {}) or {}
    return f"{arch} ngf {kwargs['ngf']}" if "ngf" in kwargs else arch


def check_min_size(net: nn.Module, height: int, width: int, what: str = "--size", role: str = "") -> None:
    """One line when ``height`` x ``width`` is smaller than ``net`` can take (sizes that are not a multiple of
    ``size_multiple`` are each command's own check, made before this one)."""
    smallest = min_input_size(net)
    if min(height, width) < smallest:
        name = f"{role} {describe(net)}".strip()
        raise SrpkdError(f"{what} {height}x{width} is too small for {name}: it needs at least {smallest}x{smallest}")
