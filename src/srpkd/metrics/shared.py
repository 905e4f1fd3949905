"""One shared instance per device of the frozen metric networks (Inception, ST-LPIPS).

Loading their weights takes a moment, and every scorer in a process wants the same frozen
network, so each is built once per device and handed out again. Building one leaves torch's
random generator where it was (its layers' random initialisation is overwritten by the loaded
weights anyway): otherwise a training run's draws (adapters, dropout) would depend on whether
an earlier run in the same process had already loaded the network.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.nn as nn

M = TypeVar("M", bound=nn.Module)


def per_device(build: Callable[[], M]) -> Callable[..., M]:
    """``get = per_device(Net)``: ``get(device)`` returns one shared ``Net().to(device)`` per device.

    Devices are compared after ``torch.device(...)``, so ``"cpu"`` and ``torch.device("cpu")``
    share one instance. ``build`` runs inside ``torch.random.fork_rng``: the caller's CPU generator
    is unchanged by it.
    """
    instances: dict[torch.device, M] = {}

    def get(device: str | torch.device = "cpu") -> M:
        key = torch.device(device)
        if key not in instances:
            with torch.random.fork_rng(devices=[]):
                instances[key] = build().to(key)
        return instances[key]

    get.__doc__ = f"The process-wide shared {getattr(build, '__name__', 'network')} on ``device``."
    get.instances = instances  # type: ignore[attr-defined]
    return get
