"""Datasets in the pix2pix / CycleGAN folder layouts, returning dicts of tensors in [-1, 1].

- :class:`AlignedDataset`: ``root/<split>/*.jpg``, each image A|B side by side (pix2pix).
- :class:`UnalignedDataset`: ``root/<split>A/`` and ``root/<split>B/`` (CycleGAN).
- :class:`SingleDataset`: one folder, file or list of files (translation, FID).
- ``builtin``: photos shipped with scikit-image (:mod:`srpkd.data.builtin`).

Each dataset has ``deterministic``: True when index ``i`` always gives the same
sample, so teacher outputs may be cached.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import SrpkdError
from .builtin import BuiltinPhotos
from .images import is_image_file, list_images, load_image, shown_size
from .transforms import Transform

DIRECTIONS = ("AtoB", "BtoA")
MODES = ("aligned", "unaligned", "single", "builtin")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(w, h) as shown (EXIF orientation applied), read from the file header without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return shown_size(img)
    except FileNotFoundError:
        raise SrpkdError(f"image not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        raise SrpkdError(f"cannot read image {path}: {reason}") from None


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise SrpkdError(f"direction must be AtoB or BtoA, got {direction!r}")


def _limit(files: list[Path], max_images: int | None) -> list[Path]:
    if max_images is not None and max_images <= 0:
        raise SrpkdError(f"max_images must be positive, got {max_images}")
    return files[:max_images] if max_images else files


class AlignedDataset(Dataset):
    """pix2pix pairs: each file holds A (left half) and B (right half); width must be twice the height."""

    def __init__(self, root, split: str = "train", direction: str = "AtoB", transform: Transform | None = None,
                 max_images: int | None = None):
        _check_direction(direction)
        self.root, self.folder = Path(root), Path(root) / split
        if not self.folder.is_dir():
            raise SrpkdError(
                f"{self.root} has no '{split}' folder (aligned layout expected: {self.folder}/*.jpg, A|B side by side)"
            )
        self.files = _limit(list_images(self.folder), max_images)
        self.direction = direction
        self.transform = transform or Transform("none", flip=False)
        self._check_pair_size(self.files[0], image_size(self.files[0]))  # fail early on a wrong layout

    @staticmethod
    def _check_pair_size(path: Path, size: tuple[int, int]) -> None:
        w, h = size
        if w != 2 * h:
            raise SrpkdError(f"{path} is {w}x{h}; an aligned pair must be A|B side by side, width twice the height")

    @property
    def deterministic(self) -> bool:
        return self.transform.deterministic

    def sizes(self) -> list[tuple[Path, tuple[int, int]]]:
        """(file, size of one half) for every pair."""
        return [(p, (w // 2, h)) for p in self.files for w, h in [image_size(p)]]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        path = self.files[i]
        ab = load_image(path)
        self._check_pair_size(path, ab.size)
        w, h = ab.size
        a, b = ab.crop((0, 0, h, h)), ab.crop((h, 0, w, h))
        if self.direction == "BtoA":
            a, b = b, a
        ta, tb = self.transform(a, b, source=str(path))
        return {"A": ta, "B": tb, "A_path": str(path), "B_path": str(path)}


class UnalignedDataset(Dataset):
    """CycleGAN domains ``<split>A`` and ``<split>B``; length is the larger; B is drawn at random unless ``serial``."""

    def __init__(self, root, split: str = "train", direction: str = "AtoB", serial: bool = False,
                 transform: Transform | None = None, max_images: int | None = None):
        _check_direction(direction)
        self.root = Path(root)
        folders = []
        for side in "AB":
            folder = self.root / f"{split}{side}"
            if not folder.is_dir():
                raise SrpkdError(
                    f"{self.root} has no '{split}{side}' folder "
                    f"(CycleGAN layout expected: {split}A/ and {split}B/ side by side)"
                )
            folders.append(folder)
        self.files_A, self.files_B = (_limit(list_images(f), max_images) for f in folders)
        if direction == "BtoA":
            self.files_A, self.files_B = self.files_B, self.files_A
        self.direction, self.serial = direction, serial
        self.transform = transform or Transform("none", flip=False)

    @property
    def deterministic(self) -> bool:
        return self.serial and self.transform.deterministic

    def sizes(self) -> list[tuple[Path, tuple[int, int]]]:
        return [(p, image_size(p)) for p in self.files_A + self.files_B]

    def __len__(self) -> int:
        return max(len(self.files_A), len(self.files_B))

    def __getitem__(self, i: int) -> dict:
        path_a = self.files_A[i % len(self.files_A)]
        j = i if self.serial else int(torch.randint(0, len(self.files_B), ()))
        path_b = self.files_B[j % len(self.files_B)]
        (ta,) = self.transform(load_image(path_a), source=str(path_a))
        (tb,) = self.transform(load_image(path_b), source=str(path_b))
        return {"A": ta, "B": tb, "A_path": str(path_a), "B_path": str(path_b)}


class SingleDataset(Dataset):
    """Images of one domain: a folder (searched recursively), one image file, or a list of files."""

    def __init__(self, root, transform: Transform | None = None, max_images: int | None = None):
        if isinstance(root, (str, os.PathLike)):
            root = Path(root)
            if root.is_file():
                if not is_image_file(root):
                    raise SrpkdError(f"{root} is not an image file")
                files = [root]
            else:
                files = list_images(root)
        else:
            files = [Path(p) for p in root]
            if not files:
                raise SrpkdError("no images given")
        self.files = _limit(files, max_images)
        self.transform = transform or Transform("none", flip=False)

    @property
    def deterministic(self) -> bool:
        return self.transform.deterministic

    def sizes(self) -> list[tuple[Path, tuple[int, int]]]:
        return [(p, image_size(p)) for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        path = self.files[i]
        (ta,) = self.transform(load_image(path), source=str(path))
        return {"A": ta, "A_path": str(path)}


def check_same_size(dataset) -> tuple[int, int]:
    """The (w, h) every sample of ``dataset`` will have; one clear error if the sizes differ.

    Batches larger than 1 need this when the preprocess keeps image sizes
    (``none``, ``scale_width``). Only file headers are read.
    """
    if not hasattr(dataset, "sizes"):  # e.g. builtin photos: every crop has the same size
        h, w = dataset[0]["A"].shape[-2:]
        return w, h
    transform = dataset.transform
    first = None
    for path, size in dataset.sizes():
        out = transform.output_size(size)
        if first is None:
            first = (path, out)
        elif out != first[1]:
            raise SrpkdError(
                f"images of different sizes cannot share a batch: {first[0]} gives {first[1][0]}x{first[1][1]} "
                f"but {path} gives {out[0]}x{out[1]} "
                "(use batch size 1 or a resizing preprocess such as resize_and_crop)"
            )
    return first[1]


def build_dataset(mode: str, root=None, split: str = "train", direction: str = "AtoB", load_size: int = 286,
                  crop_size: int = 256, preprocess: str = "resize_and_crop", flip: bool = True, serial: bool = False,
                  max_images: int | None = None, fixed: bool = False) -> Dataset:
    """One factory for every layout.

    ``single`` reads ``root`` itself (a folder or a file) and ignores ``split``.
    ``builtin`` takes no ``root`` and uses only ``split``, ``crop_size``, ``flip``,
    ``max_images`` (number of samples) and ``fixed`` (a fixed set of crops).
    """
    if mode not in MODES:
        raise SrpkdError(f"unknown dataset mode {mode!r}; choose one of: {', '.join(MODES)}")
    _check_direction(direction)
    if mode == "builtin":
        if root not in (None, "", "builtin"):
            raise SrpkdError(f"dataset mode 'builtin' takes no root folder, got {root}")
        return BuiltinPhotos(split, crop_size=crop_size, length=max_images, flip=flip, fixed=fixed)
    if root in (None, ""):
        raise SrpkdError(f"dataset mode {mode!r} needs a root folder")
    if fixed:
        raise SrpkdError("fixed crops are only for the builtin dataset; for folders use a deterministic "
                         "preprocess (resize or none) and no flip")
    transform = Transform(preprocess, load_size, crop_size, flip)
    if mode == "aligned":
        return AlignedDataset(root, split, direction, transform, max_images)
    if mode == "unaligned":
        return UnalignedDataset(root, split, direction, serial, transform, max_images)
    return SingleDataset(root, transform, max_images)
