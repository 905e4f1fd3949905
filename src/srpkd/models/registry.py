"""A small name -> constructor registry, in the spirit of timm.

Generators and discriminators register themselves under a name; every
constructor takes the same keyword arguments where they make sense
(``in_channels``, ``out_channels``, ``ngf``/``ndf``, ``norm``, ``dropout``).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import SrpkdError, first_line, short_repr

_REGISTRY: dict[str, dict[str, Callable[..., nn.Module]]] = {"generator": {}, "discriminator": {}}


def register(kind: str, name: str):
    def deco(fn):
        if name in _REGISTRY[kind]:
            raise ValueError(f"{kind} {name!r} registered twice")
        _REGISTRY[kind][name] = fn
        fn.arch_name = name
        return fn

    return deco


def list_models(kind: str = "generator") -> list[str]:
    return sorted(_REGISTRY[kind])


def _create(kind: str, name: str, kwargs: dict) -> nn.Module:
    if name not in _REGISTRY[kind]:
        raise SrpkdError(
            f"unknown {kind} architecture {short_repr(name)}; choose one of: {', '.join(list_models(kind))}"
        )
    for width in ("ngf", "ndf"):  # torch accepts 0 channels and builds a network that cannot run
        if width in kwargs and not (isinstance(kwargs[width], int) and kwargs[width] >= 1):
            raise SrpkdError(
                f"bad arguments for {kind} {name!r}: {width} must be a positive integer, "
                f"got {short_repr(kwargs[width])}"
            )
    try:
        model = _REGISTRY[kind][name](**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # unknown keyword, or a value torch refuses (ngf=-1)
        raise SrpkdError(f"bad arguments for {kind} {name!r}: {first_line(e)[:300]}") from None
    # Remember how to rebuild the model: checkpoints store exactly this.
    model.arch = name
    model.arch_kwargs = dict(kwargs)
    return model


def create_generator(name: str, **kwargs) -> nn.Module:
    return _create("generator", name, kwargs)


def create_discriminator(name: str, **kwargs) -> nn.Module:
    return _create("discriminator", name, kwargs)
