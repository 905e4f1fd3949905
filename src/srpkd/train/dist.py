"""Multi-process helpers: one process per device, launched by ``torchrun``.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
:func:`init` joins the process group (gloo on CPU, nccl on CUDA) with a finite
``timeout`` so that a dead rank ends the job instead of hanging it.

Gradients are averaged with :func:`all_reduce_grads` after each backward, which
is exactly what :class:`~torch.nn.parallel.DistributedDataParallel` does
(synchronous all-reduce of the gradient average, parameters broadcast from
rank 0 at the start). The explicit form is used because the GAN steps call the
same network several times before one backward (CycleGAN: translation, cycle
and identity passes; the discriminator on real and fake batches, and frozen in
the generator step), a pattern DDP's reducer rejects unless it is told the
graph is static and every parameter gets a gradient. Single-process runs skip
all of this.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from ..errors import SrpkdError


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device, timeout_s: float = 300.0) -> None:
    """Join the process group when launched by torchrun with more than one process."""
    if env_world_size() <= 1 or is_dist():
        return
    if not dist.is_available():
        raise SrpkdError("WORLD_SIZE > 1 but this PyTorch has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise SrpkdError(f"cannot join the process group ({backend}): {str(e).splitlines()[0]}") from None


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if is_dist():
        dist.barrier()


def shutdown() -> None:
    if is_dist():
        try:
            dist.barrier()
        except Exception:  # a rank died: nothing left to wait for
            pass
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank hold rank ``src``'s parameters and buffers."""
    if not is_dist():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def all_reduce_grads(params) -> None:
    """Average the gradients of ``params`` over all ranks (one flat all-reduce)."""
    if not is_dist():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def broadcast_int(value: int, device: torch.device, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank."""
    if not is_dist():
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.broadcast(t, src)
    return int(t.item())


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)

