"""Real photos that ship with scikit-image, for trying srpkd without any data.

Train photos: astronaut, rocket, motorcycle (left view of the stereo pair),
camera and coins (the last two grayscale, returned as RGB). Test photos:
coffee and chelsea (the cat; ``skimage.data.cat`` is the same photo and is not
used). No test photo is used for training, so the test crops are held out
by photo, not only by region. Every photo loads offline (no pooch download).

A sample is a square crop of ``crop_size`` px covering a region of
``crop_size / s`` photo pixels, ``s`` drawn in ``scale`` (0.5 to 1 by default;
raised for photos smaller than the crop), resized bicubically.

- ``split="train"``: ``length`` random crops per epoch (position, scale, flip
  drawn from torch's global generator); photo ``i % 5`` for index ``i``.
- ``split="train", fixed=True``: ``length`` crops drawn once from ``seed``, the
  same on every access, so teacher outputs can be cached.
- ``split="test"``: ``length`` (16) crops drawn from a constant seed, never
  flipped: the same evaluation set on every machine and run.
"""
from __future__ import annotations

import functools

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import SrpkdError
from .images import to_tensor

TRAIN_PHOTOS = ("astronaut", "rocket", "motorcycle", "camera", "coins")
TEST_PHOTOS = ("coffee", "chelsea")
TEST_SEED = 2020


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """One scikit-image photo as an RGB PIL image."""
    import skimage.data

    if name not in TRAIN_PHOTOS + TEST_PHOTOS:
        raise SrpkdError(f"unknown builtin photo {name!r}; choose one of: {', '.join(TRAIN_PHOTOS + TEST_PHOTOS)}")
    arr = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return Image.fromarray(arr).convert("RGB")


class BuiltinPhotos(Dataset):
    def __init__(self, split: str = "train", crop_size: int = 128, length: int | None = None, flip: bool = True,
                 fixed: bool = False, seed: int = 0, scale: tuple[float, float] = (0.5, 1.0)):
        if split not in ("train", "test"):
            raise SrpkdError(f"builtin photos have splits 'train' and 'test', not {split!r}")
        if crop_size <= 0 or (length is not None and length <= 0):
            raise SrpkdError(f"crop_size and length must be positive, got {crop_size} and {length}")
        if not 0 < scale[0] <= scale[1]:
            raise SrpkdError(f"scale must be a range (lo, hi) with 0 < lo <= hi, got {scale}")
        self.split, self.crop_size, self.scale = split, crop_size, scale
        self.names = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
        self.photos = [load_photo(n) for n in self.names]
        self.length = length or (256 if split == "train" else 16)
        self.flip = flip and split == "train"
        self.fixed = fixed or split == "test"
        self.crops = None
        if self.fixed:
            gen = torch.Generator().manual_seed(TEST_SEED if split == "test" else seed)
            self.crops = [self._draw(i, gen) for i in range(self.length)]

    @property
    def deterministic(self) -> bool:
        return self.fixed

    def __len__(self) -> int:
        return self.length

    def _draw(self, i: int, gen: torch.Generator | None) -> tuple[int, tuple[float, float, float, float], bool]:
        k = i % len(self.photos)
        w, h = self.photos[k].size
        c = self.crop_size
        lo = max(self.scale[0], c / min(w, h))
        hi = max(lo, self.scale[1])
        u = torch.rand(4, generator=gen).tolist()
        side = min(c / (lo + (hi - lo) * u[0]), w, h)
        x, y = u[1] * (w - side), u[2] * (h - side)
        return k, (x, y, x + side, y + side), self.flip and u[3] < 0.5

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        k, box, flip = self.crops[i] if self.crops else self._draw(i, None)
        img = self.photos[k].resize((self.crop_size, self.crop_size), Image.BICUBIC, box=box)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return {"A": to_tensor(img), "A_path": f"builtin:{self.names[k]}#{i}"}
