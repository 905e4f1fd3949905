"""pix2pix-style preprocessing with Pillow: resize, random crop, random flip.

Modes (``preprocess``), as in pytorch-CycleGAN-and-pix2pix:

- ``resize_and_crop``: resize to ``load_size`` x ``load_size``, random ``crop_size`` crop
- ``crop``: random ``crop_size`` crop of the image as it is
- ``scale_width``: width to ``load_size`` keeping the aspect (height at least ``crop_size``), no crop
- ``scale_width_and_crop``: as ``scale_width``, then a random ``crop_size`` crop
- ``resize``: resize to ``crop_size`` x ``crop_size`` exactly, no crop
- ``none``: keep the size, rounded to a multiple of 4 (pix2pix's ``__make_power_2``)

Resizing is bicubic. The random crop position and the flip are drawn once per
sample from torch's global generator (so ``torch.manual_seed`` and DataLoader
worker seeding make them reproducible) and applied identically to every image
passed in one call, e.g. the A and B halves of an aligned pair.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from PIL import Image

from ..errors import SrpkdError
from .images import to_tensor

PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "resize", "none")
SIZE_BASE = 4  # ``none`` rounds sizes to a multiple of this


class Params(NamedTuple):
    x: int
    y: int
    flip: bool


class Transform:
    def __init__(self, preprocess: str = "resize_and_crop", load_size: int = 286, crop_size: int = 256,
                 flip: bool = True):
        if preprocess not in PREPROCESS:
            raise SrpkdError(f"unknown preprocess {preprocess!r}; choose one of: {', '.join(PREPROCESS)}")
        if load_size <= 0 or crop_size <= 0:
            raise SrpkdError(f"load_size and crop_size must be positive, got {load_size} and {crop_size}")
        if preprocess in ("resize_and_crop", "scale_width_and_crop") and crop_size > load_size:
            raise SrpkdError(f"crop_size {crop_size} is larger than load_size {load_size} (preprocess {preprocess})")
        self.preprocess, self.load_size, self.crop_size, self.flip = preprocess, load_size, crop_size, flip

    def __repr__(self) -> str:
        return (f"Transform(preprocess={self.preprocess!r}, load_size={self.load_size}, "
                f"crop_size={self.crop_size}, flip={self.flip})")

    @property
    def crops(self) -> bool:
        return self.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop")

    @property
    def deterministic(self) -> bool:
        """True when an image always gives the same tensor (no random crop, no flip)."""
        return not self.crops and not self.flip

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(w, h) after the resize step, before cropping."""
        w, h = size
        p, load, crop = self.preprocess, self.load_size, self.crop_size
        if p == "resize_and_crop":
            return load, load
        if p == "resize":
            return crop, crop
        if p in ("scale_width", "scale_width_and_crop"):
            return (w, h) if w == load and h >= crop else (load, max(int(load * h / w), crop))
        if p == "none":
            return tuple(max(SIZE_BASE, round(s / SIZE_BASE) * SIZE_BASE) for s in (w, h))
        return w, h  # crop

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(w, h) of the tensor made from an image of ``size``."""
        return (self.crop_size, self.crop_size) if self.crops else self.resized_size(size)

    def draw(self, size: tuple[int, int], source: str = "image") -> Params:
        """Random parameters for one sample whose images have ``size`` (w, h)."""
        w, h = self.resized_size(size)
        x = y = 0
        if self.crops:
            if w < self.crop_size or h < self.crop_size:
                raise SrpkdError(
                    f"{source} is {w}x{h} after preprocess {self.preprocess!r}, smaller than crop_size {self.crop_size}"
                )
            x = int(torch.randint(0, w - self.crop_size + 1, ()))
            y = int(torch.randint(0, h - self.crop_size + 1, ()))
        flip = bool(torch.rand(()) < 0.5) if self.flip else False
        return Params(x, y, flip)

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        size = self.resized_size(img.size)
        if size != img.size:
            img = img.resize(size, Image.BICUBIC)
        if self.crops:
            c = self.crop_size
            img = img.crop((params.x, params.y, params.x + c, params.y + c))
        if params.flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img

    def __call__(self, *imgs: Image.Image, source: str = "image") -> tuple[torch.Tensor, ...]:
        """Transform images of one sample with the same random parameters; returns tensors in [-1, 1]."""
        sizes = {img.size for img in imgs}
        if len(sizes) != 1:
            raise SrpkdError(f"{source}: the images of one sample differ in size: {sorted(sizes)}")
        params = self.draw(imgs[0].size, source)
        return tuple(to_tensor(self.apply(img, params)) for img in imgs)
