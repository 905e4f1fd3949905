"""Learning-rate schedules, as a pure function of the step and the planned total.

* ``linear`` (pix2pix/CycleGAN's "linear" policy): constant, then a linear
  decay to zero over the last ``decay_fraction`` of the steps.
* ``cosine``: a linear warm-up over the first ``warmup`` fraction of the steps,
  then a half cosine from the peak to zero (the usual recipe for regression
  on a short budget; see configs/main.yaml for the measured comparison).

``warmup`` applies to ``linear`` too (a linear ramp over that fraction, then
the policy's own factor). ``total`` may change while training (a time budget,
:mod:`srpkd.train.budget`, re-plans it from the measured step time); resuming
needs only the step and the saved total.
"""
from __future__ import annotations

import math

from ..config import SCHEDULES


class Schedule:
    def __init__(self, base_lr: float, total: int, decay_fraction: float = 0.5, policy: str = "linear",
                 warmup: float = 0.0) -> None:
        if policy not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {policy!r}; choose one of: {', '.join(SCHEDULES)}")
        self.base_lr, self.policy, self.decay_fraction, self.warmup = base_lr, policy, decay_fraction, warmup
        self.set_total(total)

    def set_total(self, total: int) -> None:
        self.total = max(1, int(total))
        self.const = round(self.total * (1.0 - self.decay_fraction))
        self.warmup_steps = round(self.total * self.warmup)

    def factor(self, step: int) -> float:
        w = self.warmup_steps
        ramp = min(1.0, (step + 1) / w) if w else 1.0
        if self.policy == "cosine":
            if step < w:
                return ramp
            p = min(1.0, (step - w) / max(1, self.total - w))
            return 0.5 * (1.0 + math.cos(math.pi * p))
        if step < self.const:
            return ramp
        return ramp * max(0.0, 1.0 - (step + 1 - self.const) / (self.total - self.const + 1))

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def apply(self, optimizers, step: int) -> float:
        lr = self.lr(step)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"policy": self.policy, "base_lr": self.base_lr, "total": self.total, "warmup": self.warmup,
                "decay_fraction": self.decay_fraction, "const_steps": self.const}
