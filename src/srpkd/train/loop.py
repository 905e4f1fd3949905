"""One training loop for ``srpkd train`` (no teacher) and ``srpkd distill`` (frozen teacher + KD terms).

What a task trains and how one step goes is the task's (:mod:`srpkd.train.tasks`);
the loop keeps what every task shares: the data order and learning-rate
schedule, logging (:mod:`.runlog`), validation and samples (:mod:`.validation`),
checkpoints (:mod:`.state`), signals and the time limit. A run ends done (the
students and samples are written), stopped by a signal (the checkpoint is
written: resume with ``--resume``), or with an error.

The run folder's files (read by ``srpkd eval`` / ``srpkd report``) are named in :mod:`srpkd.run_folder`.
"""
from __future__ import annotations

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

from .. import devices, run_folder
from ..checkpoint import save_generator
from ..config import Config, save_config
from ..distill import check_derivable, derive_student
from ..errors import SrpkdError
from ..files import write_json
from ..metrics.latency import RUNTIMES, profile_model
from ..models.sizes import describe, min_input_size
from . import caches, dist
from .data import (SeededDataset, batches_per_epoch, check_square, check_train_sizes, eval_batch, is_deterministic,
                   iterate, run_dataset)
from .budget import TimeBudget
from .runlog import RunLog, make_run_dir, truncate_log
from .schedule import Schedule
from .state import restore_generators, restore_training_state, save_training_state
from .tasks import build_task, check_task
from .validation import Validation, save_grid

log = logging.getLogger("srpkd.train")

INITIAL_PLAN = 1000  # steps planned before a time budget has timed any (optim.time with optim.steps 0)
REPLAN_EVERY = 10  # steps between the time budget's plans
PROFILE_WARMUP, PROFILE_RUNS = 2, 10  # the end-of-run latency: a few seconds for the main job's teacher


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


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class Trainer:
    """Build the data and the task from a :class:`Config`, then :meth:`run`."""

    def __init__(self, cfg: Config, distill: bool, run_dir: Path, resume: bool = False, quiet: bool = False) -> None:
        self.cfg, self.distill, self.run_dir, self.resume, self.quiet = cfg, distill, Path(run_dir), resume, quiet
        self.stop_signal: int | None = None
        self._t_start = time.time()
        self._t0: float | None = None  # when run() began
        self.time_limited: int | None = None  # the planned steps when time_limit ended training early
        self.device = resolve_device(cfg.device)
        cfg.amp = devices.resolve_amp(cfg.amp, self.device)  # config.yaml records what the run used
        dist.init(self.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            set_deterministic(self.device)
        seed_everything(cfg.seed)
        check_task(cfg, distill)
        unknown = [r for r in cfg.profile_runtimes if r not in RUNTIMES]
        if unknown:
            raise SrpkdError(f"profile_runtimes: unknown runtime(s) {', '.join(map(str, unknown))}; "
                             f"choose from {', '.join(RUNTIMES)}")
        self._build_data()
        self.task = build_task(cfg, self.device, distill)
        self.eval_batch, val_batch = self._check_sizes()
        if cfg.student.derive != "none":
            if self.teacher is None:
                raise SrpkdError("student.derive ls starts the student from its teacher: srpkd distill with a "
                                 "teacher.checkpoint")
            check_derivable(self.teacher.generator, self.G)
        # the best checkpoint is chosen on data.val_split when there is one, and the run's figures are then
        # reported on the test split (self.test); without one, both are the test split, as before
        self.validation = Validation(self.task, val_batch if val_batch is not None else self.eval_batch)
        self.test = Validation(self.task, self.eval_batch, prefix="test/") if val_batch is not None else None
        o = cfg.optim
        self.budget = TimeBudget(o.time) if o.time else None
        self.sched = Schedule(o.lr, self.total_steps, o.decay_fraction, o.schedule, o.warmup)
        seed_everything(cfg.seed + 1000 * self.rank)  # per-rank stream for dropout / pools
        self.runlog = RunLog(self.run_dir, active=self.main)
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.last_eval: dict[str, float] | None = None
        self.final_eval: dict[str, float] | None = None  # the finished run's held-out figures (test split)
        self.elapsed_before = 0.0
        if resume:
            self._restore(self.run_dir / run_folder.LAST)

    def set_run_dir(self, run_dir: Path) -> None:
        """The folder this run writes (the name claimed after every check has passed)."""
        self.run_dir = Path(run_dir)
        self.runlog.run_dir = self.run_dir

    # the student direction's parts (CLI summary, benchmarks, tests)
    G = property(lambda self: self.task.student.G)
    D = property(lambda self: self.task.student.D)
    teacher = property(lambda self: self.task.student.teacher)
    adapters = property(lambda self: self.task.adapters)
    optG = property(lambda self: self.task.optG)
    optD = property(lambda self: self.task.optD)

    def _build_data(self) -> None:
        cfg = self.cfg
        self.train_set = run_dataset(cfg, cfg.data.train_split, train=True)
        self.deterministic_data = is_deterministic(self.train_set)
        # K augmented draws per item only where the draw cache serves them: distillation on random crops / flips
        self.draws = cfg.cache_draws if self.distill and cfg.cache_teacher and not self.deterministic_data else 0
        self.data = SeededDataset(self.train_set, cfg.seed, draws=self.draws)
        self.bpe = batches_per_epoch(len(self.data), cfg.optim.batch_size, self.world)
        # with a time budget (optim.time) this is only the first plan, re-planned from the measured step time
        self.total_steps = cfg.optim.steps or cfg.optim.epochs * self.bpe or INITIAL_PLAN
        self.val_set, self.val_missing = None, None
        if cfg.data.val_split:
            try:
                self.val_set = SeededDataset(run_dataset(cfg, cfg.data.val_split, train=False), cfg.seed)
            except SrpkdError as e:  # said when training starts, not before an error in the set-up
                self.val_missing = (f"no validation split ({e}); the last student is kept and validation uses "
                                    f"the held-out set")
        try:
            test_set = run_dataset(cfg, cfg.data.test_split, train=False)
        except SrpkdError as e:
            log.warning(f"no held-out set ({e}); validation uses training images")
            test_set = run_dataset(cfg, cfg.data.train_split, train=False)
        self.eval_set = SeededDataset(test_set, cfg.seed)

    def _check_sizes(self) -> tuple[dict, dict | None]:
        """Check the training images against the networks' size multiple; returns the test and val batches."""
        nets = [self.G] + [d.teacher.generator for d in self.task.directions if d.teacher is not None]
        multiple = 1
        for m in nets:
            k = int(getattr(m, "size_multiple", 1))
            multiple = multiple * k // math.gcd(multiple, k)
        arch = " and ".join(dict.fromkeys(getattr(m, "arch", "?") for m in nets))
        # the smallest input each network takes: the generators see the images, the discriminators their outputs
        roles = [("the student", self.G)] + [("the teacher", m) for m in nets[1:]]
        roles += [("the discriminator", d.D) for d in self.task.directions if getattr(d, "D", None) is not None]
        smallest, role, net = max(((min_input_size(m), role, m) for role, m in roles), key=lambda r: r[0])
        minimum = (smallest, f"{role} {describe(net)}")
        # the perceptual KD term's metric needs 32 px of the training images (not of the held-out ones)
        perc = any(d.kd is not None and d.kd.active("perc") for d in self.task.directions)
        more = [(32, "perceptual KD (loss.perc, ST-LPIPS; loss.perc=0 turns it off)")] if perc else []
        check_train_sizes(self.train_set, self.cfg.optim.batch_size, multiple, arch, minimum, *more)
        if self.cfg.optim.progressive_crop:
            check_square(self.cfg.optim.progressive_crop, multiple, arch, minimum, *more)
        val = (eval_batch(self.val_set, self.cfg.eval_images, multiple, arch, minimum)
               if self.val_set is not None else None)
        return eval_batch(self.eval_set, self.cfg.eval_images, multiple, arch, minimum), val

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        losses = self.task.step(batch, lambda terms, opt, params: self._backward_step(terms, opt, params, step))
        return {k: float(v.detach()) for k, v in losses.items()}

    def _backward_step(self, losses, opt, params, step) -> None:
        """Check the losses on every rank, back-propagate their sum, average gradients over ranks, step ``opt``."""
        self._check_finite(losses, step)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        dist.all_reduce_grads(params)
        opt.step()

    def _check_finite(self, losses: dict[str, torch.Tensor], step: int) -> None:
        bad = None
        if losses:
            vals = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
            if not bool(torch.isfinite(vals).all()):
                bad = next((name, f) for name, f in zip(losses, vals.tolist()) if not math.isfinite(f))
        if dist.any_flag(bad is not None, self.device):
            last = self.run_dir / run_folder.LAST
            kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written"
            what = f"loss {bad[0]} is {bad[1]}" if bad else "a loss is not finite on another rank"
            raise NonFiniteLoss(f"{what} at step {step + 1}: stopping ({kept})")

    # ------------------------------------------------------------------ validation, samples, checkpoints
    def evaluate(self) -> dict[str, float]:
        return self.validation.evaluate()

    def write_samples(self) -> None:
        held_out = self.test or self.validation  # the held-out test photos the figures are on
        grid = held_out.samples()
        save_grid(grid, self.run_dir / run_folder.SAMPLES, held_out.sample_columns())
        self.runlog.add_image("samples", grid, self.step)

    def _validate(self, epoch: int, final: bool = False) -> None:
        """Measure the held-out images, log it, keep the best checkpoint. ``final``: the last validation of a
        finished run, which also measures ST-LPIPS when its split is the one the run is reported on."""
        ev = self.evaluate()
        metric = ev.pop("metric", None)
        if self.test is not None and self.cfg.eval_test:
            ev.update({k: v for k, v in self.test.evaluate().items() if k != "metric"})
        if final and self.test is None:
            ev.update(self.validation.perceptual())
        self.runlog.write_validation(self.step, epoch, self.elapsed(), ev)
        self.last_eval = ev
        if metric is not None and (self.best is None or metric < self.best["value"]):
            self.best = {"metric": self.validation.metric_name(ev), "value": metric, "step": self.step}
            self.save(self.run_dir / run_folder.BEST)

    def save(self, path: Path) -> None:
        caches.flush(self.task)  # the slots filled before this checkpoint are on disk when it is (see .draws)
        save_training_state(path, self.task, self.cfg, self.distill, step=self.step, epoch=self.step // self.bpe,
                            scheduler=self.sched.state_dict(), best=self.best, elapsed=self.elapsed())

    def _restore(self, path: Path) -> None:
        meta = restore_training_state(path, self.task)
        self.step = int(meta["step"])
        self.best = meta.get("best")
        self.elapsed_before = float(meta.get("elapsed", 0.0))
        if self.budget is not None:  # continue the time budget's last plan until it re-plans
            self.total_steps = max(self.step, int(meta.get("scheduler", {}).get("total", self.total_steps)))
            self.sched.set_total(self.total_steps)
        if self.step >= self.total_steps:
            log.info(f"the run already reached step {self.step} of {self.total_steps}")

    def _rotate(self) -> None:
        steps = sorted((self.run_dir / run_folder.CHECKPOINTS).glob(run_folder.STEP_GLOB))
        for old in steps[: max(0, len(steps) - self.cfg.keep_last)]:
            old.unlink(missing_ok=True)

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self._t0 if self._t0 is not None else 0.0)

    # ------------------------------------------------------------------ the run
    def prepare_cache(self) -> str:
        """Set up the teachers' caches (:mod:`.caches`); returns a line for the log."""
        return caches.prepare(self.task, self.data, self.cfg.cache_teacher, self.deterministic_data, self.draws,
                              self.run_dir, self.step if self.resume else 0, self.cfg.optim.batch_size, self.cfg.seed,
                              self.rank, self.world)

    def derive(self) -> str:
        """``student.derive ls``: the student's start from its teacher (:mod:`srpkd.distill.derive`), on training
        images evenly spread over the set; the same on every rank, and broadcast all the same. Returns a log line."""
        t0 = time.time()
        n = min(self.cfg.student.derive_images, len(self.data))
        x = torch.stack([self.data[(0, int(i))]["A"] for i in torch.linspace(0, len(self.data) - 1, n).round()])
        fit = derive_student(self.teacher.generator, self.G, x.to(self.device))
        dist.broadcast_module(self.G)
        return (f"student derived from the teacher on {n} training images in {time.time() - t0:.1f} s: PSNR to the "
                f"teacher there {fit['psnr_after']:.2f} dB (its random start: {fit['psnr_before']:.2f} dB)")

    def run(self) -> dict[str, Any]:
        self._t0 = time.time()
        if self.main:
            self._open_run_folder()
        self.cache_line = self.prepare_cache()
        if self.main:
            log.info(self.cache_line)
            if self.val_missing:
                log.warning(self.val_missing)
        if self.cfg.student.derive != "none" and not self.resume:
            line = self.derive()
            if self.main:
                log.info(line)
        old_handlers = self._install_signals()
        start = self.step
        try:
            self.runlog.open(self.total_steps, self.step, self.quiet)
            status = self._train()
            if self.main:
                self._finish(status, start)
        finally:
            self.runlog.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        if status == "done":
            caches.remove(self.task)  # a finished run needs no draw cache (a resume with more steps refills it)
        dist.barrier()
        return {"status": status, "step": self.step, "signal": self.stop_signal, "run_dir": str(self.run_dir),
                "elapsed": self.elapsed()}

    def _open_run_folder(self) -> None:
        make_run_dir(self.run_dir)
        save_config(self.cfg, self.run_dir / run_folder.CONFIG)
        if self.resume:
            truncate_log(self.run_dir / run_folder.LOG, self.step)
        self.runlog.open_tensorboard()

    def _train(self) -> str:
        """Steps until ``total_steps``: "done", or "stopped" when a signal asked to stop (on any rank)."""
        cfg = self.cfg
        it = iterate(self.data, cfg.optim.batch_size, cfg.seed, self.step, self.rank, self.world, cfg.data.num_workers)
        while self.step < self.total_steps:
            epoch, batch = next(it)
            lr = self.sched.apply(list(self.task.optimizers.values()), self.step)
            self.task.gan_on = self.step >= cfg.loss.gan_start * self.total_steps
            early = self.step < cfg.optim.progressive_until * self.total_steps
            self.task.train_crop = cfg.optim.progressive_crop if early else 0
            self.runlog.add(self.train_step(batch, self.step))
            self.step += 1
            self._replan()
            self._check_time_limit()
            if self.main:
                self._after_step(epoch, lr)
            elif self._every(cfg.ckpt_every):
                caches.flush(self.task)
            if dist.any_flag(self.stop_signal is not None, self.device):
                if self.stop_signal is None:
                    self.stop_signal = signal.SIGTERM
                return "stopped"
        return "done"

    def _replan(self) -> None:
        """With a time budget, every REPLAN_EVERY steps: plan the total from the measured time per step."""
        if self.budget is None or self.step % REPLAN_EVERY:
            return
        total = self.budget.plan(self.step, self.elapsed(), self.total_steps) if self.main else 0
        total = dist.broadcast_int(total, self.device)
        if total != self.total_steps:
            self.total_steps = total
            self.sched.set_total(total)
            self.runlog.set_total(total)

    def _check_time_limit(self) -> None:
        """End training early, normally, at 90% of time_limit: the rest is for the final evaluation and saves."""
        limit = self.cfg.time_limit
        if limit and self.step < self.total_steps and dist.any_flag(time.time() - self._t_start > 0.9 * limit,
                                                                    self.device):
            log.warning(f"\nsrpkd: time_limit {limit:g} s: ending training at step {self.step} of {self.total_steps}")
            self.time_limited = self.total_steps
            self.total_steps = self.step

    def _every(self, n: int) -> bool:
        return bool(n) and self.step % n == 0

    def _after_step(self, epoch: int, lr: float) -> None:
        """Rank 0: the log record, and the periodic validation, samples and checkpoints (the last step's: _finish)."""
        cfg = self.cfg
        last = self.step == self.total_steps
        if last or self._every(cfg.log_every):
            self.runlog.write_losses(self.step, epoch, lr, self.elapsed())
        if last:
            return
        if self._every(cfg.eval_every):
            self._validate(epoch)
        if self._every(cfg.sample_every):
            self.write_samples()
        if self._every(cfg.ckpt_every):
            self.save(self.run_dir / run_folder.step_checkpoint(self.step))
            self._rotate()
            self.save(self.run_dir / run_folder.LAST)

    def _finish(self, status: str, start: int) -> None:
        """Rank 0: the final validation and checkpoint; when done, the students (the best by the val split,
        if the run has one) and their held-out figures, and the samples."""
        if status == "done" and self.total_steps > start:
            self._validate(self.step // self.bpe, final=True)
        self.save(self.run_dir / run_folder.LAST)
        if status == "done":
            if self.test is not None:
                self._keep_best()
                self.final_eval = self.test.evaluate()
                self.final_eval.pop("metric", None)
                self.final_eval.update(self.test.perceptual())
                self.runlog.write_validation(self.step, self.step // self.bpe, self.elapsed(), self.final_eval)
            for d in self.task.directions:
                name = run_folder.STUDENT if d.name == "A" else run_folder.STUDENT_B
                save_generator(d.G, self.run_dir / name, run=self.run_dir.name, step=self.step)
            self.write_samples()
            if self.distill:
                self._profile()

    def _profile(self) -> None:
        """Batch-1 latency of the student and its teacher (the run's crop size, device and threads) in
        ``profile_runtimes``, as ``srpkd profile`` writes it: what the report's latency rows show."""
        runtimes = self.cfg.profile_runtimes
        if not runtimes:
            return
        models = {run_folder.PROFILE: (self.G, str(self.run_dir / run_folder.STUDENT))}
        if self.teacher is not None:
            models[run_folder.PROFILE_TEACHER] = (self.teacher.generator, self.cfg.teacher.checkpoint)
        t0 = time.time()
        for name, (model, source) in models.items():
            try:
                info = profile_model(model, size=self.cfg.data.crop_size, runtimes=runtimes, device=self.device,
                                     threads=self.cfg.threads, warmup=PROFILE_WARMUP, runs=PROFILE_RUNS, source=source)
            except SrpkdError as e:  # e.g. a crop size the architecture cannot take at batch 1: the run is still done
                log.warning(f"srpkd: no latency for {name}: {e}")
                continue
            write_json(self.run_dir / name, info)
        log.debug(f"latency of {len(models)} model(s) in {', '.join(runtimes)}: {time.time() - t0:.1f} s")

    def _keep_best(self) -> None:
        """Load the best checkpoint's generators (chosen on the val split) as the run's students."""
        best = self.run_dir / run_folder.BEST
        if self.best is None or self.best["step"] == self.step or not best.is_file():
            return
        restore_generators(best, self.task)
        log.info(f"srpkd: the student is the best checkpoint by {self.best['metric']} (step {self.best['step']})")

    def _install_signals(self) -> dict:
        """SIGINT / SIGTERM: finish the step, save and stop; a second signal stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            if self.main:
                print(f"\nsrpkd: {signal.Signals(signum).name} received: finishing step {self.step + 1} and saving",
                      flush=True)

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
