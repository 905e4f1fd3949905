"""Reproducible data order and augmentation, so a resumed run sees the same batches.

* Order: epoch ``e`` visits ``torch.randperm(n)`` drawn from a generator seeded
  with ``seed + e`` (every rank draws the same permutation), tiled to a whole
  number of batches on every rank and dealt out round robin:
  rank ``r`` of ``W`` takes positions ``r, r + W, ...`` (the DistributedSampler
  layout). The last incomplete batch is dropped.
* Augmentation: :class:`SeededDataset` runs each ``dataset[i]`` inside
  ``torch.random.fork_rng`` with torch, numpy and Python ``random`` seeded from
  ``(seed, epoch, i)``, then restores the caller's generators. A sample's
  random crop and flip therefore depend only on (seed, epoch, index), not on
  the worker that loads it or on what ran before.

Step ``s`` is batch ``s % batches_per_epoch`` of epoch ``s // batches_per_epoch``.

:func:`run_dataset` builds a run's training or held-out set from the config,
:func:`check_train_sizes` and :func:`eval_batch` check image sizes against the
networks before the first step.
"""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import Config
from ..data.datasets import build_dataset, check_same_size
from ..errors import SrpkdError

_MIX = 0x9E3779B1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * _MIX + index * 7919 + 12345) % (2**31 - 1)


class SeededDataset(Dataset):
    """Wrap a dataset: item ``(epoch, i)`` is ``base[i]`` drawn with the seed of (seed, epoch, i).

    With ``draws`` K > 0 the augmentation repeats every K epochs: epoch ``e`` draws
    item ``i`` as epoch ``e % K`` does (the teacher's draw cache, ``cache_draws``).
    The returned dict gets an ``"index"`` entry (the base index, used by the teacher
    caches) and, with ``draws``, a ``"draw"`` entry (``e % K``).
    """

    def __init__(self, base: Dataset, seed: int, draws: int = 0) -> None:
        self.base = base
        self.seed = seed
        self.draws = draws

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self.draws:
            epoch %= self.draws
        s = sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                random.seed(s)
                np.random.seed(s)
                item = self.base[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        item = dict(item)
        item["index"] = index
        if self.draws:
            item["draw"] = epoch
        return item


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    if n <= 0:
        raise SrpkdError("the training set is empty")
    return max(1, (n // world) // batch_size)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[list[tuple[int, int]]]:
    """This rank's batches of ``epoch``: lists of ``(epoch, index)`` keys for :class:`SeededDataset`."""
    nb = batches_per_epoch(n, batch_size, world)
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    need = nb * batch_size * world
    order = (perm * (need // n + 1))[:need]
    mine = order[rank::world]
    return [[(epoch, i) for i in mine[b * batch_size : (b + 1) * batch_size]] for b in range(nb)]


def visited_slots(n: int, batch_size: int, seed: int, steps: int, rank: int, world: int, draws: int) -> torch.Tensor:
    """The draw-cache slots (``draw * n + index``) this rank's first ``steps`` steps visit, in no order."""
    nb = batches_per_epoch(n, batch_size, world)
    full, rest = divmod(steps, nb)
    seen = torch.zeros(draws * n, dtype=torch.bool)
    for epoch in range(full + (1 if rest else 0)):
        batches = epoch_batches(n, batch_size, seed, epoch, rank, world)
        keys = [i for b in (batches if epoch < full else batches[:rest]) for _, i in b]
        seen[(epoch % draws) * n + torch.tensor(keys, dtype=torch.long)] = True
    return seen.nonzero().flatten()


def collate(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(vals[0], int):
            out[k] = torch.tensor(vals, dtype=torch.long)
        else:
            out[k] = vals
    return out


def iterate(
    dataset: SeededDataset, batch_size: int, seed: int, start_step: int, rank: int, world: int, num_workers: int = 0
) -> Iterator[tuple[int, dict]]:
    """Endless ``(epoch, batch)`` pairs starting at global step ``start_step``."""
    n = len(dataset)
    nb = batches_per_epoch(n, batch_size, world)
    epoch, skip = divmod(start_step, nb)
    while True:
        batches = epoch_batches(n, batch_size, seed, epoch, rank, world)[skip:]
        skip = 0
        if num_workers > 0:
            loader = DataLoader(
                dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate, persistent_workers=False
            )
            for batch in loader:
                yield epoch, batch
        else:
            for keys in batches:
                yield epoch, collate([dataset[k] for k in keys])
        epoch += 1


# ----------------------------------------------------------------------------- the datasets of a run


def run_dataset(cfg: Config, split: str, train: bool) -> Dataset:
    """The training set (augmented as configured) or a held-out set (no flip, no limit) of ``split``."""
    d = cfg.data
    fixed = d.fixed_crops and train and d.mode == "builtin"  # folders: deterministic = fixed preprocess, no flip
    return build_dataset(
        mode=d.mode, root=d.root, split=split, direction=d.direction, load_size=d.load_size, crop_size=d.crop_size,
        preprocess=d.preprocess, flip=d.flip if train else False, serial=d.serial if train else True,
        max_images=d.max_images if train else None, fixed=fixed,
    )


def is_deterministic(ds: Dataset) -> bool:
    """Whether an item is the same tensor every time it is drawn (then the teacher cache is sound)."""
    flag = getattr(ds, "deterministic", None)
    if flag is None:
        flag = getattr(getattr(ds, "transform", None), "deterministic", False)
    return bool(flag)


def _output_sizes(ds: Dataset) -> list[tuple[str, tuple[int, int]]]:
    if hasattr(ds, "sizes") and hasattr(ds, "transform"):
        return [(str(p), ds.transform.output_size(sz)) for p, sz in ds.sizes()]
    h, w = ds[0]["A"].shape[-2:]
    return [("the training images", (int(w), int(h)))]


def _first_unmet(side: int, needs: tuple[tuple[int, str], ...]) -> tuple[int, str] | None:
    """The first (smallest side, who needs it) of ``needs`` that ``side`` px falls short of; None when it suits all."""
    return next(((smallest, who) for smallest, who in needs if side < smallest), None)


def check_train_sizes(ds: Dataset, batch_size: int, multiple: int, arch: str,
                      minimum: tuple[int, str] = (1, ""), *more: tuple[int, str]) -> None:
    """Batches need one image size; the networks (``arch``) need sizes divisible by ``multiple``, and at least
    ``minimum`` = (side, the network that needs it), then each of ``more`` (needs that are not a network's,
    such as a loss's; checked after the networks', in order)."""
    if batch_size > 1:
        check_same_size(ds)
    for path, (w, h) in _output_sizes(ds):
        if w % multiple or h % multiple:
            raise SrpkdError(
                f"{path} gives {w}x{h} training images, but {arch} needs sizes divisible by {multiple} "
                f"(set --size / data.crop_size to a multiple of {multiple}, or a resizing preprocess)"
            )
        short = _first_unmet(min(w, h), (minimum, *more))
        if short:
            smallest, needs = short
            raise SrpkdError(
                f"{path} gives {w}x{h} training images, too small for {needs}: it needs at least "
                f"{smallest}x{smallest} (set --size / data.crop_size to {smallest} or more)"
            )


def check_square(size: int, multiple: int, arch: str, minimum: tuple[int, str] = (1, ""),
                 *more: tuple[int, str]) -> None:
    """The squares of progressive resolution (``optim.progressive_crop``) must suit the networks and the losses
    as a training image must (:func:`check_train_sizes`)."""
    if size % multiple:
        raise SrpkdError(f"optim.progressive_crop is {size}, but {arch} needs sizes divisible by {multiple}")
    short = _first_unmet(size, (minimum, *more))
    if short:
        raise SrpkdError(f"optim.progressive_crop is {size}, too small for {short[1]}: it needs at least {short[0]}")


def eval_batch(eval_set: SeededDataset, n: int, multiple: int, arch: str, minimum: tuple[int, str] = (1, "")) -> dict:
    """The first ``n`` held-out items of one usable size (divisible by ``multiple``, at least ``minimum[0]``),
    as one batch."""
    items: list[dict] = []
    for i in range(len(eval_set)):
        item = eval_set[(0, i)]
        h, w = item["A"].shape[-2:]
        if h % multiple or w % multiple or (items and item["A"].shape != items[0]["A"].shape):
            continue
        if min(h, w) < minimum[0]:
            continue
        items.append(item)
        if len(items) >= max(1, n):
            break
    if not items:
        raise SrpkdError(f"no held-out image has a size divisible by {multiple} (needed by {arch}) and of at least "
                         f"{minimum[0]}x{minimum[0]}")
    return collate(items)
