"""The teachers' caches of a run: filled before training for deterministic data, or K draws on disk.

* Deterministic training items (fixed crops, no random flip): each teacher runs
  once over the training set before the first step (``cache_teacher``,
  :meth:`srpkd.distill.Teacher.build_cache`), in memory.
* Random crops and flips with ``cache_draws`` K: each teacher gets a
  :class:`srpkd.distill.draws.DrawCache` in ``RUN/teacher_cache/<direction>.rank<r>/``,
  filled on first use; a resumed run reopens it and marks the slots its
  earlier steps filled (they follow from the data order). A finished run
  deletes it.
"""
from __future__ import annotations

import time
from pathlib import Path

from .. import run_folder
from ..distill.draws import DrawCache
from .data import SeededDataset, visited_slots
from .tasks import Task


def prepare(task: Task, data: SeededDataset, enabled: bool, deterministic: bool, draws: int, run_dir: Path,
            resume_step: int, batch_size: int, seed: int, rank: int, world: int) -> str:
    """Set up every direction's teacher cache as the run is configured; returns a line for the log."""
    teachers = [d.teacher for d in task.directions if d.teacher is not None]
    if not teachers:
        return "teacher cache: no teacher"
    if not enabled:
        return "teacher cache: off (cache_teacher: false)"
    if draws:
        return _open_draws(task, len(data), draws, run_dir, resume_step, batch_size, seed, rank, world)
    if not deterministic:
        return ("teacher cache: off (the training transform is random; set cache_draws K to keep the "
                "teacher's outputs of K draws per item, or data.fixed_crops / a fixed preprocess and flip: false)")
    t0 = time.time()
    n = len(data)
    for d in task.directions:
        if d.teacher is not None:  # direction B translates the B images
            items = data if d.name == "A" else [{"A": data[(0, i)][d.name]} for i in range(n)]
            d.teacher.build_cache(items, desc=f"teacher cache {d.name}")
    mib = sum(t.cache_mib for t in teachers)
    return f"teacher cache: on ({n} fixed training items, {mib:.0f} MiB, filled in {time.time() - t0:.1f} s)"


def _open_draws(task: Task, n: int, k: int, run_dir: Path, resume_step: int, batch_size: int, seed: int, rank: int,
                world: int) -> str:
    reused = 0
    for d in task.directions:
        if d.teacher is None:
            continue
        cache = DrawCache(run_dir / run_folder.TEACHER_CACHE / f"{d.name}.rank{rank}", k * n)
        if resume_step and cache.reopen():
            slots = visited_slots(n, batch_size, seed, resume_step, rank, world, k)
            cache.mark_filled(slots)
            reused = len(slots)
        d.teacher.use_draws(cache, n)
    again = f", {reused} filled slots reused" if reused else ""
    return (f"teacher cache: {k} draws x {n} items, filled on first use (float16 in "
            f"{run_dir / run_folder.TEACHER_CACHE}{again})")


def flush(task: Task) -> None:
    """Write the draw caches' filled slots to disk (before a checkpoint: see srpkd.distill.draws)."""
    for d in task.directions:
        if d.teacher is not None and d.teacher.draws is not None:
            d.teacher.draws.flush()


def remove(task: Task) -> None:
    """Delete the draw caches' files (a finished run: they only serve a resume, which can refill them)."""
    for d in task.directions:
        if d.teacher is not None and d.teacher.draws is not None:
            d.teacher.draws.remove()
            d.teacher.draws = None
