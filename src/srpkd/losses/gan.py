"""Adversarial objectives and the CycleGAN image history pool."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SrpkdError
from .relation import result_dtype

GAN_MODES = ("lsgan", "vanilla", "hinge")


class GANLoss(nn.Module):
    """The adversarial loss of one discriminator output, for either player.

    - ``lsgan`` (default, Mao et al. 2017): mean (D(x) - y)^2 with y = 1 for
      real and 0 for fake.
    - ``vanilla`` (Goodfellow et al. 2014): binary cross-entropy of the logits
      D(x) against y, i.e. mean softplus(-D(x)) for real, softplus(D(x)) for fake.
    - ``hinge`` (Lim & Ye 2017): the discriminator minimises
      mean relu(1 - D(real)) and mean relu(1 + D(fake)); the generator
      minimises -mean D(fake), asked for as ``target_is_real=True,
      for_discriminator=False``.

    For ``lsgan`` and ``vanilla`` the generator loss is the real-target loss
    on fakes, so ``for_discriminator`` changes nothing. ``pred`` may be a
    tensor or a list of tensors (multi-scale discriminators): the loss is then
    the average of the per-tensor losses. The result is at least float32.
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise SrpkdError(f"unknown GAN loss {mode!r}; choose one of: {', '.join(GAN_MODES)}")
        self.mode = mode

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    def forward(
        self,
        pred: torch.Tensor | Sequence[torch.Tensor],
        target_is_real: bool,
        for_discriminator: bool = True,
    ) -> torch.Tensor:
        preds = [pred] if isinstance(pred, torch.Tensor) else list(pred)
        if not preds:
            raise ValueError("GANLoss got an empty list of discriminator outputs")
        losses = [self._single(p, target_is_real, for_discriminator) for p in preds]
        return torch.stack(losses).mean()

    def _single(self, pred: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred = pred.to(result_dtype(pred))
            if self.mode == "lsgan":
                return F.mse_loss(pred, torch.full_like(pred, float(real)))
            if self.mode == "vanilla":
                return F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, float(real)))
            if for_discriminator:
                return F.relu(1.0 - pred).mean() if real else F.relu(1.0 + pred).mean()
            if not real:
                raise ValueError("the hinge generator loss is -mean D(fake): call it with target_is_real=True")
            return -pred.mean()


class ImagePool:
    """History of generated images for the discriminator (Shrivastava et al. 2017; CycleGAN).

    ``query(images)`` goes through the batch one image at a time. While the
    pool holds fewer than ``size`` images, the image is stored and returned.
    Once it is full, with probability 1/2 a uniformly chosen stored image is
    returned and the new one takes its slot; otherwise the new image is
    returned. The draws come from ``generator`` (torch's global CPU RNG when
    None), so a run is reproducible; save the RNG state together with
    :meth:`state_dict` to resume exactly (a private ``generator``'s state is
    included). ``size=0`` returns the batch itself; otherwise the result is
    detached. All images in a pool must have one shape.
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None) -> None:
        if size < 0:
            raise SrpkdError(f"image pool size must be >= 0, got {size}")
        self.size = size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if self.images and image.shape != self.images[0].shape:
                raise SrpkdError(
                    f"image pool holds images of shape {tuple(self.images[0].shape)}, got {tuple(image.shape)}; "
                    f"train with a fixed crop size or set the pool size to 0"
                )
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator) < 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[slot].to(image.device))
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.query(images)

    def state_dict(self) -> dict:
        """``{"images": (count, ...) tensor, "count": int}``, plus ``"rng_state"`` with a private generator."""
        images = torch.stack(self.images) if self.images else torch.empty(0)
        state: dict = {"images": images, "count": len(self.images)}
        if self.generator is not None:
            state["rng_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; ``"images"`` may also be a list of tensors."""
        images, count = list(state["images"]), int(state["count"])
        if len(images) != count or count > self.size or len({tuple(im.shape) for im in images}) > 1:
            raise SrpkdError(
                f"image pool state holds {len(images)} images (count {count}), "
                f"which does not fit a pool of size {self.size} with images of one shape"
            )
        self.images = [image.clone() for image in images]
        if self.generator is not None and "rng_state" in state:
            self.generator.set_state(state["rng_state"])
