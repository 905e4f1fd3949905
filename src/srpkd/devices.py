"""Where PyTorch runs: the one resolver behind every ``--device`` flag and the config's ``device``, and
the names of devices that latency reports print."""
from __future__ import annotations

import platform
from pathlib import Path

import torch

from .errors import SrpkdError

CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(
    name: str | torch.device | None = "auto", local_rank: int | None = None, flag: str = "--device"
) -> torch.device:
    """A device that exists here, from ``auto`` (or None / ""), ``cpu``, ``cuda``, ``cuda:N`` (or ``mps``).

    ``auto`` is the first CUDA GPU when there is one, else the CPU. ``local_rank`` (a process of a
    torchrun launch) turns a bare ``cuda``, or ``auto`` resolved to it, into that process's GPU
    ``cuda:LOCAL_RANK``. Anything else raises one :class:`SrpkdError` line that names ``flag``.
    """
    if isinstance(name, torch.device):
        device = name
    else:
        text = (name or "auto").strip().lower()
        if text == "auto":
            text = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(text)
        except (RuntimeError, ValueError):
            raise SrpkdError(f"unknown {flag} {name!r}; use {CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SrpkdError(f"{flag} {name}: no CUDA GPU is available here")
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SrpkdError(f"{flag} {name}: there is no {device} here (CUDA GPUs: cuda:0 to cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise SrpkdError(f"{flag} {name}: no Apple GPU (MPS) is available here")
    elif device.type != "cpu":
        raise SrpkdError(f"{flag} {name}: srpkd runs on {CHOICES}, not {device.type}")
    return device


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX (where oneDNN's bf16 convolutions are ~2x faster than float32; without them
    they are emulated and slower)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """The ``amp`` setting as run: ``auto`` is ``bf16`` where :func:`native_bf16`, else ``none``."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    return amp

