"""The training tasks (``cfg.task``). Each builds its networks, optimisers and image pools and runs one step.

* ``paired`` (:class:`Pix2PixTask`): conditional GAN on (A, G(A)) + ``l1`` * L1(G(A), B).
* ``unpaired`` (:class:`CycleGANTask`): G: A->B, G_B: B->A, discriminators D
  (judges B images) and D_B (judges A images), cycle ``cycle``, identity
  ``identity * cycle``, image pools. ``directions: AtoB`` keeps only G and D:
  no cycle, identity L1(G(B), B) still applies when its weight is > 0.
* ``teacher_only`` (:class:`TeacherOnlyTask`): only input photos; the student
  learns from the teacher's outputs. Its conditional discriminator sees
  (A, teacher(A)) as real and (A, student(A)) as fake, so the GAN term pushes
  the student towards images the discriminator cannot tell from the teacher's.

With a teacher (``srpkd distill``) the KD terms of :mod:`srpkd.distill.kd` are
added to the generator loss: on G with teacher.checkpoint; in an unpaired task
also on G_B with teacher.checkpoint_B, the relation term there only when
``loss.srp_both`` (the paper's one-vs-both-generators ablation changes the
relation loss alone). A term with weight 0 is not computed. The discriminator
never sees KD terms.

``step(batch, backward)`` is pytorch-CycleGAN-and-pix2pix's
``optimize_parameters``: the generator update, then the discriminator update.
The loop hands in ``backward(losses, optimizer, params)``, which checks that
the losses are finite on every rank, back-propagates their sum, averages the
gradients over ranks and steps the optimiser. Losses are summed in the order
they are put in the dict, so that order is part of the result.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import torch
import torch.nn as nn

from ..config import Config, LossConfig, check_task_data
from ..errors import SrpkdError
from ..distill import TeacherOutput
from ..losses import GANLoss, ImagePool, random_corner
from . import dist
from .direction import Direction, attach_teacher, new_discriminator, new_generator

log = logging.getLogger("srpkd.train")

Backward = Callable[[dict, torch.optim.Optimizer, list], None]


def set_requires_grad(models, flag: bool) -> None:
    for m in models:
        if m is not None:
            for p in m.parameters():
                p.requires_grad_(flag)


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b).abs().mean()


class Task:
    """What every task has: its directions, optimisers, the GAN loss, and the device helpers."""

    conditional = True  # the discriminator judges (input, image) pairs
    has_targets = False  # the data's B images are ground truth for A (validated as L1/PSNR to the target)

    def __init__(self, cfg: Config, device: torch.device, distill: bool) -> None:
        self.cfg, self.device = cfg, device
        self.use_gan = cfg.loss.gan > 0
        self.gan_on = True  # the loop turns the GAN term off during a KD-only warm-up (loss.gan_start)
        self.train_crop = 0  # the loop sets optim.progressive_crop here for the first steps (progressive resolution)
        self.directions = self._build_directions(distill)
        self.student = self.directions[0]
        self.adapters = nn.ModuleDict(
            {d.name: d.kd.adapters for d in self.directions if d.kd is not None and len(d.kd.adapters)}
        )
        if cfg.channels_last:
            for m in self.networks().values():
                m.to(memory_format=torch.channels_last)
        for m in [*self.networks().values(), self.adapters]:
            dist.broadcast_module(m)
        o = cfg.optim
        self.g_params = [p for d in self.directions for p in d.G.parameters()] + list(self.adapters.parameters())
        self.optG = torch.optim.Adam(self.g_params, lr=o.lr, betas=(o.beta1, o.beta2))
        self.d_params = [p for d in self.directions if d.D is not None for p in d.D.parameters()]
        self.optD = torch.optim.Adam(self.d_params, lr=o.lr, betas=(o.beta1, o.beta2)) if self.use_gan else None
        self.gan_loss = GANLoss(cfg.loss.gan_mode).to(device) if self.use_gan else None
        for d in self.directions:  # forward callables (maybe compiled); state dicts come from the plain modules
            d.fG, d.fD = self._compile(d.G), self._compile(d.D)

    def direction_names(self) -> tuple[str, ...]:
        return ("A",)

    def teacher_for(self, name: str) -> tuple[str | None, LossConfig]:
        """The teacher spec and the loss weights of the KD terms of direction ``name``."""
        return self.cfg.teacher.checkpoint, self.cfg.loss

    def _build_directions(self, distill: bool) -> list[Direction]:
        # every generator, then every discriminator, then the teachers: the order the initial weights are drawn in
        cfg, dev = self.cfg, self.device
        names = self.direction_names()
        dirs = [Direction(n, new_generator(cfg.student, cfg.student.init if n == "A" else None).to(dev)) for n in names]
        if self.use_gan:
            for d in dirs:
                d.D = new_discriminator(cfg.discriminator, self.conditional).to(dev)
        if distill:
            for d in dirs:
                spec, loss = self.teacher_for(d.name)
                if spec:
                    attach_teacher(d, spec, loss, cfg, dev)
                else:
                    log.warning(f"no teacher.checkpoint{d.suffix}: G{d.suffix} is trained without KD terms")
        return dirs

    def _compile(self, m: nn.Module | None):
        if m is None or not self.cfg.compile:
            return m
        return torch.compile(m)

    # -- what the checkpoint holds (see srpkd.train.state)
    def generators(self) -> dict[str, nn.Module]:
        return {f"G{d.suffix}": d.G for d in self.directions}

    def networks(self) -> dict[str, nn.Module]:
        """Generators and discriminators by checkpoint name: G, G_B, D, D_B."""
        discriminators = {f"D{d.suffix}": d.D for d in self.directions if d.D is not None}
        return {**self.generators(), **discriminators}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {name: opt for name, opt in (("optG", self.optG), ("optD", self.optD)) if opt is not None}

    @property
    def pools(self) -> dict[str, ImagePool]:
        return {}

    @property
    def gan_active(self) -> bool:
        """This step has a GAN term (and a discriminator update)."""
        return self.use_gan and self.gan_on

    # -- helpers of a step
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16")

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def square(self, x: torch.Tensor, y: torch.Tensor | None, t: TeacherOutput | None
               ) -> tuple[torch.Tensor, torch.Tensor | None, TeacherOutput | None]:
        """Progressive resolution: one random ``train_crop`` square of the inputs, the targets and the teacher's
        view, at a multiple of the teacher's coarsest tap stride, so that the square's features are the cropped
        ones; drawn from torch's global generator (a resumed run draws the same). Unchanged when off."""
        size = self.train_crop
        h, w = x.shape[-2:]
        if not size or size >= min(h, w):
            return x, y, t
        align = max([1] + [h // f.shape[-2] for f in t.feats.values()]) if t is not None else 1
        top, left = random_corner(h, w, size, size, align)
        x = x[..., top:top + size, left:left + size]
        y = y[..., top:top + size, left:left + size] if y is not None else None
        return x, y, (t.crop(top, left, size) if t is not None else None)

    def step(self, batch: dict, backward: Backward) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Pix2PixTask(Task):
    """``paired``: one generator, a conditional discriminator on (A, image), L1 to the ground truth B."""

    has_targets = True

    def target(self, batch: dict) -> torch.Tensor | None:
        """The image D sees as real and L1 pulls towards: B here; None means the teacher's output."""
        return self.to_device(batch["B"])

    def step(self, batch: dict, backward: Backward) -> dict[str, torch.Tensor]:
        lw, d = self.cfg.loss, self.student
        x = self.to_device(batch["A"])
        y = self.target(batch)
        t = d.teacher_out(x, batch)
        x, y, t = self.square(x, y, t)
        set_requires_grad([d.D], False)
        with self.autocast():
            s_out, s_feats = d.generate(x)
            lg: dict[str, torch.Tensor] = {}
            if self.gan_active:
                pred = d.fD(torch.cat([x, s_out], 1))
                lg["G_gan"] = lw.gan * self.gan_loss(pred, True, for_discriminator=False)
            if y is not None and lw.l1 > 0:
                lg["G_l1"] = lw.l1 * _l1(s_out, y)
            lg.update(d.kd_losses(s_out, s_feats, t))
        backward(lg, self.optG, self.g_params)
        ld: dict[str, torch.Tensor] = {}
        if self.gan_active:
            set_requires_grad([d.D], True)
            real = y if y is not None else t.out
            with self.autocast():
                pr = d.fD(torch.cat([x, real.to(x.dtype)], 1))
                pf = d.fD(torch.cat([x, s_out.detach()], 1))
                ld["D_real"] = 0.5 * self.gan_loss(pr, True, for_discriminator=True)
                ld["D_fake"] = 0.5 * self.gan_loss(pf, False, for_discriminator=True)
            backward(ld, self.optD, self.d_params)
        return {**lg, **ld}


class TeacherOnlyTask(Pix2PixTask):
    """``teacher_only``: the pix2pix step with the teacher's output in place of B (and so no L1 term)."""

    has_targets = False

    def target(self, batch: dict) -> torch.Tensor | None:
        return None


class CycleGANTask(Task):
    """``unpaired``: unconditional discriminators, cycle and identity terms, image pools; one or two directions."""

    conditional = False

    def __init__(self, cfg: Config, device: torch.device, distill: bool) -> None:
        super().__init__(cfg, device, distill)
        if self.use_gan:
            for d in self.directions:
                d.pool = ImagePool(cfg.pool_size)

    def direction_names(self) -> tuple[str, ...]:
        return ("A", "B") if self.cfg.directions == "both" else ("A",)

    def teacher_for(self, name: str) -> tuple[str | None, LossConfig]:
        if name == "A":
            return super().teacher_for(name)
        loss = self.cfg.loss if self.cfg.loss.srp_both else dataclasses.replace(self.cfg.loss, srp=0.0)
        return self.cfg.teacher.checkpoint_B, loss

    @property
    def pools(self) -> dict[str, ImagePool]:
        """By the images they hold: direction A's fakes are B images."""
        return {"fake_B" if d.name == "A" else "fake_A": d.pool for d in self.directions if d.pool is not None}

    def step(self, batch: dict, backward: Backward) -> dict[str, torch.Tensor]:
        real_A, real_B = self.to_device(batch["A"]), self.to_device(batch["B"])
        discriminators = [d.D for d in self.directions]
        set_requires_grad(discriminators, False)
        with self.autocast():
            fakes, lg = self._generator_losses(real_A, real_B, batch)
        backward(lg, self.optG, self.g_params)
        ld: dict[str, torch.Tensor] = {}
        if self.gan_active:
            set_requires_grad(discriminators, True)
            with self.autocast():
                for d, real, fake in zip(self.directions, (real_B, real_A), fakes):
                    shown = d.pool.query(fake.detach())
                    ld[f"D{d.suffix}_real"] = 0.5 * self.gan_loss(d.fD(real), True, for_discriminator=True)
                    ld[f"D{d.suffix}_fake"] = 0.5 * self.gan_loss(d.fD(shown), False, for_discriminator=True)
            backward(ld, self.optD, self.d_params)
        return {**lg, **ld}

    def _generator_losses(self, real_A, real_B, batch) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """The fakes and G's terms, in summing order: cycle, identity, GAN, KD (A->B before B->A in each)."""
        lw = self.cfg.loss
        idt = lw.identity * lw.cycle
        A, B = self.directions[0], (self.directions[1] if len(self.directions) > 1 else None)
        outs = [A.generate(real_A)] + ([B.generate(real_B)] if B is not None else [])
        fakes = [out for out, _ in outs]
        lg: dict[str, torch.Tensor] = {}
        if B is not None and lw.cycle > 0:
            lg["cycle_A"] = lw.cycle * _l1(B.fG(fakes[0]), real_A)
            lg["cycle_B"] = lw.cycle * _l1(A.fG(fakes[1]), real_B)
        if idt > 0:
            lg["idt_A"] = idt * _l1(A.fG(real_B), real_B)
            if B is not None:
                lg["idt_B"] = idt * _l1(B.fG(real_A), real_A)
        if self.gan_active:
            for d, fake in zip(self.directions, fakes):
                lg[f"G_gan{d.suffix}"] = lw.gan * self.gan_loss(d.fD(fake), True, for_discriminator=False)
        for d, real, (fake, feats) in zip(self.directions, (real_A, real_B), outs):
            lg.update(d.kd_losses(fake, feats, d.teacher_out(real, batch)))
        return fakes, lg


TASKS: dict[str, type[Task]] = {"paired": Pix2PixTask, "unpaired": CycleGANTask, "teacher_only": TeacherOnlyTask}


def check_task(cfg: Config, distill: bool) -> None:
    """Stop before anything is built when the task cannot run as configured."""
    if distill and not cfg.teacher.checkpoint:
        raise SrpkdError("distill needs teacher.checkpoint (a srpkd checkpoint or builtin:vintagify); use --teacher")
    if cfg.task == "teacher_only" and not distill:
        raise SrpkdError("task teacher_only learns from a teacher: use 'srpkd distill', or task paired/unpaired")
    check_task_data(cfg.task, cfg.data.mode)


def build_task(cfg: Config, device: torch.device, distill: bool) -> Task:
    return TASKS[cfg.task](cfg, device, distill)
