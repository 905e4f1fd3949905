"""What the loop measures on fixed held-out images: validation metrics (for the best checkpoint) and the sample grid.

* with a teacher: student-to-teacher L1 and PSNR (the metric the best checkpoint is chosen by), and the
  same figures for a copy of the input (the baseline a student must beat: ``copy_*``);
* paired task: L1 and PSNR to the ground truth B;
* unpaired, both directions: cycle L1 of A -> B -> A.

Always in float32, also when the run trains with ``amp: bf16``: the student ships
as a float32 network and its figures are against the float32 teacher.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..checkpoint import atomic_path
from ..metrics.image import psnr
from .tasks import Task

METRICS = ("l1_to_teacher", "l1_to_target", "cycle_l1")  # the best checkpoint's metric: first present


class Validation:
    """Fixed held-out images (``batch``, on the CPU) and the task whose networks are measured on them.

    Metric names start with ``prefix``: ``val/`` for the split that chooses the best checkpoint,
    ``test/`` for the held-out split a run's figures are reported on when the two differ.
    """

    def __init__(self, task: Task, batch: dict, prefix: str = "val/") -> None:
        self.task = task
        self.batch = batch
        self.prefix = prefix
        self._teacher_images: torch.Tensor | None = None
        self._copy: dict[str, float] | None = None

    @torch.no_grad()
    def translate(self, G: nn.Module, x: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        was = G.training
        G.eval()
        outs = []
        try:
            for i in range(0, len(x), chunk):
                outs.append(G(self.task.to_device(x[i : i + chunk])).float().cpu())
        finally:
            G.train(was)
        return torch.cat(outs)

    def teacher_images(self) -> torch.Tensor | None:
        """The student's teacher on the held-out inputs (computed once)."""
        teacher = self.task.student.teacher
        if teacher is None:
            return None
        if self._teacher_images is None:
            xa = self.batch["A"]
            self._teacher_images = torch.cat([teacher.compute(xa[i : i + 8], amp=False).out.cpu()
                                              for i in range(0, len(xa), 8)])
        return self._teacher_images

    def copy_baseline(self) -> dict[str, float]:
        """L1 and PSNR of a copy of the input to the teacher's images: fixed, so measured once."""
        if self._copy is None:
            xa, t = self.batch["A"], self.teacher_images()
            self._copy = {"copy_l1_to_teacher": float((xa - t).abs().mean()),
                          "copy_psnr_to_teacher": float(psnr(xa, t))}
        return self._copy

    def _targets(self) -> torch.Tensor | None:
        return self.batch["B"] if self.task.has_targets and "B" in self.batch else None

    def evaluate(self) -> dict[str, float]:
        """``prefix``-named metrics, plus ``metric``: the value of the first of :data:`METRICS` present."""
        xa = self.batch["A"]
        s = self.translate(self.task.student.G, xa)
        out: dict[str, float] = {}
        t = self.teacher_images()
        if t is not None:
            out["l1_to_teacher"] = float((s - t).abs().mean())
            out["psnr_to_teacher"] = float(psnr(s, t))
            out.update(self.copy_baseline())
        y = self._targets()
        if y is not None:
            out["l1_to_target"] = float((s - y).abs().mean())
            out["psnr_to_target"] = float(psnr(s, y))
        if len(self.task.directions) > 1:
            rec = self.translate(self.task.directions[1].G, s)
            out["cycle_l1"] = float((rec - xa).abs().mean())
        metric = next((k for k in METRICS if k in out), None)
        named = {self.prefix + k: v for k, v in out.items()}
        if metric is not None:
            named["metric"] = out[metric]
        return named

    def metric_name(self, ev: dict[str, float]) -> str:
        """The name (with prefix) of the metric ``evaluate`` put in ``ev["metric"]``."""
        return next(self.prefix + k for k in METRICS if self.prefix + k in ev)

    def samples(self, n: int = 4) -> torch.Tensor:
        """Grid rows: input | teacher | student | target, on the first ``n`` held-out images; in [0, 1]."""
        xa = self.batch["A"][:n]
        cols = [xa]
        t = self.teacher_images()
        if t is not None:
            cols.append(t[:n])
        cols.append(self.translate(self.task.student.G, xa))
        y = self._targets()
        if y is not None:
            cols.append(y[:n])
        rows = [torch.cat([c[i] for c in cols], dim=2) for i in range(len(xa))]
        grid = torch.cat(rows, dim=1)
        return ((grid.clamp(-1, 1) + 1) / 2).cpu()


def save_grid(grid: torch.Tensor, path: Path) -> None:
    """A (3, H, W) image in [0, 1] as a PNG, written atomically."""
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
