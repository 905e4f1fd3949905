"""Learning-rate schedule: constant, then linear decay to zero (pix2pix/CycleGAN's "linear" policy)."""
from __future__ import annotations


class LinearDecay:
    """``factor(s)`` = 1 for the first ``(1 - decay_fraction) * total`` steps, then falls linearly.

    It is a pure function of the step, so resuming needs only the step; the
    state is saved anyway so that a checkpoint records the schedule it used.
    """

    def __init__(self, base_lr: float, total: int, decay_fraction: float) -> None:
        self.base_lr = base_lr
        self.total = total
        self.decay_fraction = decay_fraction
        self.const = round(total * (1.0 - decay_fraction))

    def factor(self, step: int) -> float:
        if step < self.const:
            return 1.0
        return max(0.0, 1.0 - (step + 1 - self.const) / (self.total - self.const + 1))

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def apply(self, optimizers, step: int) -> float:
        lr = self.lr(step)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"policy": "linear", "base_lr": self.base_lr, "total": self.total,
                "decay_fraction": self.decay_fraction, "const_steps": self.const}
