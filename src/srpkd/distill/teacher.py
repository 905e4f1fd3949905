"""The frozen teacher: eval mode, no gradients, optional cache of its outputs and features.

Caching (``cache_teacher``) is only sound when a training item is the same
tensor every time it is drawn, i.e. the data transform is deterministic (fixed
crops, no flip). The cache is then filled once, before training, in fixed
chunks of the dataset in index order, so its content does not depend on the
batch order, on the rank or on where a resumed run restarts. Lookups are by
the dataset index that :class:`srpkd.train.data.SeededDataset` attaches.

For the taps in ``norm_taps`` (those of the factorized relation loss) the cache
also keeps the squared row norms of the teacher's relation matrix
(:func:`srpkd.losses.relation.relation_sq_norms`, H*W float64 per item),
returned as :attr:`TeacherOutput.sq_norms`: the relation loss then skips the
teacher's C_t x C_t Gram matrix on every step (measured in BENCHMARKS.md).

With a random training transform, ``cache_draws`` keeps the teacher's view of K
augmented draws per item on disk instead (:mod:`.draws`); lookups are then by
(draw, index).

Teachers are loaded from a spec (``builtin:vintagify``, a checkpoint or a run
folder) by :func:`srpkd.assets.resolve_teacher`, the one loader that training,
``srpkd eval`` and ``srpkd report`` share.
"""
from __future__ import annotations

import logging
from typing import Iterable, NamedTuple

import torch
import torch.nn as nn
from tqdm import tqdm

from ..errors import SrpkdError
from ..losses.relation import relation_sq_norms
from .draws import DrawCache

log = logging.getLogger("srpkd.distill")


class TeacherOutput(NamedTuple):
    """The teacher's view of one batch."""

    out: torch.Tensor  # output images
    feats: dict[str, torch.Tensor]  # features by tap name
    sq_norms: dict[str, torch.Tensor]  # relation row norms by tap (``norm_taps``), only when read from the cache

    def crop(self, top: int, left: int, size: int) -> TeacherOutput:
        """The view of the ``size`` x ``size`` square at (``top``, ``left``) of the images: each tap's features
        cropped at its own scale (the square's corners and size must be multiples of every tap's stride), the
        relation row norms recomputed for the square's positions."""
        h = self.out.shape[-2]
        feats = {}
        for k, f in self.feats.items():
            s = h // f.shape[-2]
            if top % s or left % s or size % s:
                raise SrpkdError(f"internal: a {size} px square at ({top}, {left}) is not aligned to tap {k!r}'s "
                                 f"stride {s}")
            feats[k] = f[..., top // s:(top + size) // s, left // s:(left + size) // s]
        sq_norms = {k: relation_sq_norms(feats[k]) for k in self.sq_norms}
        return TeacherOutput(self.out[..., top:top + size, left:left + size], feats, sq_norms)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Teacher:
    """A frozen generator plus the taps the KD terms read from it."""

    def __init__(self, model: nn.Module, taps: Iterable[str], device: torch.device, channels_last: bool = False,
                 amp: str = "none", norm_taps: Iterable[str] = ()) -> None:
        self.model = freeze(model).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.taps = list(dict.fromkeys(taps))
        self.norm_taps = [t for t in dict.fromkeys(norm_taps) if t in self.taps]
        self.device = device
        self.channels_last = channels_last
        self.amp = amp
        self.cache: dict[str, torch.Tensor] | None = None
        self.draws: DrawCache | None = None  # cache_draws: the (draw, item) slots on disk
        self.draw_items = 0  # items per draw (slot = draw * draw_items + index)

    @property
    def generator(self) -> nn.Module:
        return self.model

    @torch.no_grad()
    def compute(self, x: torch.Tensor, amp: bool | None = None) -> TeacherOutput:
        """Run the teacher on ``x`` (no relation norms: the loss computes them from the features).

        ``amp``: bf16 autocast on or off; None follows the run's ``amp`` (held-out figures pass False).
        """
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16" if amp is None else amp):
            out, feats = self.model(x, taps=self.taps)
        return TeacherOutput(out.float(), {k: v.float() for k, v in feats.items()}, {})

    @torch.no_grad()
    def build_cache(self, dataset, chunk: int = 8, desc: str = "teacher cache") -> None:
        """Run the teacher once over every item of a deterministic dataset (index order, fixed chunks)."""
        n = len(dataset)
        self.cache = {}
        for start in tqdm(range(0, n, chunk), desc=desc, unit="chunk", leave=False, disable=None):
            x = torch.stack([dataset[i]["A"] for i in range(start, min(n, start + chunk))])
            o, f, _ = self.compute(x)
            parts = {"out": o, **{f"tap.{k}": f[k] for k in self.taps}}
            parts.update({f"sq_norms.{k}": relation_sq_norms(f[k]) for k in self.norm_taps})
            if not self.cache:
                # filled in place: chunks gathered in lists and then concatenated need the cache twice over at the
                # peak (two 800-photo runs side by side, 6.5 GiB of cache each, ran out of 24 GiB that way)
                self.cache = {k: v.new_empty((n, *v.shape[1:])) for k, v in parts.items()}
            for k, v in parts.items():
                self.cache[k][start:start + len(v)] = v
        self.cache_mib = sum(t.numel() * t.element_size() for t in self.cache.values()) / 2**20
        log.debug(f"teacher cache: {n} items, {self.cache_mib:.0f} MiB")

    def use_draws(self, cache: DrawCache, items: int) -> None:
        """Serve batches from ``cache``, slot ``draw * items + index`` (see :mod:`.draws`)."""
        self.draws, self.draw_items = cache, items

    def _from_draws(self, x: torch.Tensor, slots: torch.Tensor) -> TeacherOutput:
        """The batch's view from the draw cache; a batch with unfilled slots is computed whole and they are stored."""
        slots = slots.cpu()
        miss = self.draws.missing(slots)
        if bool(miss.any()):
            o, f, _ = self.compute(x)
            f = {k: v.half().float() for k, v in f.items()}  # the stored precision, also for the row norms
            new = {"out": o, **{f"tap.{k}": f[k] for k in self.taps}}
            new.update({f"sq_norms.{k}": relation_sq_norms(f[k]) for k in self.norm_taps})
            self.draws.put(slots[miss], {k: v[miss.to(v.device)] for k, v in new.items()})
        got = self.draws.get(slots, self.device)
        return TeacherOutput(got["out"], {k: got[f"tap.{k}"] for k in self.taps},
                             {k: got[f"sq_norms.{k}"] for k in self.norm_taps})

    def __call__(self, x: torch.Tensor, index: torch.Tensor | None = None,
                 draw: torch.Tensor | None = None) -> TeacherOutput:
        """Teacher output and features for a batch; from a cache when one is in use and ``index`` is given."""
        if self.draws is not None and index is not None and draw is not None:
            return self._from_draws(x, draw.cpu() * self.draw_items + index.cpu())
        if self.cache is not None and index is not None:
            idx = index.to(self.cache["out"].device)
            feats = {k: self.cache[f"tap.{k}"][idx] for k in self.taps}
            sq_norms = {k: self.cache[f"sq_norms.{k}"][idx] for k in self.norm_taps}
            return TeacherOutput(self.cache["out"][idx], feats, sq_norms)
        if self.cache is not None and index is None:
            raise SrpkdError("internal: cached teacher called without dataset indices")
        return self.compute(x)
