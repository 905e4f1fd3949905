"""Running a generator the way pytorch-CycleGAN-and-pix2pix's ``test.py`` does without ``--eval``.

That script leaves the networks in training mode unless ``--eval`` is given,
with a batch of one image: every BatchNorm layer normalises the image by its
own mean and variance (not by the running statistics learned in training),
and dropout stays on (pix2pix's U-Net keeps it as its source of noise). Most
published pix2pix results were made that way, so reproducing them needs the
same forward pass. :func:`train_mode_forward` is that pass:

* each image of the batch goes through the network alone (a batch of one, so
  the statistics are the image's own, whatever batch the caller uses);
* dropout draws its masks from the global generator seeded with ``seed`` for
  every image, so one image gives the same output in any batch and order;
* the network is left as it was: its mode, its BatchNorm running statistics
  (which a plain ``train()`` forward would update) and the caller's random
  state are restored.

For networks without BatchNorm and dropout (the CycleGAN ResNets with
InstanceNorm) the result equals the eval-mode result.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

MODES = ("eval", "train")  # the --network-mode choices of srpkd translate and eval


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: ``model`` in training mode, its BatchNorm layers normalising by the batch's statistics
    without updating their running statistics. On exit, the mode and every flag are restored."""
    was_training = model.training
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    tracking = [m.track_running_stats for m in norms]
    model.train()
    for m in norms:
        m.track_running_stats = False  # with training=True: batch statistics, running buffers left alone
    try:
        yield model
    finally:
        for m, flag in zip(norms, tracking):
            m.track_running_stats = flag
        model.train(was_training)


def train_mode_forward(model: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``model(x)`` as pix2pix's ``test.py`` computes it without ``--eval`` (see the module docstring)."""
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    outs = []
    with torch.no_grad(), batch_statistics(model):
        for one in x.split(1):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                outs.append(model(one))
    return torch.cat(outs)


def forward(model: nn.Module, x: torch.Tensor, mode: str = "eval", seed: int = 0) -> torch.Tensor:
    """The generator's output in ``mode``: ``eval`` (running statistics, no dropout) or ``train``
    (:func:`train_mode_forward`). The model's own mode is restored either way."""
    if mode == "train":
        return train_mode_forward(model, x, seed)
    if mode != "eval":
        raise ValueError(f"unknown network mode {mode!r}; choose one of {MODES}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train(was_training)
