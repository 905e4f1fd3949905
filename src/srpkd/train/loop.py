"""One training loop for ``srpkd train`` (no teacher) and ``srpkd distill`` (frozen teacher + KD terms).

Tasks (``cfg.task``):

* ``paired`` (pix2pix): conditional GAN on (A, G(A)) + ``l1`` * L1(G(A), B).
* ``unpaired`` (CycleGAN): G: A->B, G_B: B->A, discriminators D (judges B
  images) and D_B (judges A images), cycle ``cycle``, identity
  ``identity * cycle``, image pools. ``directions: AtoB`` keeps only G and D:
  no cycle, identity L1(G(B), B) still applies when its weight is > 0.
* ``teacher_only``: only input photos; the student learns from the teacher's
  outputs. Its conditional discriminator sees (A, teacher(A)) as real and
  (A, student(A)) as fake, so the GAN term pushes the student towards images
  the discriminator cannot tell from the teacher's.

With a teacher (``distill``) the KD terms of :mod:`srpkd.distill.kd` are added
to the generator loss: on G with teacher.checkpoint; in an unpaired task also
on G_B with teacher.checkpoint_B, the relation term there only when
``loss.srp_both`` (the paper's one-vs-both-generators ablation changes the
relation loss alone). A term with weight 0 is not computed. The discriminator
never sees KD terms.

The run folder layout (read by ``srpkd eval`` / ``srpkd report``)::

    runs/<name>/config.yaml, log.jsonl, tb/, samples.png, student.safetensors
    [student_B.safetensors], checkpoints/{last,best,step_XXXXXXX}.safetensors
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .. import devices
from ..checkpoint import generator_record, load_state_strict, load_tensors, save_generator, save_tensors
from ..config import Config, save_config, to_dict
from ..errors import SrpkdError
from . import dist
from .data import SeededDataset, batches_per_epoch, collate, iterate
from .schedule import LinearDecay
from .state import flatten_optimizer, prefixed, rng_state, set_rng_state, take, unflatten_optimizer

log = logging.getLogger("srpkd.train")


class NonFiniteLoss(SrpkdError):
    """A loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    """:func:`srpkd.devices.resolve_device`, with this torchrun process's GPU for a bare ``cuda``."""
    return devices.resolve_device(name, dist.local_rank() if dist.env_world_size() > 1 else None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(device: torch.device) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # reflection-pad backward has no deterministic CUDA kernel: warn there instead of failing
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def set_requires_grad(models, flag: bool) -> None:
    for m in models:
        if m is not None:
            for p in m.parameters():
                p.requires_grad_(flag)


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _build_dataset(cfg: Config, split: str, train: bool):
    from ..data.datasets import build_dataset

    d = cfg.data
    fixed = d.fixed_crops and train and d.mode == "builtin"  # folders: deterministic = fixed preprocess, no flip
    kwargs = dict(
        mode=d.mode, root=d.root, split=split, direction=d.direction, load_size=d.load_size, crop_size=d.crop_size,
        preprocess=d.preprocess, flip=d.flip if train else False, serial=d.serial if train else True,
        max_images=d.max_images if train else None, fixed=fixed,
    )
    return build_dataset(**kwargs)


def _is_deterministic(ds) -> bool:
    flag = getattr(ds, "deterministic", None)
    if flag is None:
        flag = getattr(getattr(ds, "transform", None), "deterministic", False)
    return bool(flag)


class Trainer:
    """Build everything from a :class:`Config`, then :meth:`run`."""

    def __init__(self, cfg: Config, distill: bool, run_dir: Path, resume: bool = False, quiet: bool = False) -> None:
        self.cfg = cfg
        self.distill = distill
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.quiet = quiet
        self.stop_signal: int | None = None
        self._t_start = time.time()
        self.time_limited: int | None = None  # the planned steps when time_limit ended training early
        self.device = resolve_device(cfg.device)
        dist.init(self.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            set_deterministic(self.device)
        seed_everything(cfg.seed)
        self._check_task()
        self._build_data()
        self._build_models()
        seed_everything(cfg.seed + 1000 * self.rank)  # per-rank stream for dropout / pools
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.elapsed_before = 0.0
        if resume:
            self._load_state(self.run_dir / "checkpoints" / "last.safetensors")

    # ------------------------------------------------------------------ setup
    def _check_task(self) -> None:
        cfg = self.cfg
        if self.distill and not cfg.teacher.checkpoint:
            raise SrpkdError("distill needs teacher.checkpoint (a srpkd checkpoint or builtin:vintagify); use --teacher")
        if cfg.task == "teacher_only" and not self.distill:
            raise SrpkdError("task teacher_only learns from a teacher: use 'srpkd distill', or task paired/unpaired")
        if cfg.task == "paired" and cfg.data.mode != "aligned":
            raise SrpkdError(f"task paired needs data.mode aligned (A|B images), got {cfg.data.mode}")
        if cfg.task == "unpaired" and cfg.data.mode != "unaligned":
            raise SrpkdError(f"task unpaired needs data.mode unaligned (trainA/trainB folders), got {cfg.data.mode}")
        self.both = cfg.task == "unpaired" and cfg.directions == "both"

    def _build_data(self) -> None:
        cfg = self.cfg
        self.train_set = _build_dataset(cfg, cfg.data.train_split, train=True)
        self.data = SeededDataset(self.train_set, cfg.seed)
        self.deterministic_data = _is_deterministic(self.train_set)
        self.bpe = batches_per_epoch(len(self.data), cfg.optim.batch_size, self.world)
        self.total_steps = cfg.optim.steps or cfg.optim.epochs * self.bpe
        try:
            test_set = _build_dataset(cfg, cfg.data.test_split, train=False)
        except SrpkdError as e:
            log.warning(f"no held-out set ({e}); validation uses training images")
            test_set = _build_dataset(cfg, cfg.data.train_split, train=False)
        self.test_set = test_set
        self.eval_set = SeededDataset(test_set, cfg.seed)

    def _output_sizes(self, ds) -> list[tuple[str, tuple[int, int]]]:
        if hasattr(ds, "sizes") and hasattr(ds, "transform"):
            return [(str(p), ds.transform.output_size(sz)) for p, sz in ds.sizes()]
        h, w = ds[0]["A"].shape[-2:]
        return [("the training images", (int(w), int(h)))]

    def _check_sizes(self, multiple: int, arch: str) -> None:
        """Batches need one image size; the generators need sizes divisible by their stride."""
        from ..data.datasets import check_same_size

        if self.cfg.optim.batch_size > 1:
            check_same_size(self.train_set)
        for path, (w, h) in self._output_sizes(self.train_set):
            if w % multiple or h % multiple:
                raise SrpkdError(
                    f"{path} gives {w}x{h} training images, but {arch} needs sizes divisible by {multiple} "
                    f"(set --size / data.crop_size to a multiple of {multiple}, or a resizing preprocess)"
                )
        # held-out images: the first eval_images items of one usable size
        items = []
        for i in range(len(self.eval_set)):
            item = self.eval_set[(0, i)]
            h, w = item["A"].shape[-2:]
            if h % multiple or w % multiple or (items and item["A"].shape != items[0]["A"].shape):
                continue
            items.append(item)
            if len(items) >= max(1, self.cfg.eval_images):
                break
        if not items:
            raise SrpkdError(f"no held-out image has a size divisible by {multiple} (needed by {arch})")
        self.eval_batch = collate(items)

    def _new_generator(self, init: str | None = None) -> nn.Module:
        from ..checkpoint import load_generator
        from ..models import create_generator, init_weights

        s = self.cfg.student
        G = create_generator(s.arch, ngf=s.ngf, norm=s.norm, dropout=s.dropout, **s.kwargs)
        init_weights(G)
        if init:
            src = load_generator(init)
            load_state_strict(G, src.state_dict(), init)
        return G

    def _build_models(self) -> None:
        from ..models import create_discriminator, init_weights

        cfg = self.cfg
        dev = self.device
        cond = cfg.task in ("paired", "teacher_only")
        self.G = self._new_generator(cfg.student.init).to(dev)
        self.G_B = self._new_generator().to(dev) if self.both else None
        self.use_gan = cfg.loss.gan > 0
        dcfg = cfg.discriminator

        def new_d():
            D = create_discriminator(dcfg.arch, in_channels=6 if cond else 3, ndf=dcfg.ndf, n_layers=dcfg.n_layers,
                                     norm=dcfg.norm)
            return init_weights(D).to(dev)

        self.D = new_d() if self.use_gan else None
        self.D_B = new_d() if self.use_gan and self.both else None

        # teachers and KD terms
        self.teacher = self.teacher_B = None
        self.kd = self.kd_B = None
        from ..distill import KDTerms, Teacher, load_teacher

        if self.distill:
            t = load_teacher(cfg.teacher.checkpoint)
            self.kd = KDTerms(cfg.loss, t.to(dev), self.G, label="").to(dev)
            self.teacher = Teacher(t, self.kd.tap_names, dev, cfg.channels_last, cfg.amp,
                                   norm_taps=self.kd.relation_norm_taps)
            if self.both:
                if cfg.teacher.checkpoint_B:
                    tb = load_teacher(cfg.teacher.checkpoint_B)
                    loss_b = cfg.loss if cfg.loss.srp_both else dataclasses.replace(cfg.loss, srp=0.0)
                    self.kd_B = KDTerms(loss_b, tb.to(dev), self.G_B, label="_B").to(dev)
                    self.teacher_B = Teacher(tb, self.kd_B.tap_names, dev, cfg.channels_last, cfg.amp,
                                             norm_taps=self.kd_B.relation_norm_taps)
                else:
                    log.warning("no teacher.checkpoint_B: G_B is trained without KD terms")
        self.adapters = nn.ModuleDict()
        if self.kd is not None and len(self.kd.adapters):
            self.adapters["A"] = self.kd.adapters
        if self.kd_B is not None and len(self.kd_B.adapters):
            self.adapters["B"] = self.kd_B.adapters

        if cfg.channels_last:
            for m in (self.G, self.G_B, self.D, self.D_B):
                if m is not None:
                    m.to(memory_format=torch.channels_last)
        for m in (self.G, self.G_B, self.D, self.D_B, self.adapters):
            if m is not None:
                dist.broadcast_module(m)

        o = cfg.optim
        g_params = list(self.G.parameters()) + (list(self.G_B.parameters()) if self.G_B is not None else [])
        g_params += list(self.adapters.parameters())
        self.g_params = g_params
        self.optG = torch.optim.Adam(g_params, lr=o.lr, betas=(o.beta1, o.beta2))
        self.d_params = []
        self.optD = None
        if self.use_gan:
            self.d_params = list(self.D.parameters()) + (list(self.D_B.parameters()) if self.D_B is not None else [])
            self.optD = torch.optim.Adam(self.d_params, lr=o.lr, betas=(o.beta1, o.beta2))
        self.sched = LinearDecay(o.lr, self.total_steps, o.decay_fraction)

        from ..losses import GANLoss, ImagePool

        self.gan_loss = GANLoss(cfg.loss.gan_mode).to(dev) if self.use_gan else None
        self.pools: dict[str, Any] = {}
        if cfg.task == "unpaired" and self.use_gan:
            self.pools["fake_B"] = ImagePool(cfg.pool_size)
            if self.both:
                self.pools["fake_A"] = ImagePool(cfg.pool_size)

        nets = [m for m in (self.G, self.teacher and self.teacher.generator, self.teacher_B and self.teacher_B.generator) if m is not None]
        multiple = 1
        for m in nets:
            k = int(getattr(m, "size_multiple", 1))
            multiple = multiple * k // math.gcd(multiple, k)
        self._check_sizes(multiple, " and ".join(dict.fromkeys(getattr(m, "arch", "?") for m in nets)))

        # forward callables (maybe compiled); state dicts always come from the plain modules
        self.fG = self._compile(self.G)
        self.fG_B = self._compile(self.G_B)
        self.fD = self._compile(self.D)
        self.fD_B = self._compile(self.D_B)

    def _compile(self, m):
        if m is None or not self.cfg.compile:
            return m
        return torch.compile(m)

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16")

    def _to(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def _gen(G, x, taps):
        if taps:
            return G(x, taps=taps)
        return G(x), {}

    @staticmethod
    def _teacher_out(teacher, x, batch):
        """The teacher's output and features for the batch (from the cache, by dataset index, when it is filled)."""
        return teacher(x, batch["index"] if teacher.cache is not None else None)

    def _check_finite(self, losses: dict[str, torch.Tensor], step: int) -> None:
        bad = None
        if losses:
            vals = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
            if not bool(torch.isfinite(vals).all()):
                for (name, v), f in zip(losses.items(), vals.tolist()):
                    if not math.isfinite(f):
                        bad = (name, f)
                        break
        if dist.any_flag(bad is not None, self.device):
            last = self.run_dir / "checkpoints" / "last.safetensors"
            kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written"
            what = f"loss {bad[0]} is {bad[1]}" if bad else "a loss is not finite on another rank"
            raise NonFiniteLoss(f"{what} at step {step + 1}: stopping ({kept})")

    def _backward_step(self, losses, opt, params, step):
        self._check_finite(losses, step)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        dist.all_reduce_grads(params)
        opt.step()

    # ------------------------------------------------------------------ one step per task
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        task = self.cfg.task
        if task == "unpaired":
            losses = self._step_unpaired(batch, step)
        else:
            losses = self._step_conditional(batch, step)
        return {k: float(v.detach()) for k, v in losses.items()}

    def _step_conditional(self, batch, step):
        """paired and teacher_only: one generator, conditional discriminator on (A, image)."""
        cfg = self.cfg
        lw = cfg.loss
        x = self._to(batch["A"])
        y = self._to(batch["B"]) if cfg.task == "paired" else None
        t_out = t_feats = None
        if self.teacher is not None:
            t_out, t_feats = self._teacher_out(self.teacher, x, batch)
        taps = self.kd.tap_names if self.kd is not None else []
        set_requires_grad([self.D], False)
        with self._autocast():
            s_out, s_feats = self._gen(self.fG, x, taps)
            lg: dict[str, torch.Tensor] = {}
            if self.use_gan:
                pred = self.fD(torch.cat([x, s_out], 1))
                lg["G_gan"] = lw.gan * self.gan_loss(pred, True, for_discriminator=False)
            if y is not None and lw.l1 > 0:
                lg["G_l1"] = lw.l1 * (s_out.float() - y).abs().mean()
            if self.kd is not None:
                lg.update(self.kd(s_out.float(), {k: v.float() for k, v in s_feats.items()}, t_out, t_feats))
        self._backward_step(lg, self.optG, self.g_params, step)
        ld: dict[str, torch.Tensor] = {}
        if self.use_gan:
            set_requires_grad([self.D], True)
            real = y if y is not None else t_out
            with self._autocast():
                pr = self.fD(torch.cat([x, real.to(x.dtype)], 1))
                pf = self.fD(torch.cat([x, s_out.detach()], 1))
                ld["D_real"] = 0.5 * self.gan_loss(pr, True, for_discriminator=True)
                ld["D_fake"] = 0.5 * self.gan_loss(pf, False, for_discriminator=True)
            self._backward_step(ld, self.optD, self.d_params, step)
        return {**lg, **ld}

    def _step_unpaired(self, batch, step):
        cfg = self.cfg
        lw = cfg.loss
        real_A, real_B = self._to(batch["A"]), self._to(batch["B"])
        idt_w = lw.identity * lw.cycle
        taps_A = self.kd.tap_names if self.kd is not None else []
        taps_B = self.kd_B.tap_names if self.kd_B is not None else []
        set_requires_grad([self.D, self.D_B], False)
        lg: dict[str, torch.Tensor] = {}
        with self._autocast():
            fake_B, f_A = self._gen(self.fG, real_A, taps_A)
            if self.both:
                fake_A, f_B = self._gen(self.fG_B, real_B, taps_B)
                if lw.cycle > 0:
                    lg["cycle_A"] = lw.cycle * (self.fG_B(fake_B).float() - real_A).abs().mean()
                    lg["cycle_B"] = lw.cycle * (self.fG(fake_A).float() - real_B).abs().mean()
                if idt_w > 0:
                    lg["idt_A"] = idt_w * (self.fG(real_B).float() - real_B).abs().mean()
                    lg["idt_B"] = idt_w * (self.fG_B(real_A).float() - real_A).abs().mean()
            elif idt_w > 0:
                lg["idt_A"] = idt_w * (self.fG(real_B).float() - real_B).abs().mean()
            if self.use_gan:
                lg["G_gan"] = lw.gan * self.gan_loss(self.fD(fake_B), True, for_discriminator=False)
                if self.both:
                    lg["G_gan_B"] = lw.gan * self.gan_loss(self.fD_B(fake_A), True, for_discriminator=False)
            if self.kd is not None:
                t_out, t_feats = self._teacher_out(self.teacher, real_A, batch)
                lg.update(self.kd(fake_B.float(), {k: v.float() for k, v in f_A.items()}, t_out, t_feats))
            if self.kd_B is not None:
                t_out, t_feats = self._teacher_out(self.teacher_B, real_B, batch)
                lg.update(self.kd_B(fake_A.float(), {k: v.float() for k, v in f_B.items()}, t_out, t_feats))
        self._backward_step(lg, self.optG, self.g_params, step)
        ld: dict[str, torch.Tensor] = {}
        if self.use_gan:
            set_requires_grad([self.D, self.D_B], True)
            with self._autocast():
                fb = self.pools["fake_B"].query(fake_B.detach())
                ld["D_real"] = 0.5 * self.gan_loss(self.fD(real_B), True, for_discriminator=True)
                ld["D_fake"] = 0.5 * self.gan_loss(self.fD(fb), False, for_discriminator=True)
                if self.both:
                    fa = self.pools["fake_A"].query(fake_A.detach())
                    ld["D_B_real"] = 0.5 * self.gan_loss(self.fD_B(real_A), True, for_discriminator=True)
                    ld["D_B_fake"] = 0.5 * self.gan_loss(self.fD_B(fa), False, for_discriminator=True)
            self._backward_step(ld, self.optD, self.d_params, step)
        return {**lg, **ld}

    # ------------------------------------------------------------------ evaluation and samples
    @torch.no_grad()
    def _translate(self, G, x: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        was = G.training
        G.eval()
        outs = []
        try:
            for i in range(0, len(x), chunk):
                with self._autocast():
                    outs.append(G(self._to(x[i : i + chunk])).float().cpu())
        finally:
            G.train(was)
        return torch.cat(outs)

    def _eval_teacher(self) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        if getattr(self, "_eval_t", None) is None:
            outs = [self.teacher.compute(self.eval_batch["A"][i : i + 8])[0].cpu() for i in range(0, len(self.eval_batch["A"]), 8)]
            self._eval_t = torch.cat(outs)
        return self._eval_t

    def evaluate(self) -> dict[str, float]:
        """Validation: student-to-teacher L1/PSNR (distill), L1 to ground truth (paired), cycle L1 (unpaired)."""
        from ..metrics.image import psnr

        xa = self.eval_batch["A"]
        s = self._translate(self.G, xa)
        out: dict[str, float] = {}
        t = self._eval_teacher()
        if t is not None:
            out["val/l1_to_teacher"] = float((s - t).abs().mean())
            out["val/psnr_to_teacher"] = float(psnr(s, t))
            out["metric"] = out["val/l1_to_teacher"]
        if "B" in self.eval_batch and self.cfg.task == "paired":
            out["val/l1_to_target"] = float((s - self.eval_batch["B"]).abs().mean())
            out["val/psnr_to_target"] = float(psnr(s, self.eval_batch["B"]))
            out.setdefault("metric", out["val/l1_to_target"])
        if self.G_B is not None:
            rec = self._translate(self.G_B, s)
            out["val/cycle_l1"] = float((rec - xa).abs().mean())
            out.setdefault("metric", out["val/cycle_l1"])
        self._last_eval_images = s
        return out

    def samples(self, n: int = 4) -> torch.Tensor:
        """Grid rows: input | teacher | student | target, on fixed held-out images; in [0, 1]."""
        xa = self.eval_batch["A"][:n]
        cols = [xa]
        t = self._eval_teacher()
        if t is not None:
            cols.append(t[:n])
        cols.append(self._translate(self.G, xa))
        if "B" in self.eval_batch and self.cfg.task == "paired":
            cols.append(self.eval_batch["B"][:n])
        rows = [torch.cat([c[i] for c in cols], dim=2) for i in range(len(xa))]
        grid = torch.cat(rows, dim=1)
        return ((grid.clamp(-1, 1) + 1) / 2).cpu()

    def write_samples(self, tb=None) -> None:
        from PIL import Image

        grid = self.samples()
        arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        from ..checkpoint import atomic_path

        with atomic_path(self.run_dir / "samples.png") as tmp:
            Image.fromarray(arr).save(tmp, format="PNG")
        if tb is not None:
            tb.add_image("samples", grid, self.step)

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, nn.Module]:
        mods = {"G.": self.G, "G_B.": self.G_B, "D.": self.D, "D_B.": self.D_B}
        return {k: v for k, v in mods.items() if v is not None}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        for prefix, m in self._modules().items():
            tensors.update(prefixed(m, prefix))
        tensors.update(prefixed(self.adapters, "adapters."))
        opt_meta = {}
        for name, opt in (("optG", self.optG), ("optD", self.optD)):
            if opt is not None:
                t, m = flatten_optimizer(opt, name + ".")
                tensors.update(t)
                opt_meta[name] = m
        pools_meta = {}
        for name, pool in self.pools.items():
            sd = pool.state_dict()
            pools_meta[name] = {k: v for k, v in sd.items() if not isinstance(v, (torch.Tensor, list))}
            images = sd.get("images")
            if isinstance(images, torch.Tensor):
                tensors[f"pool.{name}.images"] = images
            elif isinstance(images, list):
                pools_meta[name]["n_images"] = len(images)
                for i, im in enumerate(images):
                    tensors[f"pool.{name}.images.{i}"] = im
        rt, rm = rng_state()
        tensors.update(rt)
        gens = {p: generator_record(m) for p, m in (("G.", self.G), ("G_B.", self.G_B)) if m is not None}
        meta = {
            "format": 1, "kind": "training", "step": self.step, "epoch": self.step // self.bpe,
            "generators": gens, "generator_prefix": "G.", "optimizers": opt_meta, "scheduler": self.sched.state_dict(),
            "pools": pools_meta, "rng": rm, "best": self.best, "elapsed": self.elapsed(),
            "task": self.cfg.task, "distill": self.distill, "config": to_dict(self.cfg),
        }
        return tensors, meta

    def save(self, path: Path) -> None:
        tensors, meta = self.state()
        save_tensors(path, tensors, meta)

    def _load_state(self, path: Path) -> None:
        tensors, meta = load_tensors(path)
        if meta.get("kind") != "training":
            raise SrpkdError(f"{path} is not a training checkpoint")
        for prefix, m in self._modules().items():
            load_state_strict(m, take(tensors, prefix), f"{path} ({prefix[:-1]})")
        if len(self.adapters):
            load_state_strict(self.adapters, take(tensors, "adapters."), f"{path} (adapters)")
        for name, opt in (("optG", self.optG), ("optD", self.optD)):
            if opt is not None:
                unflatten_optimizer(opt, name + ".", tensors, meta["optimizers"][name])
        for name, pool in self.pools.items():
            pm = dict(meta.get("pools", {}).get(name, {}))
            if f"pool.{name}.images" in tensors:
                pm["images"] = tensors[f"pool.{name}.images"]
            else:
                pm["images"] = [tensors[f"pool.{name}.images.{i}"] for i in range(pm.pop("n_images", 0))]
            pool.load_state_dict(pm)
        set_rng_state(tensors, meta.get("rng", {}))
        self.step = int(meta["step"])
        self.best = meta.get("best")
        self.elapsed_before = float(meta.get("elapsed", 0.0))
        if self.step >= self.total_steps:
            log.info(f"the run already reached step {self.step} of {self.total_steps}")

    def _rotate(self) -> None:
        ck = self.run_dir / "checkpoints"
        steps = sorted(ck.glob("step_*.safetensors"))
        for old in steps[: max(0, len(steps) - self.cfg.keep_last)]:
            old.unlink(missing_ok=True)

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - getattr(self, "_t0", time.time()))

    # ------------------------------------------------------------------ signals
    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self.stop_signal is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum
            if self.main:
                print(f"\nsrpkd: {signal.Signals(signum).name} received: finishing step {self.step + 1} and saving",
                      flush=True)

        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handler)
        return old

    # ------------------------------------------------------------------ the loop
    def prepare_cache(self) -> str:
        """Fill the teacher cache when allowed; returns a line for the log."""
        cfg = self.cfg
        if self.teacher is None:
            return "teacher cache: no teacher"
        if not cfg.cache_teacher:
            return "teacher cache: off (cache_teacher: false)"
        if not self.deterministic_data:
            return "teacher cache: off (the training transform is random; set data.fixed_crops / a fixed preprocess and flip: false)"
        t0 = time.time()
        self.teacher.build_cache(self.data, desc="teacher cache A")
        if self.teacher_B is not None:
            tb = self.teacher_B
            n = len(self.data)
            view = [{"A": self.data[(0, i)]["B"]} for i in range(n)]
            tb.build_cache(view, desc="teacher cache B")
        mib = self.teacher.cache_mib + (self.teacher_B.cache_mib if self.teacher_B is not None else 0)
        return f"teacher cache: on ({len(self.data)} fixed training items, {mib:.0f} MiB, filled in {time.time() - t0:.1f} s)"

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        run_dir = self.run_dir
        self._t0 = time.time()
        tb = None
        if self.main:
            make_run_dir(run_dir)
            save_config(cfg, run_dir / "config.yaml")
            if self.resume:
                _truncate_log(run_dir / "log.jsonl", self.step)
            try:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(run_dir / "tb"))
            except Exception as e:  # tensorboard missing or broken: the run still works
                log.warning(f"tensorboard disabled: {e}")
        cache_line = self.prepare_cache()
        if self.main:
            log.info(cache_line)
        self.cache_line = cache_line
        old_handlers = self._install_signals()
        logf = open(run_dir / "log.jsonl", "a") if self.main else None
        bar = None
        start = self.step
        status = "done"
        try:
            if self.main and not self.quiet:
                from tqdm import tqdm

                bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True, disable=None)
            it = iterate(self.data, cfg.optim.batch_size, cfg.seed, self.step, self.rank, self.world, cfg.data.num_workers)
            acc: dict[str, float] = {}
            n_acc = 0
            t_step = time.time()
            while self.step < self.total_steps:
                epoch, batch = next(it)
                lr = self.sched.apply([o for o in (self.optG, self.optD) if o is not None], self.step)
                losses = self.train_step(batch, self.step)
                self.step += 1
                for k, v in losses.items():
                    acc[k] = acc.get(k, 0.0) + v
                n_acc += 1
                if cfg.time_limit and self.step < self.total_steps and dist.any_flag(
                    time.time() - self._t_start > 0.9 * cfg.time_limit, self.device
                ):  # 10% of the limit is left for the final evaluation, checkpoint, samples and report
                    log.warning(f"\nsrpkd: time_limit {cfg.time_limit:g} s: ending training at step {self.step} "
                                f"of {self.total_steps}")
                    self.time_limited = self.total_steps
                    self.total_steps = self.step
                last = self.step == self.total_steps
                if bar is not None:
                    bar.update(1)
                if self.main and (last or (cfg.log_every and self.step % cfg.log_every == 0)):
                    rec = {"step": self.step, "epoch": epoch, "lr": lr, "time": round(self.elapsed(), 3)}
                    rec.update({f"loss/{k}": v / n_acc for k, v in acc.items()})
                    rec["sec_per_step"] = (time.time() - t_step) / n_acc
                    logf.write(json.dumps(rec) + "\n")
                    logf.flush()
                    if tb is not None:
                        for k, v in rec.items():
                            if k.startswith("loss/") or k in ("lr", "sec_per_step"):
                                tb.add_scalar(k, v, self.step)
                    if bar is not None:
                        main = {k: v / n_acc for k, v in acc.items() if k in ("kd", "srp", "G_gan", "G_l1", "cycle_A", "D_fake")}
                        bar.set_postfix({k: f"{v:.3g}" for k, v in main.items()}, refresh=False)
                    acc, n_acc, t_step = {}, 0, time.time()
                if self.main and cfg.eval_every and self.step % cfg.eval_every == 0 and not last:
                    self._validate(logf, tb, epoch)
                if self.main and cfg.sample_every and self.step % cfg.sample_every == 0 and not last:
                    self.write_samples(tb)
                if self.main and cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and not last:
                    self.save(run_dir / "checkpoints" / f"step_{self.step:07d}.safetensors")
                    self._rotate()
                    self.save(run_dir / "checkpoints" / "last.safetensors")
                if dist.any_flag(self.stop_signal is not None, self.device):
                    if self.stop_signal is None:
                        self.stop_signal = signal.SIGTERM
                    status = "stopped"
                    break
            if self.main:
                if status == "done" and self.total_steps > start:
                    self._validate(logf, tb, self.step // self.bpe)
                self.save(run_dir / "checkpoints" / "last.safetensors")
                if status == "done":
                    save_generator(self.G, run_dir / "student.safetensors", run=run_dir.name, step=self.step)
                    if self.G_B is not None:
                        save_generator(self.G_B, run_dir / "student_B.safetensors", run=run_dir.name, step=self.step)
                    self.write_samples(tb)
        finally:
            if bar is not None:
                bar.close()
            if logf is not None:
                logf.close()
            if tb is not None:
                tb.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        dist.barrier()
        return {"status": status, "step": self.step, "signal": self.stop_signal, "run_dir": str(run_dir),
                "elapsed": self.elapsed()}

    def _validate(self, logf, tb, epoch: int) -> None:
        ev = self.evaluate()
        metric = ev.pop("metric", None)
        rec = {"step": self.step, "epoch": epoch, "time": round(self.elapsed(), 3), **ev}
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        if tb is not None:
            for k, v in ev.items():
                tb.add_scalar(k, v, self.step)
        self.last_eval = ev
        if metric is not None and (self.best is None or metric < self.best["value"]):
            name = next(k for k in ("val/l1_to_teacher", "val/l1_to_target", "val/cycle_l1") if k in ev)
            self.best = {"metric": name, "value": metric, "step": self.step}
            self.save(self.run_dir / "checkpoints" / "best.safetensors")


def make_run_dir(run_dir: Path) -> None:
    try:
        (Path(run_dir) / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SrpkdError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None


def _truncate_log(path: Path, step: int) -> None:
    """On resume: drop log lines past the checkpoint's step (they will be logged again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue
    from ..checkpoint import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("".join(l + "\n" for l in keep))
