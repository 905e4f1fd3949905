"""One translation direction of a task: its generator and everything that trains it.

A paired or teacher-only task has one direction, ``A`` (A->B: the student).
An unpaired task with ``directions: both`` adds ``B`` (B->A), CycleGAN's second
generator. Each direction has its own discriminator, teacher, KD terms and
image pool; names follow the direction, so ``A`` is stored as ``G.`` / ``D.``
and logs ``kd``, ``G_gan``, ``D_real``, while ``B`` is stored as ``G_B.`` /
``D_B.`` and logs ``kd_B``, ``G_gan_B``, ``D_B_real``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..assets import resolve_teacher
from ..checkpoint import load_generator, load_state_strict
from ..config import Config, DiscriminatorConfig, GeneratorConfig, LossConfig
from ..distill import KDTerms, Teacher, TeacherOutput
from ..losses import ImagePool
from ..models import create_discriminator, create_generator, init_weights


@dataclass(eq=False)
class Direction:
    """The bundle a task trains for one direction (``fG`` / ``fD`` are the forwards, compiled when asked)."""

    name: str  # "A" (A->B, the student) or "B" (B->A)
    G: nn.Module
    D: nn.Module | None = None  # judges this direction's outputs; None when loss.gan is 0
    teacher: Teacher | None = None
    kd: KDTerms | None = None  # present exactly when the teacher is
    pool: ImagePool | None = None  # unpaired: earlier fakes shown to D
    fG: Callable | None = None
    fD: Callable | None = None

    @property
    def suffix(self) -> str:
        """"" for A, "_B" for B: the suffix of this direction's checkpoint prefixes and loss names."""
        return "" if self.name == "A" else f"_{self.name}"

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The translation of ``x`` and the features the KD terms read (none without KD terms)."""
        taps = self.kd.tap_names if self.kd is not None else []
        if taps:
            return self.fG(x, taps=taps)
        return self.fG(x), {}

    def teacher_out(self, x: torch.Tensor, batch: dict) -> TeacherOutput | None:
        """The teacher's view of the batch (from its cache by dataset index, or its draw cache by (draw, index))."""
        t = self.teacher
        if t is None:
            return None
        if t.cache is None and t.draws is None:
            return t(x)
        return t(x, batch["index"], batch.get("draw"))

    def kd_losses(self, s_out: torch.Tensor, s_feats: dict[str, torch.Tensor],
                  t: TeacherOutput | None) -> dict[str, torch.Tensor]:
        """The weighted KD terms of this direction, computed in float32; {} without a teacher."""
        if self.kd is None:
            return {}
        return self.kd(s_out.float(), {k: v.float() for k, v in s_feats.items()}, t.out, t.feats, t.sq_norms)


def new_generator(cfg: GeneratorConfig, init: str | None = None) -> nn.Module:
    """A student-architecture generator: N(0, 0.02) init, or the weights of checkpoint ``init``."""
    G = create_generator(cfg.arch, ngf=cfg.ngf, norm=cfg.norm, dropout=cfg.dropout, **cfg.kwargs)
    init_weights(G)
    if init:
        load_state_strict(G, load_generator(init).state_dict(), init)
    return G


def new_discriminator(cfg: DiscriminatorConfig, conditional: bool) -> nn.Module:
    """A discriminator of 3-channel images, or of 6-channel (input, image) pairs when ``conditional``."""
    D = create_discriminator(cfg.arch, in_channels=6 if conditional else 3, ndf=cfg.ndf, n_layers=cfg.n_layers,
                             norm=cfg.norm)
    return init_weights(D)


def attach_teacher(d: Direction, spec: str, loss: LossConfig, cfg: Config, device: torch.device) -> None:
    """Load the frozen teacher of ``spec`` for direction ``d`` and the KD terms that compare ``d.G`` with it."""
    t = resolve_teacher(spec)
    d.kd = KDTerms(loss, t.to(device), d.G, label=d.suffix).to(device)
    d.teacher = Teacher(t, d.kd.tap_names, device, cfg.channels_last, cfg.amp, norm_taps=d.kd.relation_norm_taps)
