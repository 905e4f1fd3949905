"""Real colour photos that ship inside packages on the registry, for trying srpkd without any data.

Twelve photos of the kind a photo-to-photo teacher (such as the vintage-photo
CycleGAN) is made for: people, animals, objects, buildings and outdoor scenes.
Each is a file inside an installed package, found with :func:`srpkd.assets.asset_path`
(the package is never imported; see requirements-assets.txt). Held out by photo,
and each held-out photo has training photos of the same kind:

- ``train`` (7): astronaut (portrait, scikit-image), rocket (night scene,
  scikit-image), motorcycle (object indoors, left view of scikit-image's stereo
  pair), grace_hopper (portrait, matplotlib), quokka (animal, imgaug), flower
  (close-up, scikit-learn), bus (street scene with people, ultralytics).
- ``val`` (2), for choosing the best checkpoint: china (building and landscape,
  scikit-learn), luispedro (portrait, mahotas).
- ``test`` (3), the held-out figures: coffee (object close-up, scikit-image),
  chelsea (animal, scikit-image), zidane (people, ultralytics).

Grayscale pictures (scikit-image's camera and coins, used before) are left out:
a colour filter cannot be learnt from them, and the held-out photos are colour.

A sample is a square crop of ``crop_size`` px covering a region of
``crop_size / s`` photo pixels, ``s`` drawn in ``scale`` (0.5 to 1 by default;
raised for photos smaller than the crop), resized bicubically.

- ``split="train"``: ``length`` random crops per epoch (position, scale, flip
  drawn from torch's global generator); photo ``i % 7`` for index ``i``.
- ``split="train", fixed=True``: ``length`` crops drawn once from ``seed``, the
  same on every access, so teacher outputs can be cached.
- ``split="val"`` / ``"test"``: ``length`` (48) crops drawn from a constant seed,
  never flipped: the same evaluation set on every machine and run.
"""
from __future__ import annotations

import functools

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..assets import asset_path
from ..errors import SrpkdError
from .images import to_tensor

# name -> (package that ships the file, path inside the package)
PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "quokka": ("imgaug", "quokka.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "bus": ("ultralytics", "assets/bus.jpg"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "luispedro": ("mahotas", "demos/data/luispedro.jpg"),
    "coffee": ("skimage", "data/coffee.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "zidane": ("ultralytics", "assets/zidane.jpg"),
}
SPLITS = {
    "train": ("astronaut", "rocket", "motorcycle", "grace_hopper", "quokka", "flower", "bus"),
    "val": ("china", "luispedro"),
    "test": ("coffee", "chelsea", "zidane"),
}
TRAIN_PHOTOS, VAL_PHOTOS, TEST_PHOTOS = SPLITS["train"], SPLITS["val"], SPLITS["test"]
EVAL_SEEDS = {"val": 2021, "test": 2020}


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """One built-in photo as an RGB PIL image."""
    if name not in PHOTOS:
        raise SrpkdError(f"unknown builtin photo {name!r}; choose one of: {', '.join(PHOTOS)}")
    with Image.open(asset_path(*PHOTOS[name])) as img:
        return img.convert("RGB")


class BuiltinPhotos(Dataset):
    def __init__(self, split: str = "train", crop_size: int = 128, length: int | None = None, flip: bool = True,
                 fixed: bool = False, seed: int = 0, scale: tuple[float, float] = (0.5, 1.0)):
        if split not in SPLITS:
            raise SrpkdError(f"builtin photos have splits {', '.join(map(repr, SPLITS))}, not {split!r}")
        if crop_size <= 0 or (length is not None and length <= 0):
            raise SrpkdError(f"crop_size and length must be positive, got {crop_size} and {length}")
        if not 0 < scale[0] <= scale[1]:
            raise SrpkdError(f"scale must be a range (lo, hi) with 0 < lo <= hi, got {scale}")
        self.split, self.crop_size, self.scale = split, crop_size, scale
        self.names = SPLITS[split]
        self.photos = [load_photo(n) for n in self.names]
        self.length = length or (256 if split == "train" else 48)
        self.flip = flip and split == "train"
        self.fixed = fixed or split != "train"
        self.crops = None
        if self.fixed:
            gen = torch.Generator().manual_seed(EVAL_SEEDS.get(split, seed))
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
